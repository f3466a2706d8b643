"""stack-deployer against the real engine: the running worker, driven over NATS like the gateway.

Each test uploads a tiny build context (a Dockerfile ``FROM spinup/base:bookworm`` serving
``python3 -m http.server``), provisions a stack, and reads the stack's events from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import tarfile
import time
import uuid
from collections.abc import AsyncIterator

import aiodocker
import httpx
import msgspec
import nats
import pytest
from aiodocker.exceptions import DockerError
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription

from devstack.stack import Stack
from shared.bus import Bus, ensure_stack_stores
from shared.contracts.commands import (
    ControlStack,
    ProvisionResource,
    StackAction,
)
from shared.contracts.kinds import RedisLimits, ResourceKind, StackLimits
from shared.contracts.stacks import MANIFEST_NAME, StackLogLine, backing_resource_id
from shared.contracts.subjects import (
    ENDPOINTS,
    STACK_CONTROL,
    STACK_UPLOADS_BUCKET,
    stack_logs_subject,
)
from shared.eventlog.store import EventStore
from shared.naming import resource_stream
from shared.stacks.state import StackStatus, StackView
from shared.testing.factories import deprovision_command, provision_command
from stack_deployer.engine import REGISTRY_HINT

# Builds on a busy 2-core machine, and the first test also waits for the whole stack to start.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LIMITS = StackLimits(services=3, memory_mb=128, cpu_millis=250, pids=64, upload_mb=10)
ENDPOINT = ENDPOINTS[ResourceKind.STACK]

WEB_DOCKERFILE = b"""FROM spinup/base:bookworm
WORKDIR /srv
COPY index.html /srv/index.html
CMD ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0"]
"""

TWO_SERVICES = b"""services:
  web:
    build: web.tar
    port: 8080
    env: {GREETING: hello}
  other:
    image: spinup/base:bookworm
    command: ["python3", "-m", "http.server", "9000"]
"""


def tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def web_context(page: bytes = b"hello from web\n", dockerfile: bytes = WEB_DOCKERFILE) -> bytes:
    return tarball({"Dockerfile": dockerfile, "index.html": page})


@pytest.fixture
async def docker() -> AsyncIterator[aiodocker.Docker]:
    client = aiodocker.Docker()
    yield client
    await client.close()


async def upload(bus: Bus, stack_id: uuid.UUID, manifest: bytes, files: dict[str, bytes]) -> None:
    js = bus.nc.jetstream()
    await ensure_stack_stores(js)
    store = await js.object_store(STACK_UPLOADS_BUCKET)
    await store.put(f"{stack_id}/{MANIFEST_NAME}", manifest)
    for name, data in files.items():
        await store.put(f"{stack_id}/{name}", data)


async def provision(bus: Bus, stack_id: uuid.UUID) -> None:
    command = ProvisionResource(
        command_id=uuid.uuid4(),
        correlation_id="test-stack",
        deadline=time.time() + ENDPOINT.provision.timeout,
        resource_id=stack_id,
        kind=ResourceKind.STACK,
        tier="anonymous",
        limits=LIMITS,
        token_hash=uuid.uuid4().hex * 2,
        fingerprint="test",
    )
    reply = await bus.request(ENDPOINT.provision, command)
    assert reply.resource_id == stack_id


async def control(bus: Bus, stack_id: uuid.UUID, action: StackAction) -> str:
    command = ControlStack(
        command_id=uuid.uuid4(),
        correlation_id="test-stack",
        deadline=time.time() + STACK_CONTROL.timeout,
        resource_id=stack_id,
        action=action,
    )
    reply = await bus.request(STACK_CONTROL, command)
    return reply.status


async def delete(bus: Bus, stack_id: uuid.UUID) -> None:
    command = deprovision_command(
        stack_id, deadline_in=ENDPOINT.deprovision.timeout, correlation_id="test-stack"
    )
    await bus.request(ENDPOINT.deprovision, command)


async def view_of(store: EventStore, stack_id: uuid.UUID) -> StackView:
    return StackView.fold(e.event for e in await store.load(resource_stream(stack_id)))


async def settled(
    store: EventStore, stack_id: uuid.UUID, *, revision: int = 1, within_s: float = 90.0
) -> StackView:
    """The view once the given revision is running, failed or stopped."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        view = await view_of(store, stack_id)
        if view.revision >= revision and view.status in {
            StackStatus.RUNNING,
            StackStatus.FAILED,
            StackStatus.STOPPED,
        }:
            return view
        await asyncio.sleep(0.3)
    pytest.fail(f"stack {stack_id} did not settle: {await view_of(store, stack_id)}")


async def stack_containers(
    docker: aiodocker.Docker, stack_id: uuid.UUID, *, running_only: bool = False
) -> list[dict[str, object]]:
    filters = {"label": [f"io.spinup.stack={stack_id}"]}
    found = await docker.containers.list(all=not running_only, filters=filters)
    return [container._container for container in found]


async def deploy(bus: Bus, store: EventStore, manifest: bytes, files: dict[str, bytes]):
    stack_id = uuid.uuid4()
    await upload(bus, stack_id, manifest, files)
    await provision(bus, stack_id)
    return stack_id, await settled(store, stack_id)


async def test_a_stack_builds_runs_hardened_and_answers_on_its_published_port(
    bus: Bus, store: EventStore, docker: aiodocker.Docker
) -> None:
    stack_id, view = await deploy(bus, store, TWO_SERVICES, {"web.tar": web_context()})
    try:
        assert view.status is StackStatus.RUNNING, view
        web = view.services["web"]
        assert web.host == "127.0.0.1"
        assert web.port
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{web.port}/index.html")
        assert answer.text == "hello from web\n"
        assert view.services["other"].port is None

        container = await docker.containers.get(web.container or "")
        host = container._container["HostConfig"]
        assert host["Memory"] == 128 * 1024 * 1024
        assert host["NanoCpus"] == 250_000_000
        assert host["PidsLimit"] == 64
        assert host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"] == ["no-new-privileges"]
        bindings = container._container["NetworkSettings"]["Ports"]["8080/tcp"]
        assert {binding["HostIp"] for binding in bindings} == {"127.0.0.1"}
        assert "GREETING=hello" in container._container["Config"]["Env"]
        # The HTTP port as PORT; an init as PID 1 that passes SIGTERM on (the app is not PID 1).
        assert "PORT=8080" in container._container["Config"]["Env"]
        assert host["Init"] is True
        code = await exec_python(
            container, "assert open('/proc/1/comm').read().strip() != 'python3'"
        )
        assert code == 0

        # The other service reaches web by its alias on the stack's own network.
        other = await docker.containers.get(view.services["other"].container or "")
        code = await exec_python(other, "urllib.request.urlopen('http://web:8080/index.html')")
        assert code == 0
    finally:
        await delete(bus, stack_id)
    assert await stack_containers(docker, stack_id) == []


async def exec_python(container: aiodocker.containers.DockerContainer, statement: str) -> int:
    """Run a python3 statement in the container; its exit code (0: it worked)."""
    script = f"import urllib.request, socket; socket.setdefaulttimeout(3); {statement}"
    execution = await container.exec(["python3", "-c", script])
    async with execution.start(detach=False) as stream:
        while await stream.read_out() is not None:
            pass
    inspected = await execution.inspect()
    return int(inspected["ExitCode"])


async def test_two_stacks_cannot_reach_each_other_by_name_or_ip(
    bus: Bus, store: EventStore, docker: aiodocker.Docker
) -> None:
    manifest = b"services:\n  web: {build: web.tar, port: 8080}\n"
    first, first_view = await deploy(bus, store, manifest, {"web.tar": web_context()})
    second, second_view = await deploy(bus, store, manifest, {"web.tar": web_context()})
    try:
        assert first_view.status is second_view.status is StackStatus.RUNNING
        target = await docker.containers.get(second_view.services["web"].container or "")
        networks = target._container["NetworkSettings"]["Networks"]
        target_ip = next(iter(networks.values()))["IPAddress"]
        source = await docker.containers.get(first_view.services["web"].container or "")
        # Its own alias works; the other stack's IP and alias do not.
        assert await exec_python(source, "urllib.request.urlopen('http://web:8080/')") == 0
        url = f"http://{target_ip}:8080/"
        assert await exec_python(source, f"urllib.request.urlopen('{url}')") != 0
        other_name = f"spinup-{second}-web-r1"
        assert await exec_python(source, f"socket.gethostbyname('{other_name}')") != 0
    finally:
        await delete(bus, first)
        await delete(bus, second)


async def test_a_broken_dockerfile_fails_with_the_error_in_the_log_tail_and_nothing_left(
    bus: Bus, store: EventStore, docker: aiodocker.Docker, nc
) -> None:
    broken = WEB_DOCKERFILE.replace(b"WORKDIR /srv", b"RUN exit 3")
    manifest = b"services:\n  web: {build: web.tar, port: 8080}\n"
    stack_id = uuid.uuid4()
    lines = await nc.subscribe(stack_logs_subject(stack_id))
    await upload(bus, stack_id, manifest, {"web.tar": web_context(dockerfile=broken)})
    await provision(bus, stack_id)
    view = await settled(store, stack_id)
    try:
        assert view.status is StackStatus.FAILED
        assert view.failed_service == "web"
        assert "build failed" in (view.failure or "")
        assert "exit 3" in (view.logs_tail or "") or "code: 3" in (view.logs_tail or "")
        assert await stack_containers(docker, stack_id, running_only=True) == []
        message = await lines.next_msg(timeout=5)
        assert StackLogLine.__name__  # the subject carries JSON lines
        assert b'"source"' in message.data
    finally:
        await lines.unsubscribe()
        await delete(bus, stack_id)


async def images_that_ran(docker: aiodocker.Docker, marker: str) -> list[str]:
    """Every image on the engine, intermediate ones too, with a step whose command names it."""
    found = []
    for image in await docker.images.list(all=True):
        history = await docker.images.history(image["Id"])
        if any(marker in (step.get("CreatedBy") or "") for step in history):
            found.append(image["Id"])
    return found


async def test_a_build_that_fails_partway_leaves_none_of_its_steps_on_the_engine(
    bus: Bus, store: EventStore, docker: aiodocker.Docker
) -> None:
    """The steps before the failing one hold the upload's files, and no stack label."""
    marker = uuid.uuid4().hex
    dockerfile = (
        b"FROM spinup/base:bookworm\nCOPY index.html /srv/index.html\n"
        b"RUN echo " + marker.encode() + b" > /srv/step\nRUN exit 3\n"
    )
    manifest = b"services:\n  web: {build: web.tar, port: 8080}\n"
    stack_id = uuid.uuid4()
    await upload(bus, stack_id, manifest, {"web.tar": web_context(dockerfile=dockerfile)})
    await provision(bus, stack_id)
    view = await settled(store, stack_id)
    try:
        assert view.status is StackStatus.FAILED
        assert await images_that_ran(docker, marker) == []
    finally:
        await delete(bus, stack_id)
    assert await images_that_ran(docker, marker) == []


async def log_lines(subscription: Subscription) -> list[str]:
    """The stack's log lines received so far, once a second passes without one."""
    lines = []
    with contextlib.suppress(nats.errors.TimeoutError):
        while True:
            message = await subscription.next_msg(timeout=1)
            lines.append(msgspec.json.decode(message.data, type=StackLogLine).line)
    return lines


async def test_a_build_uses_no_step_another_stack_built(
    bus: Bus, store: EventStore, nc: NatsClient
) -> None:
    """The same files in two live stacks: the second's build log must not say it had them."""
    guessed = uuid.uuid4().hex.encode()  # what a tenant would try, file by file
    manifest = b"services:\n  web: {build: web.tar, port: 8080}\n"
    first, second = uuid.uuid4(), uuid.uuid4()
    await upload(bus, first, manifest, {"web.tar": web_context(page=guessed)})
    await provision(bus, first)
    lines = await nc.subscribe(stack_logs_subject(second))
    try:
        assert (await settled(store, first)).status is StackStatus.RUNNING
        await upload(bus, second, manifest, {"web.tar": web_context(page=guessed)})
        await provision(bus, second)
        assert (await settled(store, second)).status is StackStatus.RUNNING
        logged = await log_lines(lines)
        assert any("COPY index.html" in line for line in logged)  # the build's lines, read
        assert not [line for line in logged if "Using cache" in line]
    finally:
        await lines.unsubscribe()
        await delete(bus, first)
        await delete(bus, second)


async def test_a_build_step_runs_within_the_services_memory_and_cpu(
    bus: Bus, store: EventStore, nc: NatsClient
) -> None:
    """A ``RUN`` step is tenant code as much as the service is, under the same limits."""
    # cgroup v2 files first, then v1's.
    dockerfile = WEB_DOCKERFILE.replace(
        b"WORKDIR /srv",
        b"RUN m=$(cat /sys/fs/cgroup/memory.max 2>/dev/null"
        b" || cat /sys/fs/cgroup/memory/memory.limit_in_bytes);"
        b" q=$(cut -d' ' -f1 /sys/fs/cgroup/cpu.max 2>/dev/null"
        b" || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us); echo limits=$m/$q\nWORKDIR /srv",
    )
    manifest = b"services:\n  web: {build: web.tar, port: 8080}\n"
    stack_id = uuid.uuid4()
    lines = await nc.subscribe(stack_logs_subject(stack_id))
    try:
        await upload(bus, stack_id, manifest, {"web.tar": web_context(dockerfile=dockerfile)})
        await provision(bus, stack_id)
        assert (await settled(store, stack_id)).status is StackStatus.RUNNING
        printed = [line for line in await log_lines(lines) if line.startswith("limits=")]
        quota = LIMITS.cpu_millis * 100  # a quota of the default 100 ms period
        assert printed == [f"limits={LIMITS.memory_mb * 1024 * 1024}/{quota}"]
    finally:
        await lines.unsubscribe()
        await delete(bus, stack_id)


async def test_a_dockerfile_from_a_registry_image_fails_saying_what_to_build_from(
    bus: Bus, store: EventStore
) -> None:
    registry = WEB_DOCKERFILE.replace(b"FROM spinup/base:bookworm", b"FROM python:3.12-slim")
    manifest = b"services:\n  web: {build: web.tar, port: 8080}\n"
    stack_id, view = await deploy(
        bus, store, manifest, {"web.tar": web_context(dockerfile=registry)}
    )
    try:
        assert view.status is StackStatus.FAILED
        assert REGISTRY_HINT in (view.failure or "") + (view.logs_tail or ""), view
    finally:
        await delete(bus, stack_id)


async def test_a_crash_looping_command_fails_and_leaves_nothing_running(
    bus: Bus, store: EventStore, docker: aiodocker.Docker
) -> None:
    manifest = (
        b"services:\n  web:\n    image: spinup/base:bookworm\n"
        b"    command: [python3, -c, \"print('boom'); raise SystemExit(7)\"]\n"
    )
    stack_id, view = await deploy(bus, store, manifest, {})
    try:
        assert view.status is StackStatus.FAILED
        assert view.failed_service == "web"
        failure = view.failure or ""
        assert "code 7" in failure or "crash loop" in failure
        assert "boom" in (view.logs_tail or "")
        assert await stack_containers(docker, stack_id) == []
    finally:
        await delete(bus, stack_id)


async def test_stop_start_restart_and_redeploy(
    bus: Bus, store: EventStore, docker: aiodocker.Docker
) -> None:
    manifest = b"services:\n  web: {build: web.tar, port: 8080}\n"
    stack_id, view = await deploy(bus, store, manifest, {"web.tar": web_context()})
    try:
        assert view.status is StackStatus.RUNNING
        assert await control(bus, stack_id, StackAction.STOP) == "stopped"
        assert await stack_containers(docker, stack_id, running_only=True) == []
        assert (await view_of(store, stack_id)).status is StackStatus.STOPPED
        assert await control(bus, stack_id, StackAction.START) == "running"
        started = await view_of(store, stack_id)
        assert started.status is StackStatus.RUNNING
        assert await get_page(started) == b"hello from web\n"
        assert await control(bus, stack_id, StackAction.RESTART) == "running"
        assert await get_page(await view_of(store, stack_id)) == b"hello from web\n"

        await upload(bus, stack_id, manifest, {"web.tar": web_context(b"second\n")})
        assert await control(bus, stack_id, StackAction.REDEPLOY) == "building"
        redeployed = await settled(store, stack_id, revision=2)
        assert redeployed.status is StackStatus.RUNNING
        assert await get_page(redeployed) == b"second\n"
        running = await stack_containers(docker, stack_id)
        assert [c["Labels"]["io.spinup.revision"] for c in running] == ["2"]
    finally:
        await delete(bus, stack_id)
    assert await stack_containers(docker, stack_id) == []
    images = await docker.images.list(filters={"label": [f"io.spinup.stack={stack_id}"]})
    assert images == []
    networks = await docker.networks.list(filters={"name": [f"spinup-{stack_id}"]})
    assert networks == []


async def get_page(view: StackView) -> bytes:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{view.services['web'].port}/index.html")
    return answer.content


async def test_recover_finishes_a_deploy_whose_worker_was_killed(
    bus: Bus, store: EventStore, docker: aiodocker.Docker, stack: Stack
) -> None:
    slow = WEB_DOCKERFILE.replace(b"WORKDIR /srv", b"RUN sleep 6\nWORKDIR /srv")
    manifest = b"services:\n  web: {build: web.tar, port: 8080}\n"
    stack_id = uuid.uuid4()
    await upload(bus, stack_id, manifest, {"web.tar": web_context(b"recovered\n", slow)})
    await provision(bus, stack_id)
    deadline = time.monotonic() + 30
    while (await view_of(store, stack_id)).status is not StackStatus.BUILDING:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    stack.kill_service("stack-deployer")
    stack.start_service("stack-deployer")
    try:
        interrupted = await view_of(store, stack_id)
        assert interrupted.status is StackStatus.BUILDING
        assert interrupted.revision == 1
        # What the reaper sends for a stack building past the build timeout.
        assert await control(bus, stack_id, StackAction.RECOVER) == "building"
        recovered = await settled(store, stack_id, revision=2)
        assert recovered.status is StackStatus.RUNNING
        assert await get_page(recovered) == b"recovered\n"
        running = await stack_containers(docker, stack_id)
        assert [c["Labels"]["io.spinup.revision"] for c in running] == ["2"]
        # A recover of a stack that is not stuck changes nothing.
        assert await control(bus, stack_id, StackAction.RECOVER) == "running"
        assert (await view_of(store, stack_id)).revision == 2
    finally:
        await delete(bus, stack_id)
    with pytest.raises(DockerError):
        await docker.networks.get(f"spinup-{stack_id}")


async def test_containers_use_their_backing_postgres_and_redis_through_the_injected_urls(
    bus: Bus, store: EventStore, docker: aiodocker.Docker
) -> None:
    manifest = b"""services:
  web: {build: web.tar, port: 8080}
resources:
  db: {type: postgres}
  cache: {type: redis}
"""
    stack_id = uuid.uuid4()
    # What the gateway does before it asks for the stack: each backing resource, by its id.
    db = provision_command(resource_id=backing_resource_id(stack_id, "db"), parent_id=stack_id)
    await bus.request(ENDPOINTS[ResourceKind.POSTGRES].provision, db)
    cache = msgspec.structs.replace(
        db,
        command_id=uuid.uuid4(),
        deadline=time.time() + 15,
        token_hash=uuid.uuid4().hex,
        resource_id=backing_resource_id(stack_id, "cache"),
        kind=ResourceKind.REDIS,
        limits=RedisLimits(memory_mb=8),
    )
    await bus.request(ENDPOINTS[ResourceKind.REDIS].provision, cache)
    await upload(bus, stack_id, manifest, {"web.tar": web_context()})
    await provision(bus, stack_id)
    view = await settled(store, stack_id)
    try:
        assert view.status is StackStatus.RUNNING, view
        web = await docker.containers.get(view.services["web"].container or "")
        env = dict(item.split("=", 1) for item in web._container["Config"]["Env"])
        assert "127.0.0.1" not in env["DATABASE_URL"]
        assert env["DB_DATABASE_URL"] == env["DATABASE_URL"]
        use_db = (
            "import os, psycopg2; c = psycopg2.connect(os.environ['DATABASE_URL']);"
            " c.cursor().execute('CREATE TABLE t (x int)'); c.commit()"
        )
        assert await exec_python(web, use_db) == 0
        use_cache = (
            "import os, redis; r = redis.Redis.from_url(os.environ['REDIS_URL']);"
            " r.set(os.environ['REDIS_KEY_PREFIX'] + 'k', 'v')"
        )
        assert await exec_python(web, use_cache) == 0
    finally:
        await delete(bus, stack_id)
        for backing in (db, cache):
            await bus.request(
                ENDPOINTS[backing.kind].deprovision,
                deprovision_command(
                    backing.resource_id, deadline_in=30, correlation_id="test-stack"
                ),
            )


async def test_a_build_that_would_fetch_a_url_from_the_host_is_refused_before_the_engine_runs(
    bus: Bus, store: EventStore
) -> None:
    # The engine fetches an ADD <url> itself, on the host's network: here a server on the host's
    # loopback, which no stack may reach, stands for the platform's internal ports (ADR 0064).
    connections: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append((await reader.readline()).decode(errors="replace"))
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fetching = WEB_DOCKERFILE.replace(
        b"COPY index.html",
        f"ADD http://127.0.0.1:{port}/internal /srv/fetched\nCOPY index.html".encode(),
    )
    manifest = b"services:\n  web: {build: web.tar, port: 8080}\n"
    try:
        stack_id, view = await deploy(
            bus, store, manifest, {"web.tar": web_context(dockerfile=fetching)}
        )
        try:
            assert view.status is StackStatus.FAILED
            assert "ADD takes files of the build context only" in (view.failure or ""), view
            assert connections == []
        finally:
            await delete(bus, stack_id)
    finally:
        server.close()
        await server.wait_closed()
