"""Stacks end to end, over HTTP, on the real engine: the example app deployed with one call uses
its database and cache through its public URL; redeploy, stop and start keep the data; delete and
expiry leave no container, network, image or backing database; a broken build ends failed with
the error in the logs; a bad manifest is refused before anything is made.

Isolation between two stacks' networks is the stack-deployer's integration tests' to prove.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import tarfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from devstack.engine import docker_host
from devstack.stack import Stack

pytestmark = pytest.mark.e2e
REPO_ROOT = Path(__file__).resolve().parents[2]
NOTES_APP = REPO_ROOT / "examples" / "notes-app"
# Building the example from the local base image takes seconds; a loaded machine, longer.
DEPLOY_TIMEOUT_S = 240.0


def context_tar(directory: Path) -> bytes:
    """A build context: every file of ``directory`` at the tarball's root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(directory.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


def notes_upload() -> dict[str, tuple[str, bytes]]:
    """The example app as ``POST /stacks/new`` takes it."""
    return {
        "spinup.yaml": ("spinup.yaml", (NOTES_APP / "spinup.yaml").read_bytes()),
        "web.tar": ("web.tar", context_tar(NOTES_APP / "web")),
        "worker.tar": ("worker.tar", context_tar(NOTES_APP / "worker")),
    }


def docker(*args: str) -> str:
    """The docker CLI against the engine the stack-deployer uses."""
    done = subprocess.run(  # noqa: S603  (arguments written in this file)
        ["docker", *args],  # noqa: S607
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_HOST": docker_host()},
    )
    return done.stdout


def engine_objects(stack_id: str) -> dict[str, list[str]]:
    """Every container, network and image labelled with the stack's id."""
    label = f"label=io.spinup.stack={stack_id}"
    return {
        "containers": docker("ps", "-aq", "--filter", label).split(),
        "networks": docker("network", "ls", "-q", "--filter", label).split(),
        "images": docker("images", "-q", "--filter", label).split(),
    }


async def wait_for_status(
    http: httpx.AsyncClient, token: str, wanted: set[str], within: float = DEPLOY_TIMEOUT_S
) -> dict[str, Any]:
    """Poll ``GET /resources/{token}`` until the stack's deploy status is one of ``wanted``."""
    deadline = time.monotonic() + within
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await http.get(f"/resources/{token}")
        assert response.status_code == 200, response.text
        body = response.json()
        if body["stack"]["status"] in wanted:
            return body
        await asyncio.sleep(1)
    pytest.fail(f"the stack did not reach {wanted} in {within} s: {body}")


async def deploy(http: httpx.AsyncClient, files: dict[str, tuple[str, bytes]]) -> dict[str, Any]:
    response = await http.post("/stacks/new", files=files)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def app_get(url: str, path: str = "") -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(url + path)


async def sse_lines(http: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    """Every stored log line of the stack (the stream ends after them without ``follow``)."""
    async with http.stream("GET", f"/resources/{token}/logs") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [
            json.loads(raw.removeprefix("data:").strip())
            async for raw in response.aiter_lines()
            if raw.startswith("data:")
        ]


@pytest.fixture(scope="module")
async def notes(stack: Stack) -> AsyncIterator[dict[str, Any]]:
    """The example app, deployed and running (deleted at the end of the module)."""
    async with httpx.AsyncClient(base_url=str(stack.gateway_url), timeout=120) as http:
        created = await deploy(http, notes_upload())
        running = await wait_for_status(http, created["token"], {"running", "failed"})
        details = running["stack"]
        assert details["status"] == "running", (details["failure"], details["logs_tail"])
        yield created
        await http.delete(f"/resources/{created['token']}")


# -- refused before anything is made -------------------------------------------------------------


async def test_an_invalid_manifest_is_refused_naming_the_field_and_the_line(
    http: httpx.AsyncClient, platform_db: asyncpg.Pool
) -> None:
    before = await platform_db.fetchval("SELECT count(*) FROM resources")
    manifest = b"services:\n  web:\n    build: web.tar\n    port: eighty\n"
    response = await http.post(
        "/stacks/new",
        files={"spinup.yaml": ("spinup.yaml", manifest), "web.tar": ("web.tar", b"x")},
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_manifest"
    assert "services.web.port" in body["message"]
    assert "line 4" in body["message"]
    assert await platform_db.fetchval("SELECT count(*) FROM resources") == before


async def test_a_build_naming_a_file_not_uploaded_is_refused(http: httpx.AsyncClient) -> None:
    manifest = b"services:\n  web:\n    build: web.tar\n"
    response = await http.post("/stacks/new", files={"spinup.yaml": ("spinup.yaml", manifest)})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_manifest"
    assert "services.web.build" in response.json()["message"]


async def test_a_stack_needs_a_multipart_upload(http: httpx.AsyncClient) -> None:
    response = await http.post("/stacks/new", json={"services": {}})
    assert response.status_code == 400, response.text
    assert "multipart/form-data" in response.json()["message"]


async def test_logs_of_another_kind_are_a_clear_400(http: httpx.AsyncClient) -> None:
    cache = (await http.post("/cache/new")).json()
    response = await http.get(f"/resources/{cache['token']}/logs")
    assert response.status_code == 400, response.text
    assert "only stacks" in response.json()["message"]
    await http.delete(f"/resources/{cache['token']}")


async def test_an_unknown_app_url_is_a_json_404(stack: Stack) -> None:
    response = await app_get(f"{stack.content_url}/apps/00000000-0000-0000-0000-000000000000/web/")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


# -- the example app ---------------------------------------------------------------------------


async def test_the_example_app_serves_its_public_url_and_uses_its_database(
    http: httpx.AsyncClient, notes: dict[str, Any]
) -> None:
    assert notes["status"] == "building"
    assert notes["status_url"].endswith(f"/resources/{notes['token']}")
    assert set(notes["resources"]) == {"db", "cache"}
    web = notes["urls"]["web"]
    assert web.endswith(f"/apps/{notes['id']}/web/")
    assert "worker" not in notes["urls"]  # no port: nothing to serve

    home = await app_get(web)
    assert home.status_code == 200, home.text
    assert home.json()["greeting"] == "Notes on Spinup"
    assert home.json()["prefix"] == f"/apps/{notes['id']}/web"
    async with httpx.AsyncClient(timeout=30) as client:
        made = await client.post(web + "notes", json={"body": "written through the proxy"})
    assert made.status_code == 201, made.text
    listed = (await app_get(web, "notes")).json()
    assert {"id": made.json()["id"], "body": "written through the proxy"} in listed["notes"]
    assert listed["hits"] >= 3  # every request counted in Redis

    # The row is really in the stack's own database, seen with its backing credentials.
    shown = (await http.get(f"/resources/{notes['token']}")).json()
    db = shown["stack"]["resources"]["db"]
    assert db["kind"] == "postgres"
    assert db["status"] == "active"
    conn = await asyncpg.connect(db["connection_url"])
    try:
        body = await conn.fetchval("SELECT body FROM notes WHERE id = $1", made.json()["id"])
    finally:
        await conn.close()
    assert body == "written through the proxy"
    services = shown["stack"]["services"]
    assert services["web"]["status"] == "running"
    assert services["web"]["url"] == web
    assert services["worker"]["status"] == "running"


async def test_the_app_url_without_its_trailing_slash_redirects(
    notes: dict[str, Any],
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(notes["urls"]["web"].rstrip("/"))
    assert response.status_code == 308
    assert response.headers["location"].endswith(f"/apps/{notes['id']}/web/")


async def test_the_backing_resources_are_children_of_the_stack(
    http: httpx.AsyncClient, notes: dict[str, Any], platform_db: asyncpg.Pool
) -> None:
    rows = await platform_db.fetch(
        "SELECT kind, name, expires_at FROM resources WHERE parent_id = $1 ORDER BY name",
        uuid.UUID(notes["id"]),
    )
    assert [(row["kind"], row["name"]) for row in rows] == [("redis", "cache"), ("postgres", "db")]
    stack_expiry = await platform_db.fetchval(
        "SELECT expires_at FROM resources WHERE id = $1", uuid.UUID(notes["id"])
    )
    assert all(row["expires_at"] == stack_expiry for row in rows)


async def test_logs_stream_the_build_and_the_containers(
    http: httpx.AsyncClient, notes: dict[str, Any]
) -> None:
    lines = await sse_lines(http, notes["token"])
    sources = {line["source"] for line in lines}
    assert "build:web" in sources
    assert any("notes web listening" in line["line"] for line in lines)


async def test_stop_and_start_keep_the_data(http: httpx.AsyncClient, notes: dict[str, Any]) -> None:
    web = notes["urls"]["web"]
    async with httpx.AsyncClient(timeout=30) as client:
        made = (await client.post(web + "notes", json={"body": "before stop"})).json()
    stopped = await http.post(f"/stacks/{notes['token']}/stop")
    assert stopped.status_code == 200, stopped.text
    await wait_for_status(http, notes["token"], {"stopped"}, within=60)
    down = await app_get(web)
    assert down.status_code == 503
    assert down.json()["error"] == "app_not_running"

    started = await http.post(f"/stacks/{notes['token']}/start")
    assert started.status_code == 200, started.text
    await wait_for_status(http, notes["token"], {"running"})
    listed = (await app_get(web, "notes")).json()
    assert made in listed["notes"]


async def test_redeploy_replaces_the_containers_and_keeps_the_data(
    http: httpx.AsyncClient, notes: dict[str, Any]
) -> None:
    web = notes["urls"]["web"]
    async with httpx.AsyncClient(timeout=30) as client:
        made = (await client.post(web + "notes", json={"body": "before redeploy"})).json()
    before = set(engine_objects(str(notes["id"]))["containers"])
    first = (await http.get(f"/resources/{notes['token']}")).json()["stack"]["revision"]

    redeployed = await http.post(f"/stacks/{notes['token']}/redeploy", files=notes_upload())
    assert redeployed.status_code == 200, redeployed.text
    shown = await wait_for_status(http, notes["token"], {"running", "failed"})
    assert shown["stack"]["status"] == "running", shown["stack"]
    assert shown["stack"]["revision"] > first
    after = set(engine_objects(str(notes["id"]))["containers"])
    assert after
    assert not before & after  # new containers, the old ones removed
    listed = (await app_get(web, "notes")).json()
    assert made in listed["notes"]


async def test_an_unknown_action_is_refused(http: httpx.AsyncClient, notes: dict[str, Any]) -> None:
    response = await http.post(f"/stacks/{notes['token']}/explode")
    assert response.status_code == 404
    assert "stop, start, restart, redeploy" in response.json()["message"]


async def test_one_service_deploys_from_a_dockerfile_and_serves_through_the_proxy(
    http: httpx.AsyncClient,
) -> None:
    dockerfile = (
        b"FROM spinup/base:bookworm\nWORKDIR /srv\n"
        b"RUN echo served-by-the-container > index.html\n"
        b'CMD ["python3", "-m", "http.server", "8000"]\n'
    )
    response = await http.post(
        "/deploy/new",
        files={"Dockerfile": ("Dockerfile", dockerfile)},
        data={"port": "8000", "env": "MODE=test"},
    )
    assert response.status_code == 202, response.text
    created = response.json()
    shown = await wait_for_status(http, created["token"], {"running", "failed"})
    details = shown["stack"]
    assert details["status"] == "running", (details["failure"], details["logs_tail"])
    page = await app_get(created["urls"]["app"])
    assert page.status_code == 200, page.text
    assert "served-by-the-container" in page.text
    assert (await http.delete(f"/resources/{created['token']}")).status_code == 200
    assert engine_objects(created["id"]) == {"containers": [], "networks": [], "images": []}


# -- failure, delete, expiry -------------------------------------------------------------------


async def test_a_broken_dockerfile_ends_failed_with_the_error_in_the_logs(
    http: httpx.AsyncClient,
) -> None:
    dockerfile = b"FROM spinup/base:bookworm\nRUN echo about-to-fail && exit 42\n"
    response = await http.post("/deploy/new", files={"Dockerfile": ("Dockerfile", dockerfile)})
    assert response.status_code == 202, response.text
    created = response.json()
    failed = await wait_for_status(http, created["token"], {"failed", "running"})
    assert failed["stack"]["status"] == "failed"
    assert failed["stack"]["failed_service"] == "app"
    assert failed["stack"]["logs_tail"]
    lines = await sse_lines(http, created["token"])
    assert any("about-to-fail" in line["line"] for line in lines)
    assert engine_objects(created["id"])["containers"] == []
    await http.delete(f"/resources/{created['token']}")


async def test_delete_removes_every_container_network_image_and_backing_database(
    http: httpx.AsyncClient, customer_admin: asyncpg.Connection, platform_db: asyncpg.Pool
) -> None:
    dockerfile = b'FROM spinup/base:bookworm\nCMD ["python3", "-m", "http.server", "8000"]\n'
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    manifest = (
        b"services:\n  web: {build: web.tar, port: 8000}\nresources:\n  db: {type: postgres}\n"
    )
    created = await deploy(
        http,
        {"spinup.yaml": ("spinup.yaml", manifest), "web.tar": ("web.tar", buffer.getvalue())},
    )
    shown = await wait_for_status(http, created["token"], {"running", "failed"})
    assert shown["stack"]["status"] == "running", shown["stack"]["logs_tail"]
    stack_id = created["id"]
    assert engine_objects(stack_id)["containers"]
    db_url = created["resources"]["db"]["connection_url"]
    database = db_url.rsplit("/", 1)[1].split("?")[0]

    deleted = await http.delete(f"/resources/{created['token']}")
    assert deleted.status_code == 200, deleted.text
    assert engine_objects(stack_id) == {"containers": [], "networks": [], "images": []}
    gone = await customer_admin.fetchval(
        "SELECT count(*) FROM pg_database WHERE datname = $1", database
    )
    assert gone == 0
    assert (await http.get(f"/resources/{created['token']}")).status_code == 404
    shown_db = await platform_db.fetchval(
        "SELECT status FROM resources WHERE id = $1", uuid.UUID(created["resources"]["db"]["id"])
    )
    assert shown_db == "deleted"


async def test_expiry_tears_a_stack_down(short_ttl_http: httpx.AsyncClient) -> None:
    created = await deploy(short_ttl_http, notes_upload())
    stack_id = created["id"]
    deadline = time.monotonic() + DEPLOY_TIMEOUT_S
    while time.monotonic() < deadline:
        shown = await short_ttl_http.get(f"/resources/{created['token']}")
        if shown.status_code == 410 and engine_objects(stack_id)["containers"] == []:
            break
        await asyncio.sleep(1)
    else:
        pytest.fail("the expired stack was not torn down")
    assert shown.json()["error"] == "resource_gone"
    assert engine_objects(stack_id) == {"containers": [], "networks": [], "images": []}
