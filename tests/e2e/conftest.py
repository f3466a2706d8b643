"""Fixtures shared by the end-to-end tests of every kind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from devstack.procs import free_ports
from devstack.stack import Stack

SHORT_TTL_S = 3


@pytest.fixture(scope="session")
def short_ttl_gateway_url(
    stack: Stack, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A second gateway whose anonymous tier lives ``SHORT_TTL_S`` seconds, for expiry tests."""
    plans = Path(env["SPINUP_PLANS_FILE"]).read_text()
    short_plans = tmp_path_factory.mktemp("short-ttl") / "plans.yaml"
    short_plans.write_text(plans.replace("ttl_seconds: 86400", f"ttl_seconds: {SHORT_TTL_S}", 1))
    gateway = stack.start_extra_gateway(free_ports(1)[0], {"SPINUP_PLANS_FILE": str(short_plans)})
    try:
        yield str(gateway.url)
    finally:
        gateway.stop()


@pytest.fixture(scope="session")
async def short_ttl_http(short_ttl_gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the short-TTL gateway: what it creates expires within seconds."""
    async with httpx.AsyncClient(base_url=short_ttl_gateway_url, timeout=60) as client:
        yield client
