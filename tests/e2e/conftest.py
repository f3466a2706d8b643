"""Fixtures shared by the end-to-end tests of every kind."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from miniopy_async import Minio

from devstack.services import ServiceProcess
from devstack.stack import Stack

SHORT_TTL_S = 3

PASSWORD = "correct horse battery staple"

PlansEdit = Callable[[dict[str, Any]], None]


@contextlib.contextmanager
def gateway_with_plans(
    stack: Stack,
    directory: Path,
    edit: PlansEdit,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[ServiceProcess]:
    """Another gateway replica serving the stack's plans as changed by ``edit`` (in place)."""
    with stack.gateway_with_plans(directory, edit, extra_env) as gateway:
        yield gateway


async def new_resource(http: httpx.AsyncClient, path: str, **request: Any) -> dict[str, Any]:
    """``POST /<path>/new`` (``request``: httpx arguments such as ``json``); the 201 answer."""
    response = await http.post(f"/{path}/new", **request)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def s3_client(
    bucket: dict[str, Any], session: aiohttp.ClientSession, *, secret: str | None = None
) -> Minio:
    """An S3 client with a storage resource's own credentials (``secret``: a wrong one)."""
    creds = bucket["credentials"]
    return Minio(
        creds["endpoint"].removeprefix("http://"),
        access_key=creds["access_key"],
        secret_key=secret or creds["secret_key"],
        secure=False,
        region=creds["region"],
        session=session,
    )


def one_service_app(directory: Path, page: str) -> Path:
    """An app directory for ``spinup deploy`` or ``deploy_stack``: one web service from
    ``spinup/base:bookworm`` that serves ``page`` on its public URL."""
    (directory / "web").mkdir(parents=True)
    (directory / "web" / "Dockerfile").write_text(
        "FROM spinup/base:bookworm\n"
        f"RUN echo {page} > /srv/index.html\n"
        'CMD ["python3", "-m", "http.server", "8080", "--directory", "/srv"]\n'
    )
    (directory / "spinup.yaml").write_text("services:\n  web: {build: web.tar, port: 8080}\n")
    return directory


def new_email(label: str = "user") -> str:
    """An address no account has yet."""
    return f"{label}-{uuid.uuid4().hex[:12]}@example.com"


async def register(http: httpx.AsyncClient, email: str) -> str:
    """Register ``email`` with ``PASSWORD``; the new account's session token."""
    response = await http.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def anonymous_tier(plans: dict[str, Any]) -> dict[str, Any]:
    """The anonymous tier's section of a plans document."""
    tier: dict[str, Any] = plans["tiers"][plans["anonymous_tier"]]
    return tier


@pytest.fixture(scope="session")
def short_ttl_gateway_url(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second gateway whose anonymous tier lives ``SHORT_TTL_S`` seconds, for expiry tests."""

    def short_ttl(plans: dict[str, Any]) -> None:
        anonymous_tier(plans)["ttl_seconds"] = SHORT_TTL_S
        # Deleted at expiry, as these tests check; the export grace has its own (test_export).
        anonymous_tier(plans)["lifetime"]["export_grace_seconds"] = 0

    with gateway_with_plans(stack, tmp_path_factory.mktemp("short-ttl"), short_ttl) as gateway:
        yield str(gateway.url)


@pytest.fixture(scope="session")
async def short_ttl_http(short_ttl_gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the short-TTL gateway: what it creates expires within seconds."""
    async with httpx.AsyncClient(base_url=short_ttl_gateway_url, timeout=60) as client:
        yield client
