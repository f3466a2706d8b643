"""Tenant bucket + IAM user + access key on the S3 server (SeaweedFS), with a bucket quota.

Why care: this module deletes buckets with everything in them and deletes IAM users. Every name
comes from ``bucket_name`` / ``tenant_name`` and passes ``guard_bucket_name`` /
``guard_tenant_name`` before anything is removed.

Isolation rests on the user's inline policy: every object action on its own bucket's objects,
and only list/read on the bucket itself. Not ``s3:*`` on the bucket: with it a tenant may delete
its own bucket and create it again, and the new bucket has no quota. SeaweedFS's IAM accepts only
``Allow`` statements and a few action words (``*``, ``Get*``, ``Put*``, ``List*``, ``Tagging*``,
``DeleteBucket*``...), so the policy is written in those words.

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
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import aiohttp
import botocore.exceptions
import msgspec
import structlog
from aiobotocore.session import get_session
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from miniopy_async.api import Minio
from miniopy_async.deleteobjects import DeleteObject
from miniopy_async.error import MinioException, S3Error

from shared.contracts.errors import (
    BackendUnavailableError,
    DropRefusedError,
    ErrorCode,
    SpinupError,
)
from shared.contracts.kinds import ResourceKind, S3Credentials, S3Limits
from shared.naming import guard_tenant_name, tenant_name

if TYPE_CHECKING:
    from pathlib import Path
    from uuid import UUID

log = structlog.get_logger("storage_provisioner.driver")
T = TypeVar("T")

BUCKET_PREFIX = "t-"
_BUCKET_NAME_RE = re.compile(r"^t-[0-9a-f]{32}$")
POLICY_NAME = "tenant-bucket"
# The query word of SeaweedFS's quota extension to the S3 API (its gateway, 4.x).
QUOTA_SUBRESOURCE = "seaweedfs-quota"
# Objects removed per DeleteObjects request (the S3 maximum).
DELETE_BATCH = 1000
# Buckets listed at once by a usage sweep.
USAGE_CONCURRENCY = 8
# Short, so a server that does not answer becomes a 503 well within the endpoint's timeout.
CONNECT_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 10.0
SHELL_TIMEOUT_S = 15.0
# SeaweedFS's defaults, which devstack keeps: where buckets live in the filer, and the file of
# per-path rules (the quota pass's read-only flags among them).
FILER_BUCKETS_PATH = "/buckets"
FILER_CONF_PATH = "/etc/seaweedfs/filer.conf"
# How long a filer token this driver signs is good for (SeaweedFS's own default lifetime).
FILER_JWT_TTL_S = 10

# What "the S3 server cannot be reached" looks like from each client library.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
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


def guard_bucket_name(name: str) -> str:
    """Return ``name`` if it is a tenant bucket name; refuse anything else.

    Raises:
        DropRefusedError: ``name`` was not made by ``bucket_name``.
    """
    if not _BUCKET_NAME_RE.fullmatch(name):
        msg = f"refusing to delete bucket {name!r}: not a tenant bucket"
        raise DropRefusedError(msg)
    return name


def bucket_policy(bucket: str) -> str:
    """The tenant's inline policy: its bucket's objects, and listing/reading the bucket."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["s3:*"], "Resource": [f"arn:aws:s3:::{bucket}/*"]},
                {
                    "Effect": "Allow",
                    "Action": ["s3:List*", "s3:Get*"],
                    "Resource": [f"arn:aws:s3:::{bucket}"],
                },
            ],
        }
    )


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


class IamAdmin(Protocol):
    """Users, inline policies and access keys. The AWS IAM API here; MinIO's admin API differs."""

    async def ensure_user(self, user: str, *, policy: str) -> bool:
        """Create the user if missing and (re)attach its one inline policy; True if created."""
        ...

    async def create_access_key(self, user: str) -> tuple[str, str]:
        """Make a new access key and return (access key, secret); older keys stay.

        Raises:
            SpinupError: NOT_FOUND if the user does not exist.
        """
        ...

    async def replace_access_key(self, user: str) -> tuple[str, str]:
        """Make a new access key, delete every older one; return (access key, secret).

        Raises:
            SpinupError: NOT_FOUND if the user does not exist.
        """
        ...

    async def remove_user(self, user: str) -> None:
        """Delete the user with its keys and policy; a missing user is fine."""
        ...

    async def user_exists(self, user: str) -> bool:
        """Whether the user exists."""
        ...


class AwsIamAdmin:
    """``IamAdmin`` over the AWS IAM query API (SeaweedFS serves it on the S3 port).

    One call at a time. SeaweedFS runs them one at a time anyway, each change loading, saving
    and reloading every user (a policy change: 31 ms with 10 users, 273 ms with 300; ADR 0014).
    Sent all at once, they queued there past the client's timeout, and each retry added one more:
    128 creates at once through one driver failed 34 times, and none with one call at a time.
    """

    def __init__(self, client: Any) -> None:  # noqa: ANN401 (aiobotocore clients are untyped)
        self._client = client
        self._one_at_a_time = asyncio.Lock()

    async def _call(self, action: str, **params: str) -> dict[str, Any]:
        async with self._one_at_a_time:
            answer: dict[str, Any] = await getattr(self._client, action)(**params)
            return answer

    @staticmethod
    def _no_such_entity(exc: botocore.exceptions.ClientError) -> bool:
        return bool(exc.response.get("Error", {}).get("Code") == "NoSuchEntity")

    async def ensure_user(self, user: str, *, policy: str) -> bool:
        """Create the user if missing and (re)attach its one inline policy; True if created."""
        created = True
        try:
            await self._call("create_user", UserName=user)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "EntityAlreadyExists":
                raise
            created = False
        await self._call(
            "put_user_policy", UserName=user, PolicyName=POLICY_NAME, PolicyDocument=policy
        )
        return created

    async def _key_ids(self, user: str) -> list[str]:
        listed = await self._call("list_access_keys", UserName=user)
        return [str(key["AccessKeyId"]) for key in listed.get("AccessKeyMetadata", [])]

    async def create_access_key(self, user: str) -> tuple[str, str]:
        """Make a new access key and return (access key, secret); older keys stay.

        Raises:
            SpinupError: NOT_FOUND if the user does not exist.
        """
        try:
            created = (await self._call("create_access_key", UserName=user))["AccessKey"]
        except botocore.exceptions.ClientError as exc:
            if not self._no_such_entity(exc):
                raise
            msg = "The bucket's user does not exist any more; no new key was made."
            raise SpinupError(ErrorCode.NOT_FOUND, msg) from exc
        return str(created["AccessKeyId"]), str(created["SecretAccessKey"])

    async def replace_access_key(self, user: str) -> tuple[str, str]:
        """Make a new access key, delete every older one; return (access key, secret).

        Raises:
            SpinupError: NOT_FOUND if the user does not exist.
        """
        access_key, secret = await self.create_access_key(user)
        # Older keys include any the tenant made for itself (IAM lets a user do that).
        for key_id in await self._key_ids(user):
            if key_id != access_key:
                await self._call("delete_access_key", UserName=user, AccessKeyId=key_id)
        return access_key, secret

    async def remove_user(self, user: str) -> None:
        """Delete the user with its keys and policy; a missing user is fine.

        One call: SeaweedFS keeps keys and policy inside the user's identity and drops them with
        it (tested: the keys are refused at once), and its IAM runs one call at a time. (AWS
        would answer ``DeleteConflict`` and want the keys and policy deleted first.)
        """
        try:
            await self._call("delete_user", UserName=user)
        except botocore.exceptions.ClientError as exc:
            if not self._no_such_entity(exc):
                raise

    async def user_exists(self, user: str) -> bool:
        """Whether the user exists."""
        try:
            await self._call("get_user", UserName=user)
        except botocore.exceptions.ClientError as exc:
            if self._no_such_entity(exc):
                return False
            raise
        return True


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
    """Creates and deletes tenant buckets, users and keys with the S3 admin key."""

    kind = ResourceKind.S3

    def __init__(
        self,
        *,
        admin: Minio,
        iam: IamAdmin,
        quotas: BucketQuotas,
        shell: WeedShell,
        http: aiohttp.ClientSession,
        public_endpoint: str,
        region: str,
        filer_read_key: str,
        close: Callable[[], Awaitable[None]],
    ) -> None:
        self._admin = admin
        self._iam = iam
        self._shell = shell
        self._quotas = quotas
        self._http = http
        self._public_endpoint = public_endpoint
        self._region = region
        self._filer_read_key = filer_read_key
        self._close = close

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
        filer_read_key: str = "",
    ) -> S3Driver:
        """Open the admin clients (S3 data plane, IAM) against ``endpoint`` (``http://host:port``).

        ``filer_read_key`` signs the driver's one filer read (filer.conf); empty when the filer
        takes unsigned reads.
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
        iam_client = await stack.enter_async_context(
            get_session().create_client(
                "iam",
                endpoint_url=endpoint,
                region_name=region,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                config=Config(
                    connect_timeout=CONNECT_TIMEOUT_S,
                    read_timeout=REQUEST_TIMEOUT_S,
                    retries={"max_attempts": 1},
                ),
            )
        )
        return cls(
            admin=admin,
            iam=AwsIamAdmin(iam_client),
            quotas=BucketQuotas(
                session,
                endpoint=endpoint,
                region=region,
                credentials=Credentials(access_key, secret_key),
            ),
            shell=shell,
            http=session,
            public_endpoint=public_endpoint,
            region=region,
            filer_read_key=filer_read_key,
            close=stack.aclose,
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
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "unknown"))
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
        """Create (or bring up to date) the bucket, its quota and the user; return a fresh key."""
        bucket, user = bucket_name(resource_id), tenant_name(resource_id)

        async def make() -> tuple[str, str]:
            try:
                await self._admin.make_bucket(bucket)
            except S3Error as exc:
                if exc.code != "BucketAlreadyOwnedByYou":
                    raise
            # The quota is in place before the tenant holds a key that can write.
            await self._quotas.set(bucket, limits.storage_mb)
            if await self._iam.ensure_user(user, policy=bucket_policy(bucket)):
                # A user made just now has no older key to delete: one IAM call less, and
                # SeaweedFS runs IAM calls one at a time.
                return await self._iam.create_access_key(user)
            return await self._iam.replace_access_key(user)

        access_key, secret_key = await self._run("created", make)
        return self._credentials(bucket, access_key, secret_key)

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
        """A new access key for the tenant's user; every older key is deleted.

        The old key is refused (``InvalidAccessKeyId``) by the next request: the IAM API runs
        inside the S3 gateway, which drops a deleted key from its identities before answering
        (measured: no request got through after ``DeleteAccessKey`` returned). S3 requests are
        signed one by one, so no connection outlives its key. The bucket, its objects, quota
        and any write block stay.

        Raises:
            SpinupError: NOT_FOUND if the user does not exist.
        """
        del limits
        bucket = guard_bucket_name(bucket_name(resource_id))
        user = guard_tenant_name(tenant_name(resource_id))

        access_key, secret_key = await self._run(
            "rotated", lambda: self._iam.replace_access_key(user)
        )
        return self._credentials(bucket, access_key, secret_key)

    async def usage(self, resource_ids: Sequence[UUID]) -> dict[UUID, int]:
        """Bytes of the objects in each bucket (ListObjectsV2 sizes); missing buckets left out.

        One listing request per 1000 objects, ``USAGE_CONCURRENCY`` buckets at a time.
        """
        buckets = {guard_bucket_name(bucket_name(rid)): rid for rid in resource_ids}
        slots = asyncio.Semaphore(USAGE_CONCURRENCY)

        async def measure(bucket: str) -> int | None:
            total = 0
            async with slots:
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

        async def measure_all() -> dict[UUID, int]:
            sizes = await asyncio.gather(*(measure(bucket) for bucket in buckets))
            return {
                rid: size
                for rid, size in zip(buckets.values(), sizes, strict=True)
                if size is not None
            }

        return await self._run("measured", measure_all)

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
        """Delete the user and its keys (dead at once), then empty and drop the bucket."""
        bucket = guard_bucket_name(bucket_name(resource_id))
        user = guard_tenant_name(tenant_name(resource_id))

        async def drop() -> None:
            await self._iam.remove_user(user)
            await self._empty_and_remove(bucket)

        await self._run("deleted", drop)

    async def _next_batch(self, bucket: str) -> list[DeleteObject] | None:
        """Up to ``DELETE_BATCH`` object names of ``bucket`` (None: there is no such bucket)."""
        batch: list[DeleteObject] = []
        listing = self._admin.list_objects(bucket, recursive=True).gen_iterator()
        try:
            async with contextlib.aclosing(listing) as objects:
                async for obj in objects:
                    if obj.object_name is not None:
                        batch.append(DeleteObject(obj.object_name))
                    if len(batch) >= DELETE_BATCH:
                        break
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                return None
            raise
        return batch

    async def _empty_and_remove(self, bucket: str) -> None:
        while batch := await self._next_batch(bucket):
            errors = [error async for error in self._admin.remove_objects(bucket, batch)]
            if errors:
                log.warning("storage_provisioner.objects.not_deleted", count=len(errors))
                msg = "The S3 server kept some objects; the bucket was not deleted."
                raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True)
        try:
            await self._admin.remove_bucket(bucket)
        except S3Error as exc:
            if exc.code != "NoSuchBucket":
                raise

    async def exists(self, resource_id: UUID) -> bool:
        """Whether the bucket or the user of this resource exists (for sweeps and tests)."""

        async def look() -> bool:
            return bool(
                await self._admin.bucket_exists(bucket_name(resource_id))
                or await self._iam.user_exists(tenant_name(resource_id))
            )

        return await self._run("checked", look)

    async def quota_bytes(self, resource_id: UUID) -> int | None:
        """The quota SeaweedFS enforces on this resource's bucket, in bytes."""
        return await self._run("read", lambda: self._quotas.get(bucket_name(resource_id)))
