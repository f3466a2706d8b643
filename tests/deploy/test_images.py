"""The service images, built on the real engine and run against a real test stack.

The devstack's own pg-provisioner is stopped first, so a /db/new that succeeds was answered by the
containerised worker (otherwise the gateway answers 503 worker_unavailable). Both containers use
the host's network, where the test stack's servers listen (on 127.0.0.1 and the tenant address).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from devstack.engine import SCOPE_LABEL, docker_host, scope_label
from devstack.images import build_images
from devstack.stack import Stack

# The first build of a session makes the wheelhouse and the images (minutes on a cold machine);
# after that the engine's layer cache makes it seconds.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

_DOCKER_ENV = {**os.environ, "DOCKER_HOST": docker_host()}


def _docker(*args: str) -> str:
    done = subprocess.run(  # noqa: S603  (our own arguments)
        ["docker", *args],  # noqa: S607  (the docker CLI from PATH)
        capture_output=True,
        text=True,
        env=_DOCKER_ENV,
        check=False,
    )
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def _logs(container: str) -> str:
    # A service logs to stderr: both streams, as a person reading `docker logs` would see them.
    done = subprocess.run(  # noqa: S603  (our own arguments)
        ["docker", "logs", "--tail", "40", container],  # noqa: S607  (the docker CLI from PATH)
        capture_output=True,
        text=True,
        env=_DOCKER_ENV,
        check=False,
    )
    return done.stdout + done.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def images(stack: Stack) -> dict[str, str]:
    # Once per session; a rebuild with nothing changed is the engine's layer cache (seconds).
    built = build_images(["gateway", "pg-provisioner"], root=stack.profile.root)
    return dict(zip(["gateway", "pg-provisioner"], built, strict=True))


def _run(stack: Stack, image: str, service: str, extra: dict[str, str]) -> str:
    env = {
        key: value
        for key, value in stack.process_env(service, extra).items()
        # A directory of the host's: the container keeps its metrics files in its own /tmp.
        if key.startswith("SPINUP_") and key != "SPINUP_METRICS_DIR"
    }
    # The platform's own services, not tenant code: the host's network, which an engine that
    # remaps user namespaces (ADR 0018) allows only outside the remapping.
    args = ["run", "--detach", "--network", "host", "--userns", "host", "--health-interval", "1s"]
    args += ["--label", f"{SCOPE_LABEL}={scope_label(stack.profile)}"]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    return _docker(*args, image)


def _wait_healthy(container: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    state: dict[str, object] = {}
    while time.monotonic() < deadline:
        state = json.loads(_docker("inspect", "--format", "{{json .State}}", container))
        health = state.get("Health")
        if isinstance(health, dict) and health.get("Status") == "healthy":
            return
        assert state.get("Running"), f"container exited: {_logs(container)}"
        time.sleep(0.5)
    pytest.fail(f"{container} not healthy in {timeout} s: {state}\n{_logs(container)}")


@pytest.fixture
def containerised(stack: Stack, images: dict[str, str]) -> Iterator[str]:
    """The gateway's URL, with the gateway and pg-provisioner running as containers."""
    stack.stop_service("pg-provisioner")
    containers: list[str] = []
    try:
        containers.append(_run(stack, images["pg-provisioner"], "pg-provisioner", {}))
        port = _free_port()
        gateway_env = {"SPINUP_HTTP_PORT": str(port), "SPINUP_PLANS_FILE": "/app/plans.yaml"}
        containers.append(_run(stack, images["gateway"], "gateway", gateway_env))
        for container in containers:
            _wait_healthy(container)
        yield f"http://127.0.0.1:{port}"
    finally:
        for container in containers:
            _docker("rm", "--force", container)
        stack.start_service("pg-provisioner")


def test_images_run_as_a_user_that_is_not_root(images: dict[str, str]) -> None:
    for image in images.values():
        assert _docker("image", "inspect", "--format", "{{.Config.User}}", image) == "10001:10001"
        health = _docker("image", "inspect", "--format", "{{json .Config.Healthcheck}}", image)
        assert "shared.observability.health" in health


async def test_a_database_made_through_the_containerised_gateway_and_worker(
    containerised: str,
) -> None:
    async with httpx.AsyncClient(base_url=containerised, timeout=60) as client:
        assert (await client.get("/readyz")).status_code == 200
        response = await client.post("/db/new")
        assert response.status_code == 201, response.text
        body = response.json()
        conn = await asyncpg.connect(body["connection_url"])
        try:
            assert (
                await conn.fetchval("select current_database()") == body["credentials"]["database"]
            )
        finally:
            await conn.close()
        gone = await client.delete(f"/resources/{body['token']}")
        assert gone.status_code in {200, 204}, gone.text
