"""The storage driver against the real SeaweedFS: idempotence, guard, quota, key rotation,
usage and the over-quota write block, as a tenant with its own key sees them."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import time
import tomllib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from http import HTTPStatus

import aiohttp
import pytest
from miniopy_async.api import Minio
from miniopy_async.commonconfig import CopySource
from miniopy_async.deleteobjects import DeleteObject
from miniopy_async.error import S3Error

from devstack.seaweed import MASTER_TOML, VOLUME_SLOTS
from devstack.stack import Stack
from shared.contracts.errors import (
    BackendUnavailableError,
    DropRefusedError,
    ErrorCode,
    SpinupError,
)
from shared.contracts.kinds import S3Credentials, S3Limits
from shared.lifecycle import Ceiling
from shared.runtime import in_background
from shared.usage_memo import UsageMemo
from storage_provisioner.driver import (
    FILER_CONF_PATH,
    S3Driver,
    WeedShell,
    bucket_location,
    bucket_name,
    filer_jwt,
    guard_bucket_name,
    read_only_locations,
)
from tests.conftest import connect_s3_driver, usage_measures_since

pytestmark = pytest.mark.integration

LIMITS = S3Limits(storage_mb=3)
MIB = 1024 * 1024


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def seaweedfs_quota_pass(admin_shell: WeedShell) -> Callable[[], Awaitable[str]]:
    """Run SeaweedFS's own quota pass now, as its S3 gateway does about once a minute."""

    async def run_pass() -> str:
        return await admin_shell.run("lock\ns3.bucket.quota.enforce -apply\nunlock\n")

    return run_pass


async def quotas_in_bucket_list(shell: WeedShell) -> dict[str, int]:
    """Every bucket's quota in bytes, as ``weed shell``'s ``s3.bucket.list`` prints them."""
    quotas = {}
    for line in (await shell.run("s3.bucket.list\n")).splitlines():
        fields = line.split()
        for quota in (f.removeprefix("quota:") for f in fields if f.startswith("quota:")):
            quotas[fields[0]] = int(quota)
    return quotas


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


async def test_concurrent_creates_each_get_their_own_quota_as_seaweedfs_lists_it(
    s3_driver: S3Driver, admin_shell: WeedShell
) -> None:
    """Twelve creates at once all succeed, each bucket with the quota it asked for, as the
    driver reads it and as SeaweedFS's admin shell lists it; then twelve changes at once."""
    limits = [S3Limits(storage_mb=3 + i) for i in range(12)]
    rids = [uuid.uuid4() for _ in limits]
    made = await asyncio.gather(
        *(s3_driver.create(r, lim) for r, lim in zip(rids, limits, strict=True))
    )
    try:
        assert [m.bucket for m in made] == [bucket_name(r) for r in rids]
        expected = {
            bucket_name(r): lim.storage_mb * MIB for r, lim in zip(rids, limits, strict=True)
        }
        assert [await s3_driver.quota_bytes(r) for r in rids] == list(expected.values())
        listed = await quotas_in_bucket_list(admin_shell)
        assert {bucket: listed.get(bucket) for bucket in expected} == expected

        await asyncio.gather(
            *(s3_driver.set_limits(r, S3Limits(storage_mb=20 + i)) for i, r in enumerate(rids))
        )
        listed = await quotas_in_bucket_list(admin_shell)
        assert [listed.get(bucket_name(r)) for r in rids] == [(20 + i) * MIB for i in range(12)]
    finally:
        await asyncio.gather(*(s3_driver.delete(r) for r in rids))


async def key_works(creds: S3Credentials, session: aiohttp.ClientSession) -> bool:
    """Whether a listing of the bucket with this key succeeds (False: the key is unknown)."""
    try:
        await object_names(tenant_client(creds, session), creds.bucket)
    except S3Error as exc:
        if exc.code != "InvalidAccessKeyId":
            raise
        return False
    return True


async def create_and_try(
    driver: S3Driver, rid: uuid.UUID, session: aiohttp.ClientSession
) -> tuple[S3Credentials, bool]:
    creds = await driver.create(rid, LIMITS)
    return creds, await key_works(creds, session)


async def rotate_and_try(
    driver: S3Driver, rid: uuid.UUID, old: S3Credentials, session: aiohttp.ClientSession
) -> tuple[S3Credentials, bool, bool]:
    new = await driver.rotate(rid, LIMITS)
    return new, await key_works(new, session), await key_works(old, session)


async def keys_work(
    pairs: Sequence[tuple[S3Credentials, S3Credentials | None]], session: aiohttp.ClientSession
) -> list[tuple[bool, bool]]:
    """For each (key, older key or None): whether each works, in order."""
    return [
        (await key_works(key, session), older is not None and await key_works(older, session))
        for key, older in pairs
    ]


# The drivers' watch for the S3 gateway's full reloads (ADR 0055) probes this often here, and
# puts back what a reload undid well within REPAIR_WAIT_S.
WATCH_INTERVAL_S = 0.2
REPAIR_WAIT_S = 2.0


async def right_or_put_back(
    drivers: Sequence[S3Driver],
    reloads_before: int,
    seen: list[tuple[bool, bool]],
    again: Callable[[], Awaitable[list[tuple[bool, bool]]]],
    expected: list[tuple[bool, bool]],
) -> None:
    """``seen`` is ``expected`` on the very next request, unless the gateway reloaded every
    identity in between (once a minute, ADR 0055): then ``again()`` is, once the watch has put
    back what the reload undid."""
    if seen == expected:
        return
    await asyncio.sleep(REPAIR_WAIT_S)
    assert sum(d.reloads_found for d in drivers) > reloads_before, seen
    assert await again() == expected


async def test_64_creates_at_once_through_one_driver_each_give_a_key_that_works_at_once(
    s3_driver: S3Driver, http_session: aiohttp.ClientSession
) -> None:
    """No identity push is lost (ADR 0019): each key works on the request right after its create,
    and each old key is refused on the request right after its rotate, all 64 at once."""
    rids = [uuid.uuid4() for _ in range(64)]
    drivers = [s3_driver]
    async with in_background(s3_driver.watch_reloads(WATCH_INTERVAL_S)):
        reloads = s3_driver.reloads_found
        try:
            made = await asyncio.gather(*(create_and_try(s3_driver, r, http_session) for r in rids))
            keys = [(creds, None) for creds, _ in made]

            async def again() -> list[tuple[bool, bool]]:
                return await keys_work(keys, http_session)

            working = [(True, False)] * 64
            seen = [(works, False) for _, works in made]
            await right_or_put_back(drivers, reloads, seen, again, working)
            await right_or_put_back(drivers, reloads, await again(), again, working)
            rotated = await asyncio.gather(
                *(
                    rotate_and_try(s3_driver, r, creds, http_session)
                    for r, (creds, _) in zip(rids, made, strict=True)
                )
            )
            keys = [(new, old) for (new, _, _), (old, _) in zip(rotated, made, strict=True)]
            seen = [(works, lingers) for _, works, lingers in rotated]
            await right_or_put_back(drivers, reloads, seen, again, working)
        finally:
            await asyncio.gather(*(s3_driver.delete(r) for r in rids))
        keys = [(creds, None) for creds, _ in made]
        refused = [(False, False)] * 64
        # Still watching: a reload can bring a deleted identity back too.
        await right_or_put_back(drivers, reloads, await again(), again, refused)


async def test_two_drivers_at_once_like_two_replicas_still_give_keys_that_work_at_once(
    s3_driver: S3Driver,
    env: dict[str, str],
    admin_shell: WeedShell,
    http_session: aiohttp.ClientSession,
) -> None:
    """Nothing serialises two replicas' identity calls: each checks its change and pushes again."""
    other = await connect_s3_driver(env, admin_shell)
    rids = [uuid.uuid4() for _ in range(32)]
    drivers = [s3_driver, other] * 16
    watching = contextlib.AsyncExitStack()
    for driver in (s3_driver, other):
        await watching.enter_async_context(in_background(driver.watch_reloads(WATCH_INTERVAL_S)))
    reloads = s3_driver.reloads_found + other.reloads_found
    keys: list[tuple[S3Credentials, S3Credentials | None]] = []

    async def again() -> list[tuple[bool, bool]]:
        return await keys_work(keys, http_session)

    try:
        made = await asyncio.gather(
            *(create_and_try(d, r, http_session) for d, r in zip(drivers, rids, strict=True))
        )
        keys = [(creds, None) for creds, _ in made]
        working = [(True, False)] * 32
        seen = [(works, False) for _, works in made]
        await right_or_put_back([s3_driver, other], reloads, seen, again, working)
        rotated = await asyncio.gather(
            *(
                rotate_and_try(d, r, creds, http_session)
                for d, r, (creds, _) in zip(drivers, rids, made, strict=True)
            )
        )
        keys = [(new, old) for (new, _, _), (old, _) in zip(rotated, made, strict=True)]
        seen = [(works, lingers) for _, works, lingers in rotated]
        await right_or_put_back([s3_driver, other], reloads, seen, again, working)
    finally:
        await asyncio.gather(*(d.delete(r) for d, r in zip(drivers, rids, strict=True)))
        await watching.aclose()
        await other.close()


async def test_delete_is_idempotent_and_removes_bucket_objects_and_user(
    s3_driver: S3Driver, http_session: aiohttp.ClientSession, admin_shell: WeedShell
) -> None:
    rid = uuid.uuid4()
    creds = await s3_driver.create(rid, LIMITS)
    tenant = tenant_client(creds, http_session)
    for i in range(5):
        await tenant.put_object(creds.bucket, f"dir/{i}", io.BytesIO(b"x"), 1)
    assert creds.bucket in await admin_shell.run("collection.list")
    assert await s3_driver.exists(rid)
    await s3_driver.delete(rid)
    # Dropped through the filer (not S3's DeleteBucket): the volumes of its data went too.
    assert creds.bucket not in await admin_shell.run("collection.list")
    # The identity went in one call, its key with it: refused at once, on any bucket.
    assert await refusal(tenant.list_buckets()) == "InvalidAccessKeyId"
    assert await refusal(tenant.make_bucket(bucket_name(uuid.uuid4()))) == "InvalidAccessKeyId"
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
    s3_driver: S3Driver,
    http_session: aiohttp.ClientSession,
    seaweedfs_quota_pass: Callable[[], Awaitable[str]],
) -> None:
    rid = uuid.uuid4()
    creds = await s3_driver.create(rid, S3Limits(storage_mb=1))
    tenant = tenant_client(creds, http_session)
    # Random: SeaweedFS counts the compressed size of what it stores.
    chunk = os.urandom(1024 * 1024)
    for i in range(2):
        await tenant.put_object(creds.bucket, f"big{i}", io.BytesIO(chunk), len(chunk))
    # Usage reaches the master with the volume server's heartbeat, then SeaweedFS's quota
    # pass (run here rather than waiting for the gateway's own) makes the bucket read-only.
    deadline = time.monotonic() + 30
    refused: S3Error | None = None
    while refused is None:
        assert time.monotonic() < deadline, "writes beyond the quota were still accepted"
        await seaweedfs_quota_pass()
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


async def object_names(client: Minio, bucket: str) -> list[str]:
    return [str(o.object_name) async for o in client.list_objects(bucket, recursive=True)]


async def refusal(write: Awaitable[object]) -> str:
    """The S3 error code ``write`` was refused with."""
    with pytest.raises(S3Error) as refused:
        await write
    return str(refused.value.code)


async def test_rotate_kills_the_old_key_at_once_and_the_new_one_sees_the_same_bucket(
    s3_driver: S3Driver, http_session: aiohttp.ClientSession
) -> None:
    rid = uuid.uuid4()
    old = await s3_driver.create(rid, LIMITS)
    old_client = tenant_client(old, http_session)
    await old_client.put_object(old.bucket, "kept", io.BytesIO(b"1"), 1)
    new = await s3_driver.rotate(rid, LIMITS)
    # The very next request with the old key, on the same keep-alive connection.
    assert await refusal(old_client.put_object(old.bucket, "late", io.BytesIO(b"1"), 1)) == (
        "InvalidAccessKeyId"
    )
    assert await refusal(old_client.list_objects(old.bucket)) == "InvalidAccessKeyId"
    assert (new.endpoint, new.region, new.bucket, new.s3_url) == (
        old.endpoint,
        old.region,
        old.bucket,
        old.s3_url,
    )
    assert new.access_key != old.access_key
    new_client = tenant_client(new, http_session)
    assert await object_names(new_client, new.bucket) == ["kept"]
    await new_client.put_object(new.bucket, "fresh", io.BytesIO(b"2"), 1)
    assert await s3_driver.quota_bytes(rid) == LIMITS.storage_mb * 1024 * 1024
    await s3_driver.delete(rid)


async def test_rotate_of_a_resource_never_created_is_not_found(s3_driver: S3Driver) -> None:
    with pytest.raises(SpinupError) as missing:
        await s3_driver.rotate(uuid.uuid4(), LIMITS)
    assert missing.value.code is ErrorCode.NOT_FOUND


async def test_set_limits_changes_the_bucket_quota_and_nothing_else(
    s3_driver: S3Driver, http_session: aiohttp.ClientSession
) -> None:
    rid = uuid.uuid4()
    creds = await s3_driver.create(rid, S3Limits(storage_mb=3))
    tenant = tenant_client(creds, http_session)
    await tenant.put_object(creds.bucket, "before", io.BytesIO(b"1"), 1)
    await s3_driver.set_limits(rid, S3Limits(storage_mb=30))
    await s3_driver.set_limits(rid, S3Limits(storage_mb=30))
    assert await s3_driver.quota_bytes(rid) == 30 * 1024 * 1024
    await tenant.put_object(creds.bucket, "after", io.BytesIO(b"2"), 1)  # the same key
    assert await object_names(tenant, creds.bucket) == ["after", "before"]
    with pytest.raises(SpinupError) as missing:
        await s3_driver.set_limits(uuid.uuid4(), LIMITS)
    assert missing.value.code is ErrorCode.NOT_FOUND
    await s3_driver.delete(rid)


async def test_usage_is_the_size_of_the_objects_and_leaves_out_missing_buckets(
    s3_driver: S3Driver, http_session: aiohttp.ClientSession
) -> None:
    writer, idle, never_created = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    creds = await s3_driver.create(writer, LIMITS)
    await s3_driver.create(idle, LIMITS)
    assert await s3_driver.usage([writer, idle, never_created]) == {writer: 0, idle: 0}
    tenant = tenant_client(creds, http_session)
    # Compressible and random alike: what the tenant uploaded, not what SeaweedFS stored.
    await tenant.put_object(creds.bucket, "text", io.BytesIO(b"x" * 300_000), 300_000)
    await tenant.put_object(creds.bucket, "dir/random", io.BytesIO(os.urandom(200_000)), 200_000)
    assert await s3_driver.usage([writer, idle]) == {writer: 500_000, idle: 0}
    await tenant.remove_object(creds.bucket, "text")
    assert await s3_driver.usage([writer]) == {writer: 200_000}
    assert await s3_driver.usage([]) == {}
    await s3_driver.delete(writer)
    await s3_driver.delete(idle)
    assert await s3_driver.usage([writer, idle]) == {}


async def masters_counts(shell: WeedShell, bucket: str) -> tuple[int, int]:
    """Files and deletions the master counts in the bucket's collection (``collection.list``)."""
    for line in (await shell.run("collection.list\n")).splitlines():
        if line.startswith(f'collection:"{bucket}"'):
            fields = dict(field.split(":", 1) for field in line.split("\t")[1:])
            return int(fields["fileCount"]), int(fields["deletion"])
    return 0, 0


async def until_masters_counts(shell: WeedShell, bucket: str, counts: tuple[int, int]) -> None:
    """Wait for the volume server's heartbeat (every 5 s) to bring the master ``counts``."""
    deadline = time.monotonic() + 20
    while (seen := await masters_counts(shell, bucket)) != counts:
        assert time.monotonic() < deadline, f"the master still counts {seen}, not {counts}"
        await asyncio.sleep(0.5)


async def test_a_bucket_whose_figures_held_still_is_not_listed_again_and_one_that_moved_is(
    env: dict[str, str], admin_shell: WeedShell, http_session: aiohttp.ClientSession
) -> None:
    # No quiet time: a bucket stands as soon as the master's figures match its last listing's.
    driver = await connect_s3_driver(env, admin_shell, measures=UsageMemo(settle_s=0))
    try:
        rid = uuid.uuid4()
        creds = await driver.create(rid, LIMITS)
        tenant = tenant_client(creds, http_session)
        await tenant.put_object(creds.bucket, "a", io.BytesIO(os.urandom(300_000)), 300_000)
        await until_masters_counts(admin_shell, creds.bucket, (1, 0))
        counted = usage_measures_since("s3")
        assert await driver.usage([rid]) == {rid: 300_000}
        assert await driver.usage([rid]) == {rid: 300_000}
        assert await driver.usage([rid]) == {rid: 300_000}
        assert counted() == (1, 2)
        # A write moves the figures: listed again, and the new object counted.
        await tenant.put_object(creds.bucket, "b", io.BytesIO(os.urandom(50_000)), 50_000)
        await until_masters_counts(admin_shell, creds.bucket, (2, 0))
        assert await driver.usage([rid]) == {rid: 350_000}
        # So does a delete.
        await tenant.remove_object(creds.bucket, "a")
        await until_masters_counts(admin_shell, creds.bucket, (2, 1))
        assert await driver.usage([rid]) == {rid: 50_000}
        assert await driver.usage([rid]) == {rid: 50_000}
        assert counted() == (3, 3)
        await driver.delete(rid)
        assert await driver.usage([rid]) == {}
    finally:
        await driver.close()


async def test_a_bucket_never_written_to_is_listed_once_and_again_at_its_first_write(
    env: dict[str, str], admin_shell: WeedShell, http_session: aiohttp.ClientSession
) -> None:
    driver = await connect_s3_driver(env, admin_shell, measures=UsageMemo())
    try:
        rid = uuid.uuid4()
        creds = await driver.create(rid, LIMITS)
        counted = usage_measures_since("s3")
        assert await driver.usage([rid]) == {rid: 0}
        assert await driver.usage([rid]) == {rid: 0}
        assert counted() == (1, 1)
        # The first write makes the collection at once, before any heartbeat: listed, counted.
        await tenant_client(creds, http_session).put_object(
            creds.bucket, "a", io.BytesIO(b"x" * 1_000), 1_000
        )
        assert await driver.usage([rid]) == {rid: 1_000}
        # Changed lately: listed at every sweep for the quiet time.
        assert await driver.usage([rid]) == {rid: 1_000}
        assert counted() == (3, 1)
        await driver.delete(rid)
    finally:
        await driver.close()


async def test_without_the_masters_figures_every_bucket_is_listed(
    env: dict[str, str], admin_shell: WeedShell, http_session: aiohttp.ClientSession
) -> None:
    # Nothing listens on port 1: the figures fail (after the driver's reconnect wait).
    driver = await connect_s3_driver(
        env, admin_shell, measures=UsageMemo(settle_s=0), master_grpc="127.0.0.1:1"
    )
    try:
        rid = uuid.uuid4()
        creds = await driver.create(rid, LIMITS)
        await tenant_client(creds, http_session).put_object(
            creds.bucket, "a", io.BytesIO(b"x" * 1_000), 1_000
        )
        counted = usage_measures_since("s3")
        assert await driver.usage([rid]) == {rid: 1_000}
        assert await driver.usage([rid]) == {rid: 1_000}
        assert counted() == (2, 0)
        await driver.delete(rid)
    finally:
        await driver.close()


async def settled_slots(driver: S3Driver) -> tuple[int, int]:
    """The volume slots, once two readings a quarter second apart agree.

    A bucket an earlier test dropped gives its slots back when the volume server's message
    naming its deleted volumes reaches the master, a moment after the drop returned.
    """
    deadline = time.monotonic() + 10
    seen = (await driver.capacity())[Ceiling.VOLUMES]
    while True:
        await asyncio.sleep(0.25)
        last, seen = seen, (await driver.capacity())[Ceiling.VOLUMES]
        if seen == last:
            return seen
        assert time.monotonic() < deadline, f"the volume slots keep changing: {last}, {seen}"


async def test_capacity_is_the_volume_slots_and_a_new_buckets_first_write_takes_one(
    s3_driver: S3Driver, http_session: aiohttp.ClientSession
) -> None:
    used, limit = await settled_slots(s3_driver)
    # devstack's one volume server, started with -volume.max=VOLUME_SLOTS. None may be used
    # yet: a stack whose first test this is has no volume until a bucket is written to.
    assert limit == VOLUME_SLOTS
    assert 0 <= used < limit
    rid = uuid.uuid4()
    creds = await s3_driver.create(rid, LIMITS)
    try:
        # No volume for an empty bucket: its collection's first one comes with its first write.
        assert (await s3_driver.capacity())[Ceiling.VOLUMES] == (used, limit)
        await tenant_client(creds, http_session).put_object(creds.bucket, "a", io.BytesIO(b"x"), 1)
        # Not flaky: the master counts a volume it grows when it creates it, before it answers
        # the write's assignment, so no heartbeat is waited for. One, as master.toml grows
        # (copy_1 = 1); at least one, should the master grow more for the bucket meanwhile.
        grown, still = (await s3_driver.capacity())[Ceiling.VOLUMES]
        assert still == limit
        assert 0 < grown <= limit
        assert grown >= used + 1
    finally:
        await s3_driver.delete(rid)
    # The drop gives its slots back once the volume server has told the master (at once).
    deadline = time.monotonic() + 10
    while (await s3_driver.capacity())[Ceiling.VOLUMES][0] > used:
        assert time.monotonic() < deadline, "the dropped bucket's volume still holds its slot"
        await asyncio.sleep(0.2)


# miniopy-async hands each multipart part (5 MiB at least) to aiohttp as bytes.
@pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")
async def test_block_writes_refuses_uploads_of_every_kind_but_reads_and_deletes_work(
    s3_driver: S3Driver,
    http_session: aiohttp.ClientSession,
    seaweedfs_quota_pass: Callable[[], Awaitable[str]],
) -> None:
    rid = uuid.uuid4()
    creds = await s3_driver.create(rid, LIMITS)
    tenant = tenant_client(creds, http_session)
    for name in ("a", "b", "c", "d"):
        await tenant.put_object(creds.bucket, name, io.BytesIO(b"data"), 4)
    await s3_driver.block_writes(rid, usage=2, quota=1)
    await s3_driver.block_writes(rid, usage=3, quota=1)  # every sweep pass while over
    big = os.urandom(6 * 1024 * 1024)
    for write in (
        tenant.put_object(creds.bucket, "new", io.BytesIO(b"x"), 1),
        tenant.put_object(creds.bucket, "a", io.BytesIO(b"overwrite"), 9),
        tenant.put_object(creds.bucket, "multi", io.BytesIO(big), len(big), part_size=5 << 20),
        tenant.copy_object(creds.bucket, "copy", CopySource(creds.bucket, "a")),
    ):
        assert await refusal(write) == "AccessDenied"
    response = await tenant.get_object(creds.bucket, "a")
    assert await response.read() == b"data"
    response.release()
    await tenant.remove_object(creds.bucket, "a")
    errors = [e async for e in tenant.remove_objects(creds.bucket, [DeleteObject("b")])]
    assert errors == []
    assert await object_names(tenant, creds.bucket) == ["c", "d"]
    # The tenant cannot lift the block itself.
    assert await refusal(tenant.delete_bucket_policy(creds.bucket)) == "AccessDenied"
    allow_all = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:PutObject"],
                "Resource": [f"arn:aws:s3:::{creds.bucket}/*"],
            }
        ],
    }
    policy = json.dumps(allow_all)
    assert await refusal(tenant.set_bucket_policy(creds.bucket, policy)) == "AccessDenied"
    # SeaweedFS's own quota pass (bucket under its quota) does not undo the block.
    await seaweedfs_quota_pass()
    # A new key is blocked as well: the block is on the bucket.
    rotated = tenant_client(await s3_driver.rotate(rid, LIMITS), http_session)
    assert await refusal(rotated.put_object(creds.bucket, "new", io.BytesIO(b"x"), 1)) == (
        "AccessDenied"
    )
    await s3_driver.allow_writes(rid)
    await rotated.put_object(creds.bucket, "new", io.BytesIO(b"x"), 1)
    await rotated.put_object(creds.bucket, "multi", io.BytesIO(big), len(big), part_size=5 << 20)
    await s3_driver.allow_writes(rid)
    assert await object_names(rotated, creds.bucket) == ["c", "d", "multi", "new"]
    await s3_driver.delete(rid)
    assert not await s3_driver.exists(rid)


async def read_only_in_seaweedfs(
    session: aiohttp.ClientSession, env: dict[str, str], bucket: str
) -> bool:
    url = f"http://{env['SPINUP_S3_FILER']}{FILER_CONF_PATH}"
    # The filer takes only signed reads (security.toml's [jwt.filer_signing.read]).
    token = filer_jwt(env["SPINUP_S3_FILER_READ_KEY"])
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        if response.status == HTTPStatus.NOT_FOUND:
            return False
        return bucket_location(bucket) in read_only_locations(await response.text())


async def bucket_past_its_quota(
    s3_driver: S3Driver, session: aiohttp.ClientSession
) -> tuple[uuid.UUID, S3Credentials, Minio]:
    """A bucket of 1 MB quota holding 2 MB (``big0``, ``big1``), and its tenant's client."""
    rid = uuid.uuid4()
    creds = await s3_driver.create(rid, S3Limits(storage_mb=1))
    tenant = tenant_client(creds, session)
    chunk = os.urandom(MIB)
    for i in range(2):
        await tenant.put_object(creds.bucket, f"big{i}", io.BytesIO(chunk), MIB)
    return rid, creds, tenant


async def until_read_only(
    session: aiohttp.ClientSession,
    env: dict[str, str],
    bucket: str,
    quota_pass: Callable[[], Awaitable[str]],
) -> None:
    """Run SeaweedFS's quota pass until it has made ``bucket`` read-only (30 s at most)."""
    deadline = time.monotonic() + 30
    while not await read_only_in_seaweedfs(session, env, bucket):
        assert time.monotonic() < deadline, "SeaweedFS never made the bucket read-only"
        await quota_pass()
        await asyncio.sleep(0.5)


async def test_allow_writes_also_lifts_seaweedfs_read_only_flag_at_once(
    s3_driver: S3Driver,
    http_session: aiohttp.ClientSession,
    env: dict[str, str],
    seaweedfs_quota_pass: Callable[[], Awaitable[str]],
) -> None:
    rid, creds, tenant = await bucket_past_its_quota(s3_driver, http_session)
    await s3_driver.block_writes(rid, usage=2 * MIB, quota=MIB)
    # SeaweedFS's own pass (run here, or the gateway's) flips the bucket read-only once the
    # master has counted the bytes.
    await until_read_only(http_session, env, creds.bucket, seaweedfs_quota_pass)
    for i in range(2):
        await tenant.remove_object(creds.bucket, f"big{i}")
    # SeaweedFS's figure counts the deleted bytes for a few seconds more; allow does not wait.
    await s3_driver.allow_writes(rid)
    assert not await read_only_in_seaweedfs(http_session, env, creds.bucket)
    await tenant.put_object(creds.bucket, "small", io.BytesIO(b"x"), 1)
    await s3_driver.allow_writes(rid)
    await s3_driver.delete(rid)


async def test_delete_of_a_bucket_seaweedfs_made_read_only_drops_its_filer_conf_rule(
    s3_driver: S3Driver,
    http_session: aiohttp.ClientSession,
    env: dict[str, str],
    seaweedfs_quota_pass: Callable[[], Awaitable[str]],
) -> None:
    # SeaweedFS's quota pass only visits the buckets there are: the rule of a deleted one would
    # stay in filer.conf for ever, rewritten by every pass.
    rid, creds, _ = await bucket_past_its_quota(s3_driver, http_session)
    await until_read_only(http_session, env, creds.bucket, seaweedfs_quota_pass)
    await s3_driver.delete(rid)
    await seaweedfs_quota_pass()
    assert not await read_only_in_seaweedfs(http_session, env, creds.bucket)
    await s3_driver.delete(rid)


async def test_allow_writes_on_a_never_blocked_bucket_changes_nothing(
    s3_driver: S3Driver, http_session: aiohttp.ClientSession
) -> None:
    rid = uuid.uuid4()
    creds = await s3_driver.create(rid, LIMITS)
    await s3_driver.allow_writes(rid)
    await tenant_client(creds, http_session).put_object(creds.bucket, "x", io.BytesIO(b"1"), 1)
    await s3_driver.delete(rid)


async def test_block_and_allow_of_a_resource_never_created_leave_nothing_behind(
    s3_driver: S3Driver,
) -> None:
    never_created = uuid.uuid4()
    await s3_driver.block_writes(never_created, usage=2, quota=1)
    await s3_driver.allow_writes(never_created)
    assert not await s3_driver.exists(never_created)


async def test_server_down_is_backend_unavailable_for_every_new_operation(
    stack: Stack, s3_driver: S3Driver
) -> None:
    rid = uuid.uuid4()
    operations: list[Callable[[], Awaitable[object]]] = [
        lambda: s3_driver.set_limits(rid, LIMITS),
        lambda: s3_driver.rotate(rid, LIMITS),
        lambda: s3_driver.usage([rid]),
        lambda: s3_driver.block_writes(rid, usage=2, quota=1),
        lambda: s3_driver.allow_writes(rid),
        s3_driver.capacity,
    ]
    stack.stop_server("seaweed")
    try:
        for operation in operations:
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                await operation()
            assert time.monotonic() - started < 10
    finally:
        stack.start_server("seaweed")
    assert await s3_driver.usage([rid]) == {}


async def test_the_master_runs_seaweedfs_upkeep_and_its_script_runs(
    admin_shell: WeedShell, stack: Stack
) -> None:
    # Without it the filer's metadata log (every object's key and metadata, of deleted buckets
    # too) and abandoned multipart uploads stay for ever.
    assert "adminScripts:" in stack.servers["seaweed"].log_path.read_text()
    script = tomllib.loads(MASTER_TOML)["master"]["maintenance"]["scripts"]
    assert "fs.log.purge" in script
    assert "s3.clean.uploads" in script
    printed = await admin_shell.run(script)
    assert "error" not in printed.lower(), printed
