"""A user's view: S3 buckets over HTTP, used with miniopy-async, and every way out of one tried."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import botocore.exceptions
import httpx
import pytest
from aiobotocore.session import get_session
from miniopy_async.api import Minio
from miniopy_async.commonconfig import CopySource
from miniopy_async.error import S3Error

from devstack.network import tenant_host
from devstack.stack import Stack
from shared.testing.polling import eventually
from storage_provisioner.driver import S3Driver
from tests.e2e.conftest import SHORT_TTL_S, new_resource, s3_client

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
DENIED = {"AccessDenied"}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


async def read(client: Minio, bucket: str, name: str) -> bytes:
    response = await client.get_object(bucket, name)
    try:
        return bytes(await response.read())
    finally:
        response.release()


async def put(client: Minio, bucket: str, name: str, data: bytes) -> None:
    await client.put_object(bucket, name, io.BytesIO(data), len(data))


async def names(client: Minio, bucket: str) -> list[str]:
    return [str(obj.object_name) async for obj in client.list_objects(bucket, recursive=True)]


async def s3_error_code(attempt: Awaitable[object]) -> str:
    """The S3 error code ``attempt`` fails with (the test fails if it succeeds)."""
    with pytest.raises(S3Error) as refused:
        await attempt
    return str(refused.value.code)


async def test_new_bucket_answers_with_everything_a_user_needs(http: httpx.AsyncClient) -> None:
    body = await new_resource(http, "storage")
    assert body["ok"] is True
    assert body["kind"] == "s3"
    assert body["token"].startswith("spn_")
    assert set(body["limits"]) == {"storage_mb", "expires_in"}
    creds = body["credentials"]
    assert creds["type"] == "s3"
    assert creds["bucket"] == "t-" + uuid.UUID(body["id"]).hex
    assert creds["s3_url"] == f"s3://{creds['bucket']}"
    # The tenant address (the engine bridge's): this machine and stack containers reach it.
    assert creds["endpoint"].startswith(f"http://{tenant_host()}:")
    assert creds["region"]
    assert creds["access_key"]
    assert creds["secret_key"]


async def test_two_buckets_each_work_and_keep_their_own_objects(
    http: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    a, b = await new_resource(http, "storage"), await new_resource(http, "storage")
    for tenant, value in ((a, b"from a"), (b, b"from b")):
        client, bucket = s3_client(tenant, session), tenant["credentials"]["bucket"]
        await put(client, bucket, "notes/1.txt", value)
    for tenant, value in ((a, b"from a"), (b, b"from b")):
        client, bucket = s3_client(tenant, session), tenant["credentials"]["bucket"]
        assert await read(client, bucket, "notes/1.txt") == value
        assert await names(client, bucket) == ["notes/1.txt"]
        await client.remove_object(bucket, "notes/1.txt")
        assert await names(client, bucket) == []


async def test_tenant_cannot_read_write_list_or_remove_another_tenants_bucket(
    http: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    a, b = await new_resource(http, "storage"), await new_resource(http, "storage")
    mine, theirs = a["credentials"]["bucket"], b["credentials"]["bucket"]
    await put(s3_client(b, session), theirs, "secret.txt", b"b's data")
    tenant = s3_client(a, session)
    attempts: dict[str, Callable[[], Awaitable[object]]] = {
        "get": lambda: read(tenant, theirs, "secret.txt"),
        "stat": lambda: tenant.stat_object(theirs, "secret.txt"),
        "put": lambda: put(tenant, theirs, "planted.txt", b"a was here"),
        "list": lambda: names(tenant, theirs),
        "delete object": lambda: tenant.remove_object(theirs, "secret.txt"),
        "copy out of it": lambda: tenant.copy_object(
            mine, "stolen.txt", CopySource(theirs, "secret.txt")
        ),
        "remove bucket": lambda: tenant.remove_bucket(theirs),
        "read its policy": lambda: tenant.get_bucket_policy(theirs),
    }
    refused = {what: await s3_error_code(attempt()) for what, attempt in attempts.items()}
    assert refused == dict.fromkeys(attempts, "AccessDenied")
    owner = s3_client(b, session)
    assert await read(owner, theirs, "secret.txt") == b"b's data"
    assert await names(owner, theirs) == ["secret.txt"]


async def test_tenant_sees_only_its_own_bucket_and_cannot_make_or_replace_buckets(
    http: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    a, b = await new_resource(http, "storage"), await new_resource(http, "storage")
    tenant, mine = s3_client(a, session), a["credentials"]["bucket"]
    await put(tenant, mine, "keep.txt", b"1")
    listed = [bucket.name for bucket in await tenant.list_buckets()]
    assert listed == [mine]
    assert b["credentials"]["bucket"] not in listed
    assert await s3_error_code(tenant.make_bucket("t-" + uuid.uuid4().hex)) in DENIED
    # Deleting and re-making its own bucket would drop the quota SeaweedFS keeps on it.
    assert await s3_error_code(tenant.remove_bucket(mine)) in DENIED
    public = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{mine}/*"],
            }
        ],
    }
    assert await s3_error_code(tenant.set_bucket_policy(mine, json.dumps(public))) in DENIED
    assert await names(tenant, mine) == ["keep.txt"]


async def test_wrong_or_unknown_keys_are_refused(
    http: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    a = await new_resource(http, "storage")
    bucket = a["credentials"]["bucket"]
    wrong_secret = s3_client(a, session, secret="x" * 40)
    assert await s3_error_code(names(wrong_secret, bucket)) == "SignatureDoesNotMatch"
    stranger = Minio(
        a["credentials"]["endpoint"].removeprefix("http://"),
        access_key="AKIANOBODY0000000000",
        secret_key="x" * 40,
        secure=False,
        region=a["credentials"]["region"],
        session=session,
    )
    assert await s3_error_code(names(stranger, bucket)) == "InvalidAccessKeyId"
    anonymous = Minio(
        a["credentials"]["endpoint"].removeprefix("http://"), secure=False, session=session
    )
    assert await s3_error_code(names(anonymous, bucket)) == "AccessDenied"


async def test_tenant_cannot_use_the_iam_api_on_anyone_else(
    http: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    a, b = await new_resource(http, "storage"), await new_resource(http, "storage")
    creds = a["credentials"]
    other_user = "t_" + uuid.UUID(b["id"]).hex
    own_user = "t_" + uuid.UUID(a["id"]).hex
    grab_all = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*"]}],
        }
    )
    async with get_session().create_client(
        "iam",
        endpoint_url=creds["endpoint"],
        region_name=creds["region"],
        aws_access_key_id=creds["access_key"],
        aws_secret_access_key=creds["secret_key"],
    ) as iam:
        attempts = {
            "list users": iam.list_users,
            "create user": lambda: iam.create_user(UserName="intruder"),
            "widen own policy": lambda: iam.put_user_policy(
                UserName=own_user, PolicyName="x", PolicyDocument=grab_all
            ),
            "key for another": lambda: iam.create_access_key(UserName=other_user),
            "list another's keys": lambda: iam.list_access_keys(UserName=other_user),
            "delete another": lambda: iam.delete_user(UserName=other_user),
        }
        for attempt in attempts.values():
            with pytest.raises(botocore.exceptions.ClientError):
                await attempt()
    # B's user, key and bucket are untouched.
    other = s3_client(b, session)
    await put(other, b["credentials"]["bucket"], "still-mine", b"1")


async def test_plan_quota_is_recorded_and_writes_beyond_it_are_refused(
    http: httpx.AsyncClient, session: aiohttp.ClientSession, s3_driver: S3Driver
) -> None:
    body = await new_resource(http, "storage")
    quota_mb = body["limits"]["storage_mb"]
    assert await s3_driver.quota_bytes(uuid.UUID(body["id"])) == quota_mb * MIB
    tenant, bucket = s3_client(body, session), body["credentials"]["bucket"]
    # Random bytes: SeaweedFS compresses what it stores and counts the compressed size. 1 MiB per
    # object: aiohttp warns about (and tests treat as an error) larger raw bodies.
    chunk = os.urandom(MIB)
    for i in range(quota_mb + 1):
        await put(tenant, bucket, f"fill/{i}", chunk)
    # Quotas hold after the fact: the usage sweep blocks uploads with a bucket policy
    # (AccessDenied), or SeaweedFS makes the bucket read-only once it has counted the usage
    # (InternalError), whichever comes first. Until then writes still land.
    deadline = time.monotonic() + 40
    refusal = None
    while refusal is None:
        assert time.monotonic() < deadline, "writes beyond the quota were still accepted"
        try:
            await put(tenant, bucket, "one-more", b"x")
        except S3Error as exc:
            refusal = exc.code
        else:
            await asyncio.sleep(1)
    assert refusal in {"AccessDenied", "InternalError"}
    assert await read(tenant, bucket, "fill/0") == chunk
    assert (await http.delete(f"/resources/{body['token']}")).status_code == 200


async def test_show_returns_status_and_the_bucket(http: httpx.AsyncClient) -> None:
    body = await new_resource(http, "storage", json={"name": "assets"})
    shown = (await http.get(f"/resources/{body['token']}")).json()
    assert shown["status"] == "active"
    assert shown["kind"] == "s3"
    assert shown["name"] == "assets"
    assert shown["id"] == body["id"]


async def test_delete_stops_the_key_at_once_and_removes_bucket_and_user(
    http: httpx.AsyncClient, session: aiohttp.ClientSession, s3_driver: S3Driver
) -> None:
    body = await new_resource(http, "storage")
    tenant, bucket = s3_client(body, session), body["credentials"]["bucket"]
    for i in range(3):
        await put(tenant, bucket, f"doc/{i}", b"data")
    response = await http.delete(f"/resources/{body['token']}")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "id": body["id"], "status": "deleted"}
    assert await s3_error_code(names(tenant, bucket)) == "InvalidAccessKeyId"
    assert await s3_error_code(put(tenant, bucket, "after", b"x")) == "InvalidAccessKeyId"
    assert not await s3_driver.exists(uuid.UUID(body["id"]))
    assert (await http.get(f"/resources/{body['token']}")).status_code == 404
    assert (await http.delete(f"/resources/{body['token']}")).status_code == 404


async def test_expired_bucket_is_reaped_with_its_user(
    http: httpx.AsyncClient,
    short_ttl_http: httpx.AsyncClient,
    session: aiohttp.ClientSession,
    s3_driver: S3Driver,
) -> None:
    body = await new_resource(short_ttl_http, "storage")
    assert body["limits"]["expires_in"] <= SHORT_TTL_S
    tenant, bucket = s3_client(body, session), body["credentials"]["bucket"]
    await put(tenant, bucket, "short-lived", b"x")

    async def gone() -> bool:
        return (await http.get(f"/resources/{body['token']}")).status_code == 410

    assert await eventually(gone), "the reaper did not expire the bucket"
    assert not await s3_driver.exists(uuid.UUID(body["id"]))
    assert await s3_error_code(names(tenant, bucket)) == "InvalidAccessKeyId"


async def test_s3_server_down_gives_503_and_recovery_after(
    stack: Stack, http: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    before = await new_resource(http, "storage")
    await put(s3_client(before, session), before["credentials"]["bucket"], "kept", b"before")
    stack.stop_server("seaweed")
    try:
        response = await http.post("/storage/new")
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "backend_unavailable"
    finally:
        stack.start_server("seaweed")
    # The worker's pooled connections died with the server; it reconnects on its own.
    after = await new_resource(http, "storage")
    await put(s3_client(after, session), after["credentials"]["bucket"], "ok", b"1")
    # The object and the key made before the outage survived the kill.
    assert await read(s3_client(before, session), before["credentials"]["bucket"], "kept") == (
        b"before"
    )
