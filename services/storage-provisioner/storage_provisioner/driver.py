"""Tenant bucket + identity + access key on the S3 server (SeaweedFS), with a bucket quota.

Why care: this module deletes buckets with everything in them and deletes identities. Every name
comes from ``bucket_name`` / ``tenant_name`` and passes ``guard_bucket_name`` /
``guard_tenant_name`` before anything is removed.

Identities are written through the filer's IAM gRPC service (``FilerIam``) into SeaweedFS's
Postgres credential store, one row each, so a create costs the same with 50 tenants or 5,000
(ADR 0019); the IAM API on the S3 port, which rewrote every identity on each change, is
read-only. Isolation rests on the identity's actions (``tenant_actions``): read, write, list and
tag its own bucket's objects. Not ``DeleteBucket`` or ``Admin``: a tenant could delete its
bucket and create it again, and the new bucket has no quota.

The quota is SeaweedFS's own: its S3 gateway records it on the bucket (``BucketQuotas``, its
``?seaweedfs-quota`` extension) and makes a bucket over it read-only by itself about once a
minute (its ``s3.bucket.quota.enforce -apply`` pass).

The usage sweep is the other half. ``usage`` sums the object sizes ListObjectsV2 reports (what
the tenant's own client sees, exact and current); SeaweedFS's figure counts what it stored,
compressed, a heartbeat late, but also counts unfinished multipart uploads. Over quota,
``block_writes`` puts a bucket policy that denies ``s3:PutObject`` to everyone: uploads,
multipart parts and copies are refused with ``AccessDenied`` at once, while reads, listing and
deletes keep working. Not SeaweedFS's read-only flag: its enforce pass turns a bucket writable
again at any pass that finds its own figure under the quota, and a
read-only bucket answers a PUT with ``InternalError``. The tenant's policy grants nothing on the
bucket policy itself, so it cannot lift the block. ``allow_writes`` removes the policy and, if
SeaweedFS's pass made the bucket read-only meanwhile, that flag too: its figure trails deletes
by a volume heartbeat (measured 3-5 s), so it would keep refusing until its next pass.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import re
import secrets
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import aiohttp
import botocore.exceptions
import grpc
import msgspec
import structlog
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography import x509
from cryptography.x509.oid import NameOID
from miniopy_async.api import Minio
from miniopy_async.error import MinioException, S3Error

from shared.contracts.errors import (
    BackendUnavailableError,
    DropRefusedError,
    ErrorCode,
    SpinupError,
)
from shared.contracts.kinds import (
    EXPORT_CHUNK_BYTES,
    EXPORT_FORMATS,
    ResourceKind,
    S3Credentials,
    S3Limits,
)
from shared.exporting import TAR_END, chunked, spooled_member, tar_header, tar_padding
from shared.lifecycle import Ceiling
from shared.naming import guard_tenant_name, tenant_name
from shared.observability.metrics import USAGE_MEASURED, USAGE_MEASURES, USAGE_STANDING
from shared.usage_memo import Figures, UsageMemo
from storage_provisioner.reloads import CANARY_PREFIX, IdentityChange, ReloadWatch, holds
from storage_provisioner.seaweed_pb import (
    filer_pb2,
    filer_pb2_grpc,
    iam_pb2,
    iam_pb2_grpc,
    master_pb2,
    master_pb2_grpc,
)

if TYPE_CHECKING:
    from uuid import UUID

log = structlog.get_logger("storage_provisioner.driver")
T = TypeVar("T")

BUCKET_PREFIX = "t-"
_BUCKET_NAME_RE = re.compile(r"^t-[0-9a-f]{32}$")
# The query word of SeaweedFS's quota extension to the S3 API (its gateway, 4.x).
QUOTA_SUBRESOURCE = "seaweedfs-quota"
# Buckets listed at once by a usage sweep.
USAGE_CONCURRENCY = 8
# Short, so a server that does not answer becomes a 503 well within the endpoint's timeout.
CONNECT_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 10.0
SHELL_TIMEOUT_S = 15.0
# How long an identity call waits for the filer's gRPC to connect again (its backoff is 2 s).
RECONNECT_WAIT_S = 3.0
# SeaweedFS's defaults, which devstack keeps: where buckets live in the filer, and the file of
# per-path rules (the quota pass's read-only flags among them).
FILER_BUCKETS_PATH = "/buckets"
FILER_CONF_PATH = "/etc/seaweedfs/filer.conf"
# How long a filer token this driver signs is good for (SeaweedFS's own default lifetime).
FILER_JWT_TTL_S = 10

# How often a tenant identity is pushed again when an S3 gateway missed it (FilerIam).
PUSH_ATTEMPTS = 5
PUSH_PAUSE_S = 0.05


class FilerUnreachableError(ConnectionError):
    """The filer's gRPC service did not answer (down, restarting, or too slow)."""


# What "the S3 server cannot be reached" looks like from each client library.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    FilerUnreachableError,
    aiohttp.ClientConnectionError,
    TimeoutError,
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.HTTPClientError,
)


def bucket_name(resource_id: UUID) -> str:
    """``t-<32 hex>``: bucket names may not contain ``_``, so not ``tenant_name``."""
    return f"{BUCKET_PREFIX}{resource_id.hex}"


#: A bucket no resource has (the nil id's): what ``capacity`` asks the S3 gateway about.
_NOBODYS_BUCKET = f"{BUCKET_PREFIX}{'0' * 32}"


def guard_bucket_name(name: str) -> str:
    """Return ``name`` if it is a tenant bucket name; refuse anything else.

    Raises:
        DropRefusedError: ``name`` was not made by ``bucket_name``.
    """
    if not _BUCKET_NAME_RE.fullmatch(name):
        msg = f"refusing to delete bucket {name!r}: not a tenant bucket"
        raise DropRefusedError(msg)
    return name


def bucket_location(bucket: str) -> str:
    """The filer path prefix of ``bucket``, as filer.conf rules name it."""
    return f"{FILER_BUCKETS_PATH}/{bucket}/"


def read_only_locations(filer_conf: str) -> set[str]:
    """The path prefixes filer.conf (JSON) marks read-only."""
    locations = json.loads(filer_conf).get("locations") or []
    return {
        str(rule["locationPrefix"])
        for rule in locations
        if isinstance(rule, dict) and rule.get("readOnly") and rule.get("locationPrefix")
    }


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def filer_jwt(key: str, ttl_s: int = FILER_JWT_TTL_S) -> str:
    """A token the filer accepts for ``security.toml``'s ``[jwt.filer_signing*]`` ``key``.

    An HS256 JWT with only an expiry: SeaweedFS's filer claims (allowed path prefixes and
    methods) are optional, and without them it grants every path. Signed here rather than with
    a JWT library: the worker signs this one token and needs no dependency for it.
    """
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64url(json.dumps({"exp": int(time.time()) + ttl_s}).encode())
    signed = f"{header}.{claims}"
    signature = hmac.new(key.encode(), signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{_b64url(signature)}"


def write_block_policy(bucket: str) -> str:
    """The bucket policy of an over-quota bucket: nobody may put objects into it.

    ``s3:PutObject`` covers PUT, POST, multipart parts and the target of a copy; an explicit
    ``Deny`` wins over the user's ``Allow``. Reading, listing and deleting stay allowed.
    """
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "OverQuota",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": ["s3:PutObject"],
                    "Resource": [f"arn:aws:s3:::{bucket}/*"],
                }
            ],
        }
    )


def tenant_actions(bucket: str) -> list[str]:
    """The tenant identity's actions: objects and listing of its own bucket, nothing else.

    SeaweedFS's action words scoped to one bucket. Not ``Admin`` (bucket create, quota) nor
    ``DeleteBucket``/``PutBucketPolicy``: a tenant that deleted and re-made its bucket would
    have no quota, and one that set its bucket policy could lift the over-quota write block.
    """
    return [f"Read:{bucket}", f"Write:{bucket}", f"List:{bucket}", f"Tagging:{bucket}"]


def new_key_pair() -> tuple[str, str]:
    """A fresh (access key, secret): 20 and 40 characters, as AWS and SeaweedFS make them."""
    return "AK" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30)


@dataclass(frozen=True, slots=True)
class FilerIamTarget:
    """Where the filer's IAM gRPC service is and how to reach it.

    ``address`` is ``host:port`` (the filer's port + 10000). ``certificate``/``key``: the gRPC
    mutual TLS pair of ``security.toml`` (the certificate is its own CA); None for a filer
    without TLS. ``write_key``: ``[jwt.filer_signing]`` key, which the service requires as a
    Bearer token when it is set; empty when the filer has none.
    """

    address: str
    write_key: str = ""
    certificate: Path | None = None
    key: Path | None = None


def _channel(target: FilerIamTarget) -> grpc.aio.Channel:
    # A restarted filer must be found again within a request's timeout, not gRPC's 120 s.
    options: list[tuple[str, Any]] = [
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.min_reconnect_backoff_ms", 200),
    ]
    if target.certificate is None or target.key is None:
        return grpc.aio.insecure_channel(target.address, options=options)
    certificate = target.certificate.read_bytes()
    # SeaweedFS checks no host names; gRPC does: the certificate's own name stands in for it.
    issued = x509.load_pem_x509_certificate(certificate)
    names = issued.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        options.append(("grpc.ssl_target_name_override", str(names[0].value)))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=certificate,
        private_key=target.key.read_bytes(),
        certificate_chain=certificate,
    )
    return grpc.aio.secure_channel(target.address, credentials, options=options)


async def _signed_call(call: Any, request: Any, write_key: str) -> Any:  # noqa: ANN401 (protobuf)
    """One unary call to the filer's or the S3 gateway's gRPC, signed when it takes signed only."""
    metadata: list[tuple[str, str]] = []
    if write_key:
        metadata.append(("authorization", f"Bearer {filer_jwt(write_key)}"))
    try:
        try:
            return await call(request, metadata=metadata, timeout=REQUEST_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
        # A channel whose filer went away fails at once until it has connected again
        # (after a restart, within its reconnect backoff): wait that long, no longer.
        return await call(request, metadata=metadata, timeout=RECONNECT_WAIT_S, wait_for_ready=True)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}:
            raise FilerUnreachableError(exc.code().name) from exc
        raise


class FilerIam:
    """Tenant identities through the filer's IAM gRPC service (``SeaweedIdentityAccessManagement``).

    The filer writes one identity to the credential store (Postgres: one row, ADR 0019) and pushes
    it to every S3 gateway before it answers, so the key works, or is refused, at once. The IAM
    API on the S3 port rewrote every identity on each change; here only the gateway's merge of
    the push copies them in memory (a create 9 ms with no other identity, 69 ms with 100,000:
    bench/README.md).

    One call at a time per driver (``turn``, shared with ``GatewayIdentityCache``): an S3 gateway
    merging two pushes at once can lose one (measured on 4.48). Across replicas nothing serialises
    them, so ``S3Driver`` checks each change with the tenant's keys and pushes it again if a
    gateway missed it.
    """

    def __init__(self, channel: grpc.aio.Channel, write_key: str, turn: asyncio.Lock) -> None:
        # Generated code (seaweed_pb) carries no annotations.
        stub = iam_pb2_grpc.SeaweedIdentityAccessManagementStub
        self._stub = stub(channel)  # type: ignore[no-untyped-call]
        self._write_key = write_key
        self._one_at_a_time = turn

    async def _call(self, method: str, request: Any) -> Any:  # noqa: ANN401 (protobuf messages)
        # Only changes push identities to the gateways; a read needs no turn.
        turn = contextlib.nullcontext() if method == "GetUser" else self._one_at_a_time
        async with turn:
            return await self._send(method, request)

    async def _send(self, method: str, request: Any) -> Any:  # noqa: ANN401 (protobuf messages)
        return await _signed_call(getattr(self._stub, method), request, self._write_key)

    @staticmethod
    def _identity(user: str, bucket: str, access_key: str, secret_key: str) -> Any:  # noqa: ANN401
        return iam_pb2.Identity(
            name=user,
            credentials=[
                iam_pb2.Credential(access_key=access_key, secret_key=secret_key, status="Active")
            ],
            actions=tenant_actions(bucket),
        )

    async def identity(self, user: str) -> iam_pb2.Identity | None:
        """The stored identity; None if there is no such user."""
        try:
            answer = await self._call("GetUser", iam_pb2.GetUserRequest(username=user))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        stored: iam_pb2.Identity = answer.identity
        return stored

    async def keys(self, user: str) -> list[tuple[str, str]] | None:
        """The user's (access key, secret) pairs; None if there is no such user."""
        stored = await self.identity(user)
        if stored is None:
            return None
        return [(c.access_key, c.secret_key) for c in stored.credentials]

    async def create(self, user: str, bucket: str, access_key: str, secret_key: str) -> bool:
        """Create the user with this one key; False (nothing changed) if it exists already."""
        request = iam_pb2.CreateUserRequest(
            identity=self._identity(user, bucket, access_key, secret_key)
        )
        try:
            await self._call("CreateUser", request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                return False
            raise
        return True

    async def replace(self, user: str, bucket: str, access_key: str, secret_key: str) -> bool:
        """Make this the user's one key (every other is dropped); False if there is no user."""
        request = iam_pb2.UpdateUserRequest(
            username=user, identity=self._identity(user, bucket, access_key, secret_key)
        )
        try:
            await self._call("UpdateUser", request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def remove(self, user: str) -> bool:
        """Delete the user with its keys; False if there was none."""
        try:
            await self._call("DeleteUser", iam_pb2.DeleteUserRequest(username=user))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True


class GatewayIdentityCache:
    """The S3 gateway's identities in memory, written as the filer pushes them (ADR 0055).

    Its ``SeaweedS3IamCache`` gRPC service (beside S3, port + 10000) takes the same certificate
    and signed token as the filer's. Nothing here is stored: the gateway's next full reload
    replaces it with the store's identities. ``ReloadWatch`` uses it for its canary and to put
    back what a reload undid. Calls take the driver's one identity turn, as the filer's do.
    """

    _SERVICE = "/messaging_pb.SeaweedS3IamCache/"

    def __init__(self, channel: grpc.aio.Channel, write_key: str, turn: asyncio.Lock) -> None:
        self._put = channel.unary_unary(
            self._SERVICE + "PutIdentity",
            request_serializer=iam_pb2.PutIdentityRequest.SerializeToString,
            response_deserializer=iam_pb2.PutIdentityResponse.FromString,
        )
        self._remove = channel.unary_unary(
            self._SERVICE + "RemoveIdentity",
            request_serializer=iam_pb2.RemoveIdentityRequest.SerializeToString,
            response_deserializer=iam_pb2.RemoveIdentityResponse.FromString,
        )
        self._write_key = write_key
        self._turn = turn

    async def put(self, identity: iam_pb2.Identity) -> None:
        """Hold this identity, replacing the one of the same name."""
        async with self._turn:
            await _signed_call(
                self._put, iam_pb2.PutIdentityRequest(identity=identity), self._write_key
            )

    async def remove(self, user: str) -> None:
        """Forget the identity (nothing if the gateway has none)."""
        async with self._turn:
            await _signed_call(
                self._remove, iam_pb2.RemoveIdentityRequest(username=user), self._write_key
            )


class FilerBuckets:
    """Buckets dropped through the filer's gRPC, as ``weed shell``'s ``s3.bucket.delete`` does.

    Not the S3 ``DeleteBucket``: in 4.48 it also prunes the bucket from every identity's actions,
    reading each identity of the credential store with a query of its own, so one delete cost
    O(tenants) (8 s at 5,000, ADR 0019). Tenant identities here name only their own bucket and are
    deleted before it, so that prune never had anything to do. The S3 gateways learn of the drop
    from the filer's metadata stream, as they do of a ``weed shell`` one.
    """

    def __init__(self, channel: grpc.aio.Channel, write_key: str) -> None:
        # Generated code (seaweed_pb) carries no annotations.
        stub = filer_pb2_grpc.SeaweedFilerStub
        self._stub = stub(channel)  # type: ignore[no-untyped-call]
        self._write_key = write_key

    async def drop(self, bucket: str) -> None:
        """Delete the bucket's directory with every object's data, then its collection.

        A bucket that is not there is fine (a retry, or one deleted before).
        """
        request = filer_pb2.DeleteEntryRequest(
            directory=FILER_BUCKETS_PATH,
            name=guard_bucket_name(bucket),
            is_delete_data=True,
            is_recursive=True,
        )
        answer = await _signed_call(self._stub.DeleteEntry, request, self._write_key)
        if answer.error:
            log.warning("storage_provisioner.bucket.not_dropped", error=answer.error)
            msg = "The S3 server kept the bucket's directory; the bucket was not deleted."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True)
        # SeaweedFS's own order: with the directory gone first, a failed collection drop leaves
        # only volumes nobody names, which a bucket made again would reuse.
        collection = filer_pb2.DeleteCollectionRequest(collection=bucket)
        await _signed_call(self._stub.DeleteCollection, collection, self._write_key)


def figures_by_collection(answer: master_pb2.CollectionStatisticsResponse) -> dict[str, Figures]:
    """Each collection's file, delete and deleted-byte counts, size and volumes (ADR 0057).

    A bucket's collection has its name. Every upload, overwrite, copy and delete moves these
    figures, a volume heartbeat (5 s) later; a collection appears when the master assigns the
    first write, and one nothing was written to is not in the answer.
    """
    return {
        stats.collection: (
            stats.file_count,
            stats.delete_count,
            stats.deleted_byte_count,
            stats.size,
            stats.volume_count,
        )
        for stats in answer.collections
    }


#: A volume id no volume has (the master numbers them up from 1): ``VolumeList`` asked for it
#: lists no volume, only the topology and its disks' counters, which it always sends in full.
NO_VOLUME_ID = 0xFFFF_FFFF


def volume_slots(answer: master_pb2.VolumeListResponse) -> tuple[int, int]:
    """``(used, limit)`` of the volume slots in the master's topology, every disk type together.

    ``limit`` is its ``max_volume_count``: the slots the volume servers it hears from have
    (each one's ``-volume.max``, or with 0 what its free disk holds of volumes). ``used`` is
    that less its ``free_volume_count``: the volumes on the servers' disks (``volume_count``
    less ``remote_volume_count``, those moved to a remote tier, which hold no slot) and their
    EC shards, rounded up to whole volumes (SeaweedFS's ``weed/topology/disk.go``,
    ``DiskUsages.ToDiskInfo``). A new volume holds its slot from the moment the master has
    made it on a volume server, before any heartbeat reports it.
    """
    disks = answer.topology_info.diskInfos.values()
    limit = sum(disk.max_volume_count for disk in disks)
    return limit - sum(disk.free_volume_count for disk in disks), limit


class MasterCollections:
    """The master's figures of every collection, one call for all, and of its volume slots.

    ``CollectionStatistics`` and ``VolumeList``: the master's gRPC takes the servers'
    certificate (mutual TLS) and no token.
    """

    def __init__(self, channel: grpc.aio.Channel) -> None:
        # Generated code (seaweed_pb) carries no annotations.
        stub = master_pb2_grpc.SeaweedStub(channel)  # type: ignore[no-untyped-call]
        self._call = stub.CollectionStatistics
        self._volume_list = stub.VolumeList

    async def figures(self) -> dict[str, Figures]:
        """Each collection's figures; one with no volume yet is left out."""
        answer = await _signed_call(self._call, master_pb2.CollectionStatisticsRequest(), "")
        return figures_by_collection(answer)

    async def volume_slots(self) -> tuple[int, int]:
        """``(used, limit)`` of the volume slots (``volume_slots``): one ``VolumeList``.

        Asked for ``NO_VOLUME_ID``, the answer is a few hundred bytes however many volumes there
        are; unfiltered it lists every one (36 MB at 800,000, SeaweedFS's master.proto says).
        """
        request = master_pb2.VolumeListRequest(volume_id=NO_VOLUME_ID)
        return volume_slots(await _signed_call(self._volume_list, request, ""))


@dataclass(frozen=True, slots=True)
class WeedShell:
    """``weed shell`` against one master and filer: SeaweedFS's admin commands (filer.conf).

    ``config_dir`` holds the ``security.toml`` the servers read (their gRPC certificate among
    it): without it the shell's calls are refused. None leaves weed to its own search (the
    working directory, ``~/.seaweedfs``, ``/etc/seaweedfs``), as when the file is mounted there.
    """

    weed: Path
    master: str
    filer: str
    config_dir: Path | None = None
    timeout: float = SHELL_TIMEOUT_S

    async def run(self, script: str) -> str:
        """Run ``script`` (one command per line) and return what it printed.

        Raises:
            BackendUnavailableError: it did not finish in time (the master or filer is down).
            SpinupError: it failed.
        """
        config = [f"-config_dir={self.config_dir}"] if self.config_dir else []
        process = await asyncio.create_subprocess_exec(
            str(self.weed),
            *config,  # a global flag: before the command
            "shell",
            f"-master={self.master}",
            f"-filer={self.filer}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(script.encode()), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            msg = "The S3 server's master or filer did not answer; nothing was changed."
            raise BackendUnavailableError(msg) from None
        text = output.decode(errors="replace")
        if process.returncode != 0:
            log.warning("storage_provisioner.shell.failed", returncode=process.returncode)
            msg = "The S3 server's admin shell failed."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True)
        return text

    async def drop_read_only(self, bucket: str) -> None:
        """Remove the filer rule that makes ``bucket`` read-only (the quota pass sets it).

        Under the shell lock, like the quota pass: both rewrite the whole filer.conf.
        """
        location = bucket_location(bucket)
        out = await self.run(
            f"lock\nfs.configure -locationPrefix={location} -delete -apply\nunlock\n"
        )
        if location in out:
            log.warning("storage_provisioner.read_only.kept", bucket=bucket)
            msg = "The S3 server kept the bucket read-only."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True)


class BucketQuotas:
    """SeaweedFS's own S3 extension for bucket quotas: ``PUT|GET /<bucket>?seaweedfs-quota``.

    The gateway records the quota on the bucket's filer entry, as ``weed shell``'s
    ``s3.bucket.quota`` does, in one signed request (about 3 ms) instead of a shell process that
    connects to the master and the filer first (0.35 s alone, seconds under concurrency).
    """

    def __init__(
        self, http: aiohttp.ClientSession, *, endpoint: str, region: str, credentials: Credentials
    ) -> None:
        self._http = http
        self._endpoint = endpoint.rstrip("/")
        self._signer = S3SigV4Auth(credentials, "s3", region)

    async def _send(self, method: str, bucket: str, body: bytes = b"") -> tuple[int, bytes]:
        request = AWSRequest(
            method=method,
            url=f"{self._endpoint}/{bucket}?{QUOTA_SUBRESOURCE}",
            data=body,
            headers={"Content-Type": "application/json"} if body else {},
        )
        self._signer.add_auth(request)
        async with self._http.request(
            method, request.url, data=body or None, headers=dict(request.headers.items())
        ) as response:
            return response.status, await response.read()

    @staticmethod
    def _refused(status: int, text: bytes, action: str) -> SpinupError:
        log.warning("storage_provisioner.quota.refused", status=status, body=text[:200])
        msg = f"The S3 server refused the bucket quota ({status}); it was not {action}."
        return SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True)

    async def set(self, bucket: str, size_mb: int) -> None:
        """Record ``size_mb`` as the bucket's quota, enforced by SeaweedFS's quota pass.

        Raises:
            SpinupError: BACKEND_ERROR if refused (a missing bucket too: SeaweedFS 4.48 answers
                that with InternalError).
        """
        body = msgspec.json.encode(
            {"quota_size": size_mb, "quota_unit": "MB", "quota_enabled": True}
        )
        status, text = await self._send("PUT", bucket, body)
        if status != HTTPStatus.NO_CONTENT:
            raise self._refused(status, text, "set")

    async def get(self, bucket: str) -> int | None:
        """The bucket's enforced quota in bytes (None: none, or no such bucket)."""
        status, text = await self._send("GET", bucket)
        if status == HTTPStatus.NOT_FOUND:
            return None
        if status != HTTPStatus.OK:
            raise self._refused(status, text, "read")
        try:
            quota = msgspec.json.decode(text, type=_QuotaAnswer)
        except msgspec.DecodeError:
            raise self._refused(status, text, "read") from None
        return quota.quota_size if quota.quota_enabled and quota.quota_size > 0 else None


class _QuotaAnswer(msgspec.Struct):
    quota_size: int
    quota_enabled: bool


class S3Driver:
    """Creates and deletes tenant buckets, identities and keys with the S3 admin key."""

    kind = ResourceKind.S3

    def __init__(
        self,
        *,
        admin: Minio,
        iam: FilerIam,
        buckets: FilerBuckets,
        quotas: BucketQuotas,
        shell: WeedShell,
        http: aiohttp.ClientSession,
        endpoint: str,
        public_endpoint: str,
        region: str,
        filer_read_key: str,
        gateway: GatewayIdentityCache,
        collections: MasterCollections,
        close: Callable[[], Awaitable[None]],
        measures: UsageMemo | None = None,
    ) -> None:
        self._admin = admin
        self._collections = collections
        self._measures = UsageMemo() if measures is None else measures
        self._iam = iam
        self._buckets = buckets
        self._shell = shell
        self._quotas = quotas
        self._http = http
        self._endpoint = endpoint.rstrip("/")
        self._public_endpoint = public_endpoint
        self._region = region
        self._filer_read_key = filer_read_key
        self._close = close
        self._reloads = ReloadWatch(
            store=iam,
            gateway=gateway,
            key_known=self._key_known,
            canary=(CANARY_PREFIX + secrets.token_hex(8), new_key_pair()),
        )

    @classmethod
    async def connect(
        cls,
        *,
        endpoint: str,
        public_endpoint: str,
        region: str,
        access_key: str,
        secret_key: str,
        shell: WeedShell,
        filer_iam: FilerIamTarget,
        gateway_grpc: str,
        master_grpc: str,
        filer_read_key: str = "",
        measures: UsageMemo | None = None,
    ) -> S3Driver:
        """Open the admin clients (S3 at ``endpoint``, ``http://host:port``; the filer's IAM).

        ``gateway_grpc`` is the S3 gateway's gRPC ``host:port`` (its identity cache) and
        ``master_grpc`` the master's (its collections' figures), both reached with
        ``filer_iam``'s certificate and key. ``filer_read_key`` signs the driver's one filer
        read (filer.conf); empty when the filer takes unsigned reads.
        """
        stack = contextlib.AsyncExitStack()
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        )
        stack.push_async_callback(session.close)
        secure = endpoint.startswith("https://")
        admin = Minio(
            endpoint.split("://", 1)[1],
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            session=session,
        )
        # One channel to the filer for both of its services (identities, bucket drops).
        filer = _channel(filer_iam)
        stack.push_async_callback(filer.close)
        gateway = _channel(dataclasses.replace(filer_iam, address=gateway_grpc))
        stack.push_async_callback(gateway.close)
        master = _channel(dataclasses.replace(filer_iam, address=master_grpc))
        stack.push_async_callback(master.close)
        turn = asyncio.Lock()
        return cls(
            admin=admin,
            iam=FilerIam(filer, filer_iam.write_key, turn),
            gateway=GatewayIdentityCache(gateway, filer_iam.write_key, turn),
            buckets=FilerBuckets(filer, filer_iam.write_key),
            quotas=BucketQuotas(
                session,
                endpoint=endpoint,
                region=region,
                credentials=Credentials(access_key, secret_key),
            ),
            shell=shell,
            http=session,
            endpoint=endpoint,
            public_endpoint=public_endpoint,
            region=region,
            filer_read_key=filer_read_key,
            collections=MasterCollections(master),
            close=stack.aclose,
            measures=measures,
        )

    async def close(self) -> None:
        """Close the admin clients."""
        await self._close()

    @contextlib.asynccontextmanager
    async def _backend_errors(self, action: str) -> AsyncIterator[None]:
        try:
            yield
        except CONNECTION_ERRORS as exc:
            msg = f"The S3 server is unreachable; nothing was {action}."
            raise BackendUnavailableError(msg) from exc
        except S3Error as exc:
            log.warning("storage_provisioner.backend.refused", code=exc.code, action=action)
            msg = f"The S3 server refused the operation ({exc.code}); nothing was {action}."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True) from exc
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            log.warning("storage_provisioner.backend.refused", code=code, action=action)
            msg = f"The S3 server's IAM refused the operation ({code}); nothing was {action}."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True) from exc
        except MinioException as exc:
            log.warning("storage_provisioner.backend.failed", error=type(exc).__name__)
            msg = f"The S3 server answered unexpectedly; nothing was {action}."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True) from exc

    async def _run(self, action: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation``, once more if a connection failed.

        A restarted server leaves dead keep-alive connections in the pools; every operation
        here is idempotent, so one retry on fresh connections is safe.
        """
        async with self._backend_errors(action):
            try:
                return await operation()
            except CONNECTION_ERRORS:
                log.info("storage_provisioner.connection.retried", action=action)
                return await operation()

    async def create(self, resource_id: UUID, limits: S3Limits) -> S3Credentials:
        """Create (or bring up to date) the bucket, its quota and the identity; return a fresh key.

        Created again (a retry, a worker that died midway), it is the same bucket and identity
        with a new key, and every older key is refused.
        """
        bucket, user = bucket_name(resource_id), tenant_name(resource_id)
        access_key, secret_key = new_key_pair()

        async def make() -> None:
            try:
                await self._admin.make_bucket(bucket)
            except S3Error as exc:
                if exc.code != "BucketAlreadyOwnedByYou":
                    raise
            # The quota is in place before the tenant holds a key that can write.
            await self._quotas.set(bucket, limits.storage_mb)
            older: list[tuple[str, str]] = []
            if not await self._iam.create(user, bucket, access_key, secret_key):
                older = await self._iam.keys(user) or []
                await self._put_key(user, bucket, access_key, secret_key)
            await self._settle(
                bucket,
                user,
                valid=[(access_key, secret_key)],
                revoked=older,
                push=lambda: self._put_key(user, bucket, access_key, secret_key),
            )

        await self._run("created", make)
        return self._credentials(bucket, access_key, secret_key)

    async def _put_key(self, user: str, bucket: str, access_key: str, secret_key: str) -> None:
        """Make this key the identity's only one, creating the identity if it went missing."""
        if not await self._iam.replace(user, bucket, access_key, secret_key):
            await self._iam.create(user, bucket, access_key, secret_key)

    async def _key_known(self, bucket: str, access_key: str, secret_key: str) -> bool:
        """Whether the S3 gateway knows this key: a signed ``ListObjectsV2 max-keys=0``.

        Unknown is ``InvalidAccessKeyId``; any other answer (200, or ``NoSuchBucket`` once the
        bucket is gone) means the gateway found the key.
        """
        request = AWSRequest(method="GET", url=f"{self._endpoint}/{bucket}?list-type=2&max-keys=0")
        S3SigV4Auth(Credentials(access_key, secret_key), "s3", self._region).add_auth(request)
        async with self._http.get(request.url, headers=dict(request.headers.items())) as answer:
            body = await answer.read()
        if b"InvalidAccessKeyId" in body:
            return False
        if answer.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            log.warning("storage_provisioner.key_check.failed", status=answer.status)
            msg = "The S3 server did not answer a request signed with the tenant's key."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True)
        return True

    async def _settle(
        self,
        bucket: str,
        user: str,
        *,
        valid: Sequence[tuple[str, str]],
        revoked: Sequence[tuple[str, str]],
        push: Callable[[], Awaitable[object]],
    ) -> None:
        """Check that the S3 gateway took the change; push it again while it has not.

        The filer pushes each identity change to the gateways before it answers, but a gateway
        merging two pushes at once can lose one (SeaweedFS 4.48; FilerIam serialises a driver's
        own calls, not those of other replicas). So the keys that must work are tried, and the
        ones that must not: a key handed out always works, a revoked one is refused. The change
        is noted first, for the check after the gateway's next full reload (``watch_reloads``).
        """
        change = IdentityChange(bucket, user, tuple(valid), tuple(revoked))
        self._reloads.note(change)
        for attempt in range(PUSH_ATTEMPTS):
            if await holds(change, self._key_known):
                return
            log.warning("storage_provisioner.identity.repushed", attempt=attempt + 1)
            await asyncio.sleep(PUSH_PAUSE_S * (attempt + 1))
            await push()
        msg = "The S3 server did not take the bucket's new credentials; try again."
        raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True)

    async def watch_reloads(self, interval_s: float) -> None:
        """Find the S3 gateway's full reloads and put back what they undid, until cancelled.

        Every ``interval_s`` (``storage_provisioner.reloads``, ADR 0055).
        """
        await self._reloads.run(interval_s)

    @property
    def reloads_found(self) -> int:
        """How many full reloads of the S3 gateway's identities ``watch_reloads`` has found."""
        return self._reloads.reloads_found

    def _credentials(self, bucket: str, access_key: str, secret_key: str) -> S3Credentials:
        return S3Credentials(
            endpoint=self._public_endpoint,
            region=self._region,
            bucket=bucket,
            access_key=access_key,
            secret_key=secret_key,
            s3_url=f"s3://{bucket}",
        )

    async def set_limits(self, resource_id: UUID, limits: S3Limits) -> None:
        """Set the bucket's SeaweedFS quota to ``storage_mb``; keys, objects and policy stay.

        Raises:
            SpinupError: NOT_FOUND if the bucket does not exist.
        """
        bucket = guard_bucket_name(bucket_name(resource_id))

        async def apply() -> None:
            # SeaweedFS 4.48 answers a quota for a missing bucket with InternalError: look first.
            if not await self._admin.bucket_exists(bucket):
                msg = "This storage bucket does not exist any more; its quota was not changed."
                raise SpinupError(ErrorCode.NOT_FOUND, msg)
            await self._quotas.set(bucket, limits.storage_mb)

        await self._run("changed", apply)

    async def rotate(self, resource_id: UUID, limits: S3Limits) -> S3Credentials:
        """A new access key for the tenant's identity; every older key is refused at once.

        One ``UpdateUser`` replaces the identity's keys; the filer pushes it to every S3 gateway
        before it answers, and ``_settle`` checks (and pushes again) until the old key gets
        ``InvalidAccessKeyId``. S3 requests are signed one by one, so no connection outlives
        its key. The bucket, its objects, quota and any write block stay.

        Raises:
            SpinupError: NOT_FOUND if the identity does not exist.
        """
        del limits
        bucket = guard_bucket_name(bucket_name(resource_id))
        user = guard_tenant_name(tenant_name(resource_id))
        access_key, secret_key = new_key_pair()
        gone = "The bucket's user does not exist any more; no new key was made."

        async def replace() -> None:
            older = await self._iam.keys(user)
            if older is None or not await self._iam.replace(user, bucket, access_key, secret_key):
                raise SpinupError(ErrorCode.NOT_FOUND, gone)

            async def again() -> None:
                if not await self._iam.replace(user, bucket, access_key, secret_key):
                    raise SpinupError(ErrorCode.NOT_FOUND, gone)

            await self._settle(
                bucket, user, valid=[(access_key, secret_key)], revoked=older, push=again
            )

        await self._run("rotated", replace)
        return self._credentials(bucket, access_key, secret_key)

    async def usage(
        self,
        resource_ids: Sequence[UUID],
        *,
        sweep_id: UUID | None = None,  # noqa: ARG002 (one measure serves any page)
    ) -> dict[UUID, int]:
        """Bytes of the objects in each bucket (ListObjectsV2 sizes); missing buckets left out.

        A bucket whose collection's figures have not moved since its last listing keeps that
        listing's figure (``shared.usage_memo``, ADR 0057); the others are listed, one
        request per 1000 objects, ``USAGE_CONCURRENCY`` buckets at a time. Without the master's
        figures, every bucket is listed.
        """
        buckets = {guard_bucket_name(bucket_name(rid)): rid for rid in resource_ids}
        slots = asyncio.Semaphore(USAGE_CONCURRENCY)
        figures = await self._collection_figures()

        async def measure(bucket: str) -> int | None:
            seen = figures.get(bucket) if figures is not None else None
            standing = None if figures is None else self._measures.standing(bucket, seen)
            if standing is not None:
                USAGE_MEASURES.labels(self.kind.value, USAGE_STANDING).inc()
                return standing
            USAGE_MEASURES.labels(self.kind.value, USAGE_MEASURED).inc()
            async with slots:
                total = await self._listed_size(bucket)
            if total is None:
                self._measures.forget(bucket)
            elif figures is not None:
                self._measures.measured(bucket, seen, total)
            return total

        async def measure_all() -> dict[UUID, int]:
            sizes = await asyncio.gather(*(measure(bucket) for bucket in buckets))
            return {
                rid: size
                for rid, size in zip(buckets.values(), sizes, strict=True)
                if size is not None
            }

        return await self._run("measured", measure_all)

    async def _collection_figures(self) -> dict[str, Figures] | None:
        """The master's figures of every collection; None if it did not give them."""
        try:
            return await self._collections.figures()
        except (grpc.aio.AioRpcError, FilerUnreachableError) as exc:
            # A master that is not the leader, or down: the sweep lists every bucket instead.
            log.warning("storage_provisioner.usage.figures_failed", error=repr(exc))
            return None

    async def _listed_size(self, bucket: str) -> int | None:
        """The sum of the sizes ListObjectsV2 gives for ``bucket``; None if there is no bucket."""
        total = 0
        listing = self._admin.list_objects(bucket, recursive=True).gen_iterator()
        try:
            async with contextlib.aclosing(listing) as objects:
                async for obj in objects:
                    total += obj.size or 0
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                return None
            raise
        return total

    async def block_writes(self, resource_id: UUID, *, usage: int, quota: int) -> None:
        """Refuse every upload into the bucket (``write_block_policy``); reads and deletes work.

        Takes effect with the next request, whatever key or connection sends it. Idempotent
        (the same policy is put again); one level of block whatever ``usage`` and ``quota``
        are. A missing bucket is left alone.
        """
        del usage, quota
        bucket = guard_bucket_name(bucket_name(resource_id))

        async def block() -> None:
            # SeaweedFS answers a policy for a missing bucket with InternalError: look first.
            if not await self._admin.bucket_exists(bucket):
                log.info("storage_provisioner.block.no_bucket")
                return
            await self._admin.set_bucket_policy(bucket, write_block_policy(bucket))

        await self._run("blocked", block)

    async def allow_writes(self, resource_id: UUID) -> None:
        """Remove the write block's bucket policy, and SeaweedFS's read-only flag if it is set.

        The flag is there if SeaweedFS's quota pass saw the bucket over: its figure trails the
        tenant's deletes by a heartbeat, so lifting it here saves the tenant up to a minute of
        ``InternalError``. (Should its figure still be over, e.g. unfinished multipart uploads,
        its next pass sets the flag again.) Harmless when nothing is blocked or no bucket.
        """
        bucket = guard_bucket_name(bucket_name(resource_id))

        async def allow() -> None:
            try:
                await self._admin.delete_bucket_policy(bucket)
            except S3Error as exc:
                if exc.code not in {"NoSuchBucketPolicy", "NoSuchBucket"}:
                    raise
            if bucket_location(bucket) in await self._read_only_locations():
                await self._shell.drop_read_only(bucket)

        await self._run("unblocked", allow)

    async def _read_only_locations(self) -> set[str]:
        """What filer.conf marks read-only: one HTTP GET (signed if a key is set), not a shell."""
        url = f"http://{self._shell.filer}{FILER_CONF_PATH}"
        headers = {}
        if self._filer_read_key:
            headers["Authorization"] = f"Bearer {filer_jwt(self._filer_read_key)}"
        async with self._http.get(url, headers=headers) as response:
            if response.status == HTTPStatus.NOT_FOUND:  # no rule was ever written
                return set()
            text = await response.text()
            if response.status != HTTPStatus.OK:
                log.warning("storage_provisioner.filer_conf.unreadable", status=response.status)
                msg = "The S3 server's filer did not give its configuration."
                raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True)
        try:
            return read_only_locations(text)
        except (ValueError, AttributeError) as exc:
            msg = "The S3 server's filer configuration is not what this driver reads."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True) from exc

    async def delete(self, resource_id: UUID) -> None:
        """Delete the identity and its keys (refused at once), then empty and drop the bucket.

        Then SeaweedFS's read-only rule for the bucket, if its quota pass made one: the pass
        visits only the buckets there are, so the rule of a dropped one stayed in filer.conf for
        ever. After the drop, so no pass can put it back.
        """
        bucket = guard_bucket_name(bucket_name(resource_id))
        user = guard_tenant_name(tenant_name(resource_id))

        async def drop() -> None:
            await self._retire_identity(bucket, user)
            await self._buckets.drop(bucket)
            self._measures.forget(bucket)
            if bucket_location(bucket) in await self._read_only_locations():
                await self._shell.drop_read_only(bucket)

        await self._run("deleted", drop)

    # -- export and suspend (docs/adr/0030, docs/export-formats.md) ----------------------------

    async def suspend(self, resource_id: UUID) -> None:
        """At expiry: the identity and its keys are removed from IAM (refused at once).

        The bucket, its objects, quota and policy stay, for ``export`` (the admin key) and for
        ``delete``, which finds no identity and drops the bucket. S3 requests are signed one by
        one, so no open connection outlives the key. Idempotent; a missing identity is fine.
        """
        bucket = guard_bucket_name(bucket_name(resource_id))
        user = guard_tenant_name(tenant_name(resource_id))
        await self._run("suspended", lambda: self._retire_identity(bucket, user))

    async def _retire_identity(self, bucket: str, user: str) -> None:
        """Remove the identity and check every S3 gateway refuses its keys (pushing again)."""

        async def again() -> None:
            # The store no longer has the user, so a second DeleteUser would push nothing: a
            # throwaway identity made and deleted again makes the filer push the removal.
            if not await self._iam.remove(user):
                await self._iam.create(user, bucket, *new_key_pair())
                await self._iam.remove(user)

        older = await self._iam.keys(user) or []
        await self._iam.remove(user)
        await self._settle(bucket, user, valid=[], revoked=older, push=again)

    def export(self, resource_id: UUID, fmt: str) -> AsyncIterator[bytes]:
        """Every object of the bucket as a tar member at its key, then ``.spinup-metadata.jsonl``.

        Object by object with the admin key: a ``HEAD`` gives its size (the tar header comes
        first), content type and user metadata, then the body is copied through a chunk at a
        time, so memory is one chunk whatever the object's size. The metadata lines (a few
        hundred bytes per object) are spooled to disk past ``_METADATA_SPOOL_BYTES``.
        """
        return chunked(self._export_tar(resource_id, fmt))

    async def _export_tar(self, resource_id: UUID, fmt: str) -> AsyncGenerator[bytes]:
        if fmt not in {f.name for f in EXPORT_FORMATS[ResourceKind.S3]}:
            msg = "A storage bucket exports as tar (its objects, then their metadata)."
            raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
        bucket = guard_bucket_name(bucket_name(resource_id))
        if not await self._run("exported", lambda: self._admin.bucket_exists(bucket)):
            msg = f"The storage bucket of {resource_id} does not exist (it was deleted)."
            raise SpinupError(ErrorCode.NOT_FOUND, msg)
        with tempfile.SpooledTemporaryFile(max_size=_METADATA_SPOOL_BYTES) as metadata:
            async with self._backend_errors("exported"):
                listing = self._admin.list_objects(bucket, recursive=True).gen_iterator()
                async with contextlib.aclosing(listing) as objects:
                    async for listed in objects:
                        name = listed.object_name
                        if name is None or listed.is_dir:
                            continue
                        async for piece in self._export_object(bucket, name, metadata):
                            yield piece
            for piece in spooled_member(_METADATA_MEMBER, metadata):
                yield piece
        yield TAR_END

    async def _export_object(
        self, bucket: str, name: str, metadata: IO[bytes]
    ) -> AsyncIterator[bytes]:
        try:
            stat = await self._admin.stat_object(bucket, name)
        except S3Error as exc:
            if exc.code in {"NoSuchKey", "ResourceNotFound"}:  # deleted since the listing
                return
            raise
        size = stat.size or 0
        modified = stat.last_modified.timestamp() if stat.last_modified else time.time()
        yield tar_header(name, size, modified)
        response = await self._admin.get_object(bucket, name)
        copied = 0
        try:
            async for piece in response.content.iter_chunked(EXPORT_CHUNK_BYTES):
                copied += len(piece)
                if copied > size:
                    break
                yield piece
        finally:
            response.release()
        if copied != size:
            # Overwritten between HEAD and GET: the tar header already promised ``size``.
            msg = f"The object {name!r} changed during the export; export again."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True)
        yield tar_padding(size)
        user_metadata = {
            key.lower().removeprefix("x-amz-meta-"): value
            for key, value in dict(stat.metadata or {}).items()
            if key.lower().startswith("x-amz-meta-")
        }
        line = {
            "key": name,
            "content_type": stat.content_type,
            "metadata": user_metadata,
            "etag": stat.etag,
            "size": size,
        }
        metadata.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")

    async def capacity(self) -> dict[Ceiling, tuple[int, int]]:
        """Volume slots taken against those the volume servers have: one master ``VolumeList``.

        Each bucket is a collection with volumes of its own, one more each time those it has
        fill up (devstack: 16 MB each). With no slot free no bucket gets a new volume: a bucket's
        first upload fails, and so does every write to a bucket whose volumes are full, whatever
        its quota. ``volume_slots`` says what the two figures count.

        The figures are the master's, but tenants use the S3 gateway and the filer behind it, and
        the backend probe asks only this: so it also asks the gateway about a bucket nobody has,
        at the same time, and either failing fails the call.
        """

        async def slots_and_gateway() -> tuple[int, int]:
            slots, _ = await asyncio.gather(
                self._collections.volume_slots(), self._admin.bucket_exists(_NOBODYS_BUCKET)
            )
            return slots

        return {Ceiling.VOLUMES: await self._run("checked", slots_and_gateway)}

    async def exists(self, resource_id: UUID) -> bool:
        """Whether the bucket or the user of this resource exists (for sweeps and tests)."""

        async def look() -> bool:
            return bool(
                await self._admin.bucket_exists(bucket_name(resource_id))
                or await self._iam.keys(tenant_name(resource_id)) is not None
            )

        return await self._run("checked", look)

    async def quota_bytes(self, resource_id: UUID) -> int | None:
        """The quota SeaweedFS enforces on this resource's bucket, in bytes."""
        return await self._run("read", lambda: self._quotas.get(bucket_name(resource_id)))


#: The tar member after the objects that holds each object's content type and user metadata.
_METADATA_MEMBER = ".spinup-metadata.jsonl"
#: Metadata lines kept in memory before they spool to a temporary file (~4000 objects).
_METADATA_SPOOL_BYTES = 1024 * 1024
