"""SeaweedFS's internal surfaces, probed from this machine without its keys (ADR 0017).

The filer holds every object (``/buckets/``), and held every tenant's S3 key and secret
(``/etc/iam/identities/<user>.json``) until they moved to the platform Postgres (ADR 0019); the
volume server serves any object by its file id. Both answered anyone
who could connect. Now master, volume server and filer listen on loopback only, and behind that
``security.toml`` asks a JWT of every filer and volume request and a certificate of every gRPC
client. Each test here was checked against the old configuration (every interface, no
``security.toml``) and fails there; each refusal comes with the same request, signed, succeeding,
so a refusal cannot pass for a wrong path or fid.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import io
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from miniopy_async.api import Minio

from devstack.network import tenant_host
from devstack.procs import stat_fields
from devstack.seaweed import NAME, credential_dsn, weed_binary
from devstack.stack import Stack
from shared.contracts.kinds import S3Limits
from shared.naming import tenant_name
from storage_provisioner.driver import S3Driver, WeedShell, filer_jwt

pytestmark = pytest.mark.integration

REFUSED = {HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN}
IDENTITIES = "/etc/iam/identities"
_GRPC_OFFSET = 10000
_LISTEN = "0A"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Stored:
    """A tenant's bucket with one object in it, and where SeaweedFS keeps both."""

    user: str
    access_key: str
    secret_key: str
    bucket: str
    key: str
    body: bytes
    fid: str


def signed(key: str, claims: dict[str, object]) -> str:
    """An HS256 JWT, as SeaweedFS's master signs them for its volume servers."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
    head = f"{b64(header)}.{b64(json.dumps(claims).encode())}"
    return f"{head}.{b64(hmac.new(key.encode(), head.encode(), hashlib.sha256).digest())}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
async def stored(
    s3_driver: S3Driver, env: dict[str, str], http: aiohttp.ClientSession
) -> AsyncIterator[Stored]:
    rid = uuid.uuid4()
    creds = await s3_driver.create(rid, S3Limits(storage_mb=3))
    tenant = Minio(
        creds.endpoint.removeprefix("http://"),
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        secure=False,
        region=creds.region,
        session=http,
    )
    body = f"tenant data {uuid.uuid4().hex}".encode()
    await tenant.put_object(creds.bucket, "note.txt", io.BytesIO(body), len(body))
    # The object's file id, from its filer entry read with the filer's read key.
    url = f"http://{env['SPINUP_S3_FILER']}/buckets/{creds.bucket}/note.txt?metadata=true"
    async with http.get(url, headers=bearer(filer_jwt(env["SPINUP_S3_FILER_READ_KEY"]))) as got:
        assert got.status == HTTPStatus.OK, await got.text()
        entry = await got.json()
    yield Stored(
        user=tenant_name(rid),
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        bucket=creds.bucket,
        key="note.txt",
        body=body,
        fid=entry["chunks"][0]["file_id"],
    )
    await s3_driver.delete(rid)


async def status_and_body(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: object
) -> tuple[int, bytes]:
    async with http.request(method, url, **kwargs) as response:  # type: ignore[arg-type]
        return response.status, await response.read()


async def test_filer_refuses_unsigned_reads_of_identities_and_buckets_and_unsigned_writes(
    stored: Stored, env: dict[str, str], http: aiohttp.ClientSession
) -> None:
    filer = f"http://{env['SPINUP_S3_FILER']}"
    identity = f"{filer}{IDENTITIES}/{stored.user}.json"
    obj = f"{filer}/buckets/{stored.bucket}/{stored.key}"
    for url in (
        f"{filer}{IDENTITIES}/",
        identity,
        f"{filer}/etc/iam/",
        f"{filer}/buckets/",
        f"{filer}/buckets/{stored.bucket}/",
        obj,
        f"{obj}?metadata=true",
    ):
        status, _ = await status_and_body(http, "GET", url)
        assert status in REFUSED, f"unsigned GET {url} answered {status}"
    planted = f"{filer}/buckets/{stored.bucket}/planted.txt"
    status, _ = await status_and_body(http, "PUT", planted, data=b"x")
    assert status in REFUSED
    status, _ = await status_and_body(http, "DELETE", obj)
    assert status in REFUSED
    # The same reads, signed, find what the unsigned ones were refused; nothing was planted or
    # deleted.
    read_key = env["SPINUP_S3_FILER_READ_KEY"]
    status, body = await status_and_body(http, "GET", obj, headers=bearer(filer_jwt(read_key)))
    assert (status, body) == (HTTPStatus.OK, stored.body)
    status, _ = await status_and_body(http, "GET", planted, headers=bearer(filer_jwt(read_key)))
    assert status == HTTPStatus.NOT_FOUND


async def test_volume_server_refuses_unsigned_read_write_and_delete_of_an_objects_fid(
    stored: Stored, stack: Stack, http: aiohttp.ClientSession
) -> None:
    url = f"http://{LOOPBACK}:{stack.profile.ports.seaweed_volume}/{stored.fid}"
    status, body = await status_and_body(http, "GET", url)
    assert status in REFUSED
    assert stored.body not in body
    for method in ("PUT", "POST"):
        form = aiohttp.FormData()
        form.add_field("file", b"overwritten", filename="note.txt")
        status, _ = await status_and_body(http, method, url, data=form)
        assert status in REFUSED, f"unsigned {method} of a fid answered {status}"
    status, _ = await status_and_body(http, "DELETE", url)
    assert status in REFUSED
    # Signed by the master's read key for this fid, the read succeeds: the object is there,
    # untouched by the refused writes.
    token = signed(
        stack.secrets.seaweed_volume_read_key, {"fid": stored.fid, "exp": int(time.time()) + 10}
    )
    status, body = await status_and_body(http, "GET", url, headers=bearer(token))
    assert (status, body) == (HTTPStatus.OK, stored.body)


def _listeners() -> dict[int, list[tuple[str, int]]]:
    """Socket inode -> (address, port) of every listening TCP socket (IPv6 ones as ``[hex]``)."""
    found: dict[int, list[tuple[str, int]]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != _LISTEN:
                continue
            raw, port = fields[1].split(":")
            address = (
                ".".join(str(int(raw[i : i + 2], 16)) for i in range(6, -1, -2))
                if len(raw) == 8  # an IPv4 address in hex
                else f"[{raw}]"
            )
            found.setdefault(int(fields[9]), []).append((address, int(port, 16)))
    return found


def _process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := stat_fields(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    pids, queue = [], [root]
    while queue:
        pids.append(pid := queue.pop())
        queue += children.get(pid, [])
    return pids


def seaweed_listeners(stack: Stack, server: str = NAME) -> dict[int, set[str]]:
    """Port -> the addresses SeaweedFS's (or another server's) processes listen on it at."""
    pid = stack.servers[server].pid
    assert pid is not None
    inodes: set[int] = set()
    for each in _process_tree(pid):
        # A child may end while it is read (a Postgres backend whose client left): it listened
        # on nothing of its own, so it is skipped.
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for fd in Path(f"/proc/{each}/fd").iterdir():
                with contextlib.suppress(FileNotFoundError):
                    link = str(fd.readlink())
                    if link.startswith("socket:["):
                        inodes.add(int(link[len("socket:[") : -1]))
    bound: dict[int, set[str]] = {}
    for inode, sockets in _listeners().items():
        if inode in inodes:
            for address, port in sockets:
                bound.setdefault(port, set()).add(address)
    return bound


def test_only_s3_listens_beyond_loopback_and_it_listens_on_the_tenant_address(
    stack: Stack,
) -> None:
    ports = stack.profile.ports
    internal = [ports.seaweed_master, ports.seaweed_volume, ports.seaweed_filer]
    internal += [port + _GRPC_OFFSET for port in internal]
    s3 = [ports.seaweed_s3, ports.seaweed_s3 + _GRPC_OFFSET]
    bound = seaweed_listeners(stack)
    # No port beyond these: no metrics, debug, Iceberg or Lance listener.
    assert set(bound) == set(internal) | set(s3), bound
    for port in internal:
        assert bound[port] == {LOOPBACK}, f"internal port {port} bound to {bound[port]}"
    for port in s3:
        # SeaweedFS adds a loopback listener beside the address it is told to bind.
        assert tenant_host() in bound[port], bound[port]
        assert bound[port] <= {tenant_host(), LOOPBACK}, bound[port]


async def test_no_unsigned_answer_of_master_volume_or_filer_holds_a_tenants_key_or_data(
    stored: Stored, stack: Stack, http: aiohttp.ClientSession
) -> None:
    ports = stack.profile.ports
    master = f"http://{LOOPBACK}:{ports.seaweed_master}"
    volume = f"http://{LOOPBACK}:{ports.seaweed_volume}"
    filer = f"http://{LOOPBACK}:{ports.seaweed_filer}"
    volume_id = stored.fid.split(",", 1)[0]
    obj = f"/buckets/{stored.bucket}/{stored.key}"
    urls = [
        *(
            f"{master}{path}"
            for path in (
                "/",
                "/dir/status",
                "/vol/status",
                "/cluster/status",
                f"/dir/lookup?volumeId={volume_id}",
                f"/collection/info?collection={stored.bucket}",
                "/stats/health",
            )
        ),
        *(
            f"{volume}{path}"
            for path in ("/", "/status", "/ui/index.html", "/stats/counter", f"/{stored.fid}")
        ),
        *(
            f"{filer}{path}"
            for path in (
                "/",
                f"{IDENTITIES}/",
                f"{IDENTITIES}/?pretty=y",
                f"{IDENTITIES}/{stored.user}.json",
                f"{IDENTITIES}/{stored.user}.json?metadata=true",
                "/etc/iam/identity.json",
                "/etc/iam/",
                "/buckets/",
                f"/buckets/{stored.bucket}/",
                obj,
                f"{obj}?metadata=true",
                "/etc/seaweedfs/filer.conf",
            )
        ),
    ]
    secrets = (stored.access_key.encode(), stored.secret_key.encode(), stored.body)
    leaks = []
    for url in urls:
        _, body = await status_and_body(http, "GET", url)
        leaks += [url for secret in secrets if secret in body]
    assert not leaks, f"answered a tenant's key or data without a token: {leaks}"


async def test_weed_shell_without_the_grpc_certificate_reads_nothing(
    stored: Stored, admin_shell: WeedShell, tmp_path: Path
) -> None:
    """The filer's gRPC (what ``weed shell`` speaks) wants the certificate of security.toml."""
    command = f"fs.cat /buckets/{stored.bucket}/{stored.key}\n"
    # No security.toml where weed looks by itself: the working directory and ~/.seaweedfs.
    process = await asyncio.create_subprocess_exec(
        str(weed_binary()),
        "shell",
        f"-master={admin_shell.master}",
        f"-filer={admin_shell.filer}",
        cwd=tmp_path,
        env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        # With the certificate it answers in well under a second; without, it retries forever.
        output, _ = await asyncio.wait_for(process.communicate(command.encode()), 8)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
    assert stored.body not in output
    # With the certificate, the same command reads the object.
    assert stored.body.decode() in await admin_shell.run(command)


async def filer_files(shell: WeedShell, folder: str) -> list[str]:
    """Every file under ``folder`` of the filer, as ``weed shell``'s ``fs.ls -l`` walks it."""
    files: list[str] = []
    for line in (await shell.run(f"fs.ls -l {folder}\n")).splitlines():
        fields = line.split()
        if not fields or fields[0][:1] not in {"d", "-"}:
            continue
        name = fields[-1]  # fs.ls -l prints the full path
        path = name if name.startswith("/") else f"{folder.rstrip('/')}/{name}"
        if fields[0].startswith("d"):
            files += await filer_files(shell, path)
        else:
            files.append(path)
    return files


async def test_a_tenants_secret_is_in_no_filer_file_only_in_the_platform_credential_database(
    stored: Stored, stack: Stack, admin_shell: WeedShell
) -> None:
    """ADR 0019: identities live in SeaweedFS's Postgres store, on the loopback platform cluster."""
    # Every filer file but the objects (the tenant's own data, which holds no key): with the
    # gRPC certificate, i.e. more than any tenant can read.
    every = await filer_files(admin_shell, "/")
    assert f"/buckets/{stored.bucket}/{stored.key}" in every, "the walk missed a known file"
    files = [path for path in every if not path.startswith("/buckets/")]
    for path in files:
        content = await admin_shell.run(f"fs.cat {path}\n")
        assert stored.secret_key not in content, path
        assert stored.access_key not in content, path
    assert not [path for path in files if path.startswith("/etc/iam/identities/")]
    # The secret is a row of the seaweedfs database of the platform cluster...
    ports = stack.profile.ports
    conn = await asyncpg.connect(credential_dsn(stack.profile, stack.secrets))
    try:
        row = await conn.fetchrow(
            "SELECT username, secret_key FROM credentials WHERE access_key = $1", stored.access_key
        )
    finally:
        await conn.close()
    assert row is not None
    assert (row["username"], row["secret_key"]) == (stored.user, stored.secret_key)
    # ...which listens on loopback only, and is not the customer cluster tenants log in to.
    listening = seaweed_listeners(stack, "platform-pg")
    assert ports.platform_pg in listening
    assert all(addresses == {LOOPBACK} for addresses in listening.values()), listening
    assert ports.customer_pg != ports.platform_pg
