"""The storage driver against the real SeaweedFS: idempotence, guard, quota, key rotation."""

from __future__ import annotations

import asyncio
import io
import os
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from miniopy_async.api import Minio
from miniopy_async.error import S3Error

from shared.contracts.errors import DropRefusedError
from shared.contracts.kinds import S3Credentials, S3Limits
from storage_provisioner.driver import S3Driver, bucket_name, guard_bucket_name

pytestmark = pytest.mark.integration

LIMITS = S3Limits(storage_mb=3)


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def tenant_client(creds: S3Credentials, session: aiohttp.ClientSession) -> Minio:
    return Minio(
        creds.endpoint.removeprefix("http://"),
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        secure=False,
        region=creds.region,
        session=session,
    )


async def test_create_twice_gives_one_bucket_and_only_the_newest_key_works(
    s3_driver: S3Driver, http_session: aiohttp.ClientSession
) -> None:
    rid = uuid.uuid4()
    first = await s3_driver.create(rid, LIMITS)
    await tenant_client(first, http_session).put_object(first.bucket, "kept", io.BytesIO(b"1"), 1)
    second = await s3_driver.create(rid, LIMITS)
    assert first.bucket == second.bucket == bucket_name(rid)
    assert second.s3_url == f"s3://{second.bucket}"
    assert first.access_key != second.access_key
    names = [
        o.object_name async for o in tenant_client(second, http_session).list_objects(second.bucket)
    ]
    assert names == ["kept"]
    with pytest.raises(S3Error) as refused:
        await tenant_client(first, http_session).list_objects(first.bucket)
    assert refused.value.code == "InvalidAccessKeyId"
    await s3_driver.delete(rid)


async def test_delete_is_idempotent_and_removes_bucket_objects_and_user(
    s3_driver: S3Driver, http_session: aiohttp.ClientSession
) -> None:
    rid = uuid.uuid4()
    creds = await s3_driver.create(rid, LIMITS)
    tenant = tenant_client(creds, http_session)
    for i in range(5):
        await tenant.put_object(creds.bucket, f"dir/{i}", io.BytesIO(b"x"), 1)
    assert await s3_driver.exists(rid)
    await s3_driver.delete(rid)
    await s3_driver.delete(rid)
    assert not await s3_driver.exists(rid)


async def test_delete_of_something_never_created_succeeds(s3_driver: S3Driver) -> None:
    rid = uuid.uuid4()
    await s3_driver.delete(rid)
    assert not await s3_driver.exists(rid)


@pytest.mark.parametrize(
    "name", ["spinup", "t_" + "0" * 32, "t-" + "0" * 31, "t-" + "A" * 32, "t-" + "0" * 32 + "x", ""]
)
def test_guard_refuses_anything_but_a_tenant_bucket(name: str) -> None:
    with pytest.raises(DropRefusedError):
        guard_bucket_name(name)


def test_guard_accepts_the_names_bucket_name_makes() -> None:
    rid = uuid.uuid4()
    assert guard_bucket_name(bucket_name(rid)) == f"t-{rid.hex}"


async def test_quota_from_the_limits_is_recorded_in_seaweedfs(s3_driver: S3Driver) -> None:
    rid = uuid.uuid4()
    await s3_driver.create(rid, S3Limits(storage_mb=7))
    assert await s3_driver.quota_bytes(rid) == 7 * 1024 * 1024
    await s3_driver.create(rid, S3Limits(storage_mb=9))
    assert await s3_driver.quota_bytes(rid) == 9 * 1024 * 1024
    await s3_driver.delete(rid)
    assert await s3_driver.quota_bytes(rid) is None


async def test_writes_beyond_the_quota_are_refused_once_enforced(
    s3_driver: S3Driver, http_session: aiohttp.ClientSession
) -> None:
    rid = uuid.uuid4()
    creds = await s3_driver.create(rid, S3Limits(storage_mb=1))
    tenant = tenant_client(creds, http_session)
    # Random: SeaweedFS counts the compressed size of what it stores.
    chunk = os.urandom(1024 * 1024)
    for i in range(2):
        await tenant.put_object(creds.bucket, f"big{i}", io.BytesIO(chunk), len(chunk))
    # Usage reaches the master with the volume server's heartbeat, then a sweep (this one or the
    # worker's own) makes the bucket read-only.
    deadline = time.monotonic() + 30
    refused: S3Error | None = None
    while refused is None:
        assert time.monotonic() < deadline, "writes beyond the quota were still accepted"
        await s3_driver.enforce_quotas()
        try:
            await tenant.put_object(creds.bucket, "more", io.BytesIO(b"x"), 1)
        except S3Error as exc:
            refused = exc
        else:
            await asyncio.sleep(1)
    # SeaweedFS refuses with a generic error, not a quota-specific one.
    assert refused.code == "InternalError"
    response = await tenant.get_object(creds.bucket, "big0")
    assert await response.read() == chunk
    response.release()
    await s3_driver.delete(rid)
    assert not await s3_driver.exists(rid)
