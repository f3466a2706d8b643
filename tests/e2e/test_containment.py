"""Containment, tried from inside: an anonymous stack's container looks for a way out.

The probe is an ordinary anonymous deploy (``POST /stacks/new``) of a small Python app given a
Postgres database and an S3 bucket. Asked over its public URL, it opens TCP connections to what
the test names and fetches URLs without credentials, from inside its container. The test names
every TCP port this host listens on, at every address of the host, the container's own gateway
included, another stack's container, and a test host of the run's own (a network namespace) at
the cloud-metadata address 169.254.169.254 and at a private address, which answer the host:
only the two endpoints its stack was given answer, and its own stack's other service. What it
gets through the S3 port without a key is a refusal, and no answer it gets holds another
tenant's S3 secret.

The same container shows the defence in depth of docs/security.md: root inside is an
unprivileged user of the host, its root filesystem is read-only, it has no capabilities. The
last test restarts the machine's engine as a host restart would (rules gone, deployer down).
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import botocore.exceptions
import botocore.session
import httpx
import pytest

from devstack.engine import docker_host, ensure_engine, stop_engine
from devstack.network import tenant_host
from devstack.procs import port_open, wait_until
from devstack.stack import Stack
from stack_deployer.engine import image_tag
from tests.e2e.conftest import new_resource, s3_client
from tests.e2e.test_stacks import wait_for_status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PROBE_APP = """\
import json, os, socket, urllib.error, urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def connect(target):
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"error {exc.errno}"


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return [answer.status, answer.read(65536).decode(errors="replace")]
    except urllib.error.HTTPError as exc:
        return [exc.code, exc.read(65536).decode(errors="replace")]
    except OSError as exc:
        return [0, type(exc).__name__]


def hold(target, count):
    # count connections to target, one after another, held until the last, then closed
    host, port = target.rsplit(":", 1)
    held, outcomes = [], {}
    for _ in range(count):
        try:
            held.append(socket.create_connection((host, int(port)), timeout=3))
            outcome = "open"
        except ConnectionRefusedError:
            outcome = "refused"
        except OSError as exc:
            outcome = f"error {exc.errno}"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    for connection in held:
        connection.close()
    return outcomes


def writable(path):
    try:
        with open(path, "w") as handle:
            handle.write("x")
        return True
    except OSError:
        return False


class Probe(BaseHTTPRequestHandler):
    def answer(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.answer({
            "uid": os.getuid(),
            "env": dict(os.environ),
            "root_writable": writable("/probe-was-here"),
            "tmp_writable": writable("/tmp/probe-was-here"),
            "capabilities": open("/proc/self/status").read(),
        })

    def do_POST(self):
        asked = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with ThreadPoolExecutor(64) as pool:
            connects = list(pool.map(connect, asked.get("connect", [])))
            fetches = list(pool.map(fetch, asked.get("fetch", [])))
        self.answer({
            "connect": dict(zip(asked.get("connect", []), connects)),
            "fetch": dict(zip(asked.get("fetch", []), fetches)),
            "hold": {target: hold(target, n) for target, n in asked.get("hold", {}).items()},
        })


ThreadingHTTPServer(("0.0.0.0", 8080), Probe).serve_forever()
"""

DOCKERFILE = """\
FROM spinup/base:bookworm
COPY app.py /srv/app.py
CMD ["python3", "/srv/app.py"]
"""

PROBE_MANIFEST = """\
services:
  probe:
    build: app.tar
    port: 8080
  peer:
    build: app.tar
resources:
  db: {type: postgres}
  files: {type: s3}
"""

VICTIM_MANIFEST = """\
services:
  victim:
    build: app.tar
    port: 8080
"""

_LISTEN = "0A"


def app_context() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in (("Dockerfile", DOCKERFILE), ("app.py", PROBE_APP)):
            data = text.encode()
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def listening_tcp_ports() -> set[int]:
    """Every TCP port something on this host listens on, at any address, IPv4 or IPv6."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == _LISTEN:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def host_addresses() -> set[str]:
    """Every IPv4 address of this host except loopback (docker0, stack bridges, eth0...)."""
    listing = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = set()
    for line in listing.splitlines():
        address = line.split()[3].split("/")[0]
        if not ipaddress.IPv4Address(address).is_loopback:
            found.add(address)
    return found


def docker(*args: str) -> str:
    return subprocess.run(  # noqa: S603
        ["docker", *args],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "DOCKER_HOST": docker_host()},
    ).stdout


def container_of(stack_id: str, service: str) -> dict[str, Any]:
    found = docker(
        "ps",
        "-q",
        "--filter",
        f"label=io.spinup.stack={stack_id}",
        "--filter",
        f"label=io.spinup.service={service}",
    ).split()
    assert len(found) == 1, found
    inspected: list[dict[str, Any]] = json.loads(docker("inspect", found[0]))
    return inspected[0]


async def deployed(http: httpx.AsyncClient, manifest: str) -> dict[str, Any]:
    files = {
        "spinup.yaml": ("spinup.yaml", manifest.encode()),
        "app.tar": ("app.tar", app_context()),
    }
    response = await http.post("/stacks/new", files=files)
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    running = await wait_for_status(http, created["token"], {"running", "failed"})
    assert running["stack"]["status"] == "running", running["stack"]
    return created


#: A test host of the run's own, in a network namespace: a cloud-metadata and a private address.
OUTSIDE_NETNS = "spinup-outside"
METADATA_ADDRESS = "169.254.169.254"
PRIVATE_ADDRESS = "10.255.255.2"
_OUTSIDE_GATEWAY = "10.255.255.1"


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)  # noqa: S603, S607


@pytest.fixture(scope="module")
def outside_host() -> Iterator[list[str]]:
    """A web server on this machine at a link-local and a private address, reachable from the host.

    The addresses belong to a network namespace this fixture makes (veth ``smd0``/``smd1``), so
    a probe that got through would reach it and never leave the machine.
    """
    _ip("netns", "del", OUTSIDE_NETNS, check=False)
    _ip("netns", "add", OUTSIDE_NETNS)
    _ip("link", "add", "smd0", "type", "veth", "peer", "name", "smd1")
    _ip("link", "set", "smd1", "netns", OUTSIDE_NETNS)
    _ip("addr", "add", f"{_OUTSIDE_GATEWAY}/30", "dev", "smd0")
    _ip("link", "set", "smd0", "up")
    for command in (
        ("addr", "add", f"{PRIVATE_ADDRESS}/30", "dev", "smd1"),
        ("addr", "add", f"{METADATA_ADDRESS}/32", "dev", "smd1"),
        ("link", "set", "smd1", "up"),
        ("link", "set", "lo", "up"),
        ("route", "add", "default", "via", _OUTSIDE_GATEWAY),
    ):
        _ip("netns", "exec", OUTSIDE_NETNS, "ip", *command)
    _ip("route", "add", f"{METADATA_ADDRESS}/32", "via", PRIVATE_ADDRESS)
    server = subprocess.Popen(  # noqa: S603
        ["ip", "netns", "exec", OUTSIDE_NETNS, sys.executable, "-m", "http.server", "80"],  # noqa: S607
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # From the host it answers: a refusal seen from a container is the rules' doing.
        for address in (METADATA_ADDRESS, PRIVATE_ADDRESS):
            wait_until(partial(port_open, 80, address), timeout=10, what=f"{address}:80")
        yield [f"{METADATA_ADDRESS}:80", f"{PRIVATE_ADDRESS}:80"]
    finally:
        server.kill()
        server.wait()
        _ip("route", "del", f"{METADATA_ADDRESS}/32", check=False)
        _ip("netns", "del", OUTSIDE_NETNS, check=False)


@pytest.fixture(scope="module")
async def stacks(stack: Stack) -> AsyncIterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The probe's stack and a victim stack, both anonymous, both running."""
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=120) as http:
        probe = await deployed(http, PROBE_MANIFEST)
        victim = await deployed(http, VICTIM_MANIFEST)
        yield probe, victim
        for created in (probe, victim):
            await http.delete(f"/resources/{created['token']}")


async def ask(probe: dict[str, Any], **asked: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=300) as client:
        answer = await client.post(probe["urls"]["probe"], json=asked)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def about(probe: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=60) as client:
        answer = await client.get(probe["urls"]["probe"])
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def given_endpoints(env: dict[str, str]) -> set[str]:
    """host:port of the Postgres database and the S3 endpoint the probe's stack was given."""
    pg = f"{tenant_host()}:{env['SPINUP_CUSTOMER_PG_PORT']}"
    s3 = env["SPINUP_S3_PUBLIC_ENDPOINT"].removeprefix("http://")
    return {pg, s3}


async def test_only_the_stacks_own_endpoints_answer_from_its_container(
    stacks: tuple[dict[str, Any], dict[str, Any]], env: dict[str, str], outside_host: list[str]
) -> None:
    probe, victim = stacks
    own = container_of(probe["id"], "probe")
    victim_networks = container_of(victim["id"], "victim")["NetworkSettings"]["Networks"]
    victim_ip = next(iter(victim_networks.values()))["IPAddress"]
    own_gateway = next(iter(own["NetworkSettings"]["Networks"].values()))["Gateway"]
    addresses = host_addresses() | {own_gateway}
    targets = [
        f"{address}:{port}" for address in sorted(addresses) for port in listening_tcp_ports()
    ]
    targets += [f"{victim_ip}:8080", "peer:8080", *outside_host]

    answered = await ask(probe, connect=targets)
    reachable = {target for target, outcome in answered["connect"].items() if outcome == "open"}

    assert reachable == given_endpoints(env) | {"peer:8080"}, answered["connect"]
    # Refused at once by the host's rules, not left to time out.
    for target in (f"{victim_ip}:8080", *outside_host):
        assert answered["connect"][target] == "refused", target


async def test_the_stack_holds_no_more_connections_to_a_server_than_its_plan_allows(
    stacks: tuple[dict[str, Any], dict[str, Any]], env: dict[str, str], http: httpx.AsyncClient
) -> None:
    # A shared server's ceiling (Redis maxclients, MongoDB's, Postgres max_connections) is every
    # tenant's, and connections need no credential to count against it (ADR 0052).
    probe, _ = stacks
    plans = (await http.get("/plans")).json()
    allowed = plans["tiers"][plans["anonymous_tier"]]["stack"]["connections_per_endpoint"]
    s3 = env["SPINUP_S3_PUBLIC_ENDPOINT"].removeprefix("http://")

    answered = await ask(probe, hold={s3: allowed + 8})

    assert answered["hold"][s3] == {"open": allowed, "refused": 8}
    # Once they are closed, the stack has its whole allowance again: as soon as the connection
    # tracker has seen each of them end (a closing one still counts).
    for _ in range(20):
        again = (await ask(probe, hold={s3: allowed}))["hold"][s3]
        if again == {"open": allowed}:
            break
        await asyncio.sleep(1)
    assert again == {"open": allowed}


async def test_seaweedfs_internals_do_not_answer_and_s3_gives_nothing_without_a_key(
    stacks: tuple[dict[str, Any], dict[str, Any]], stack: Stack, http: httpx.AsyncClient
) -> None:
    probe, _ = stacks
    env = stack.env()
    other = await new_resource(http, "storage")
    secret = other["credentials"]["secret_key"]
    ports = stack.profile.ports
    internal = [ports.seaweed_master, ports.seaweed_volume, ports.seaweed_filer]
    internal += [port + 10000 for port in internal]  # their gRPC twins
    own = container_of(probe["id"], "probe")
    own_gateway = next(iter(own["NetworkSettings"]["Networks"].values()))["Gateway"]
    s3 = env["SPINUP_S3_PUBLIC_ENDPOINT"]
    paths = ["/", "/etc/iam/identities/", "/buckets/", "/dir/status", f"/{other_bucket(other)}"]
    fetches = [f"{s3}{path}" for path in paths]
    fetches += [
        f"http://{address}:{port}{path}"
        for address in (tenant_host(), own_gateway)
        for port in internal
        for path in paths
    ]

    answered = await ask(probe, fetch=fetches)

    for url, (status, body) in answered["fetch"].items():
        assert secret not in body, url
        if url.startswith(s3):
            assert status == 403, (url, status, body)
        else:
            assert status == 0, (url, status, body)  # no connection at all
    await http.delete(f"/resources/{other['token']}")


async def test_a_buckets_secret_is_given_by_its_own_token_and_no_other_route(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    victim = await new_resource(http, "storage")
    attacker = await new_resource(http, "storage")
    secret = victim["credentials"]["secret_key"]
    claim = attacker["claim_url"].split("t=", 1)[1]
    routes = [
        f"/resources/{attacker['token']}",
        f"/resources/{victim['id']}",
        "/resources?kind=s3",
        f"/claim/preview?t={claim}",
        "/plans",
        "/llms.txt",
        "/schema/openapi.json",
        "/healthz",
        "/readyz",
    ]
    for route in routes:
        answer = await http.get(route)
        assert secret not in answer.text, route
    # The attacker's own key, against the S3 and IAM API of the same server.
    async with aiohttp.ClientSession() as session:
        client = s3_client(attacker, session)
        assert [b.name for b in await client.list_buckets()] == [attacker["credentials"]["bucket"]]
    iam = botocore.session.get_session().create_client(
        "iam",
        endpoint_url=stack.env()["SPINUP_S3_PUBLIC_ENDPOINT"],
        region_name=attacker["credentials"]["region"],
        aws_access_key_id=attacker["credentials"]["access_key"],
        aws_secret_access_key=attacker["credentials"]["secret_key"],
    )
    victim_user = "t_" + victim["id"].replace("-", "")
    with pytest.raises(botocore.exceptions.ClientError):
        await asyncio.to_thread(iam.list_users)
    with pytest.raises(botocore.exceptions.ClientError):
        await asyncio.to_thread(iam.list_access_keys, UserName=victim_user)
    # IAM's self-service answers about the caller alone.
    own_keys = await asyncio.to_thread(iam.list_access_keys)
    assert [key["AccessKeyId"] for key in own_keys["AccessKeyMetadata"]] == [
        attacker["credentials"]["access_key"]
    ]
    iam.close()
    # Its own token is the one route that gives it.
    own = await http.get(f"/resources/{victim['token']}")
    assert own.json()["credentials"]["secret_key"] == secret
    for resource in (victim, attacker):
        await http.delete(f"/resources/{resource['token']}")


def other_bucket(resource: dict[str, Any]) -> str:
    bucket: str = resource["credentials"]["bucket"]
    return bucket


async def test_another_stacks_image_can_be_neither_run_nor_built_from(
    stacks: tuple[dict[str, Any], dict[str, Any]], stack: Stack
) -> None:
    # A built image's tag follows from its stack's public id; running it or building FROM it
    # would hand its files (the tenant's code, anything its build fetched) to anyone (ADR 0064).
    _, victim = stacks
    victims_image = image_tag(victim["id"], "victim", 1)
    assert docker("image", "inspect", "--format", "{{.Id}}", victims_image).strip()
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=120) as http:
        run = f"services:\n  thief:\n    image: {victims_image}\n    command: [cat, /srv/app.py]\n"
        response = await http.post("/stacks/new", files={"spinup.yaml": ("spinup.yaml", run)})
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_manifest"
        assert "services.thief.image" in response.json()["message"]
        built = io.BytesIO()
        with tarfile.open(fileobj=built, mode="w") as tar:
            data = f'FROM {victims_image}\nCMD ["cat", "/srv/app.py"]\n'.encode()
            member = tarfile.TarInfo("Dockerfile")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        manifest = "services:\n  thief: {build: thief.tar}\n"
        files = {
            "spinup.yaml": ("spinup.yaml", manifest.encode()),
            "thief.tar": ("thief.tar", built.getvalue()),
        }
        response = await http.post("/stacks/new", files=files)
        assert response.status_code == 202, response.text
        created = response.json()
        try:
            failed = await wait_for_status(http, created["token"], {"running", "failed"})
            assert failed["stack"]["status"] == "failed", failed["stack"]
            assert "other stacks' or the platform's" in failed["stack"]["failure"]
        finally:
            await http.delete(f"/resources/{created['token']}")


async def test_root_in_the_container_is_not_root_on_the_host(
    stacks: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    probe, _ = stacks
    inside = await about(probe)
    assert inside["uid"] == 0
    pid = container_of(probe["id"], "probe")["State"]["Pid"]
    host_uid, uid_map = host_view_of(pid)
    assert host_uid != 0
    assert uid_map[:2] == ["0", str(host_uid)]


def host_view_of(pid: int) -> tuple[int, list[str]]:
    """The host uid a process runs as, and its user namespace's uid map."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = int(next(line.split()[1] for line in status if line.startswith("Uid:")))
    return uid, Path(f"/proc/{pid}/uid_map").read_text().split()


async def test_the_container_is_hardened_as_docs_security_says(
    stacks: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    probe, _ = stacks
    inside = await about(probe)
    assert inside["root_writable"] is False
    assert inside["tmp_writable"] is True
    capabilities = dict(
        line.split(":\t", 1) for line in inside["capabilities"].splitlines() if ":\t" in line
    )
    assert int(capabilities["CapEff"], 16) == 0
    assert int(capabilities["CapBnd"], 16) == 0
    assert capabilities["NoNewPrivs"] == "1"

    host_config = container_of(probe["id"], "probe")["HostConfig"]
    assert host_config["Privileged"] is False
    assert host_config["ReadonlyRootfs"] is True
    assert not host_config.get("Binds")
    assert "seccomp=unconfined" not in (host_config.get("SecurityOpt") or [])
    assert host_config["CapDrop"] == ["ALL"]
    assert host_config["NetworkMode"].startswith("spinup-")


def egress_rules() -> str:
    """The host's IPv4 filter rules, as ``iptables-save`` prints them."""
    return subprocess.run(
        ["iptables-save", "-t", "filter"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def wipe_egress_rules() -> None:
    """Remove every rule and chain of ours, as a host restart would."""
    hooks = [("INPUT", "SPINUP-EGRESS"), ("DOCKER-USER", "SPINUP-EGRESS")]
    for chain, target in hooks:
        subprocess.run(  # noqa: S603
            ["iptables", "-w", "-D", chain, "-i", "sp-+", "-j", target],  # noqa: S607
            capture_output=True,
            check=False,
        )
    chains = [
        line.split()[0][1:] for line in egress_rules().splitlines() if line.startswith(":SPINUP")
    ]
    for flag in ("-F", "-X"):
        for chain in chains:
            subprocess.run(["iptables", "-w", flag, chain], capture_output=True, check=True)  # noqa: S603, S607
    assert "SPINUP" not in egress_rules()


async def test_after_an_engine_restart_the_rules_are_back_before_any_stack_container_starts(
    stacks: tuple[dict[str, Any], dict[str, Any]], stack: Stack, http: httpx.AsyncClient
) -> None:
    # This restarts the machine's engine: every stack on it stops. It is the last test here and
    # no other test of the session runs beside it.
    probe, _ = stacks
    before = await ask(probe, connect=sorted(given_endpoints(stack.env())))
    jump = f"-j SPINUP-S-{probe['id'].replace('-', '')[:12]}"
    # A host restart: the deployer is down, every rule is gone, the engine starts again.
    await asyncio.to_thread(stack.stop_service, "stack-deployer")
    try:
        wipe_egress_rules()
        assert stop_engine(stack.profile.root), "the engine was not started by devstack"

        await asyncio.to_thread(ensure_engine, stack.profile.root)

        # The moment the engine answers, with no deployer running, all is refused.
        rules = egress_rules()
        assert "-A INPUT -i sp-+ -j SPINUP-EGRESS" in rules
        assert "-A DOCKER-USER -i sp-+ -j SPINUP-EGRESS" in rules
        assert "-A SPINUP-EGRESS -p tcp -j REJECT --reject-with tcp-reset" in rules
        assert jump not in rules
    finally:
        # Whatever failed above, the tests after this one find an engine and a deployer.
        await asyncio.to_thread(ensure_engine, stack.profile.root)
        # The deployer, started again, rebuilds the stack's own rules from its containers'
        # labels before it serves anything.
        await asyncio.to_thread(stack.start_service, "stack-deployer")
    assert jump in egress_rules()
    restarted = await http.post(f"/stacks/{probe['token']}/restart")
    assert restarted.status_code in {200, 202}, restarted.text
    await wait_for_status(http, probe["token"], {"running"})

    after = await ask(probe, connect=sorted(given_endpoints(stack.env())))
    assert after == before
    assert set(after["connect"].values()) == {"open"}
