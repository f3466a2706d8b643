import asyncio
import json
import urllib.request
import uuid

import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import DiscardPolicy, StorageType
from nats.js.errors import APIError

from devstack.customer_nats import (
    JETSTREAM_FILE_STORE_MB,
    JETSTREAM_MEMORY_STORE_MB,
    JETSTREAM_OVERCOMMIT,
)
from devstack.stack import Stack
from queue_provisioner.driver import KIB, MIB, NatsAccountDriver
from shared.contracts.errors import (
    BackendUnavailableError,
    DropRefusedError,
    ErrorCode,
    SpinupError,
)
from shared.contracts.kinds import NatsLimits
from shared.crypto import natsjwt
from shared.lifecycle import Ceiling
from shared.naming import tenant_name
from tests.conftest import usage_measures_since
from tests.integration.conftest import connect_nats_driver, connect_nats_tenant

pytestmark = pytest.mark.integration

LIMITS = NatsLimits(
    connections=3,
    streams=2,
    consumers=4,
    memory_storage_mb=1,
    disk_storage_mb=2,
    max_payload_kb=8,
    subscriptions_per_connection=50,
)


BIGGER = NatsLimits(
    connections=5,
    streams=7,
    consumers=9,
    memory_storage_mb=2,
    disk_storage_mb=4,
    max_payload_kb=16,
    subscriptions_per_connection=60,
)
# Below every plan's max_payload_kb, so a publish is never refused for its size alone.
CHUNK = 8000


async def test_create_twice_gives_one_account_with_the_plan_limits_in_the_server(
    queue_driver: NatsAccountDriver,
) -> None:
    rid = uuid.uuid4()
    first = await queue_driver.create(rid, LIMITS)
    second = await queue_driver.create(rid, LIMITS)
    assert first.account == second.account == queue_driver.account_key(rid).public_key
    assert first.user_seed != second.user_seed
    claims = natsjwt.decode_jwt(second.user_jwt, issuer=second.account)
    assert claims["name"] == tenant_name(rid)
    client = await connect_nats_tenant(second)
    try:
        info = await client.jetstream().account_info()
        assert info.limits.max_streams == LIMITS.streams
        assert info.limits.max_consumers == LIMITS.consumers
        assert info.limits.max_memory == LIMITS.memory_storage_mb * MIB
        assert info.limits.max_storage == LIMITS.disk_storage_mb * MIB
        assert not info.limits.max_bytes_required  # ADR 0025: unsized streams allowed
    finally:
        await client.close()
    await queue_driver.delete(rid)


async def test_a_fresh_create_makes_the_account_create_would_and_create_can_reset_it(
    queue_driver: NatsAccountDriver,
) -> None:
    rid = uuid.uuid4()
    fresh = await queue_driver.create_fresh(rid, LIMITS)
    assert fresh.account == queue_driver.account_key(rid).public_key
    assert rid in await queue_driver.tenants()
    client = await connect_nats_tenant(fresh)
    try:
        info = await client.jetstream().account_info()
        assert info.limits.max_streams == LIMITS.streams
        assert info.limits.max_storage == LIMITS.disk_storage_mb * MIB
    finally:
        await client.close()
    # A later create of the same id finds the account and revokes the fresh create's user.
    again = await queue_driver.create(rid, LIMITS)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect_nats_tenant(fresh)
    await (await connect_nats_tenant(again)).close()
    await queue_driver.delete(rid)


async def test_create_again_with_new_limits_updates_the_account(
    queue_driver: NatsAccountDriver,
) -> None:
    rid = uuid.uuid4()
    await queue_driver.create(rid, LIMITS)
    credentials = await queue_driver.create(rid, BIGGER)
    client = await connect_nats_tenant(credentials)
    try:
        info = await client.jetstream().account_info()
        assert (info.limits.max_streams, info.limits.max_consumers) == (7, 9)
    finally:
        await client.close()
    await queue_driver.delete(rid)


async def test_delete_is_idempotent_and_removes_the_account_from_the_resolver(
    queue_driver: NatsAccountDriver,
) -> None:
    rid = uuid.uuid4()
    credentials = await queue_driver.create(rid, LIMITS)
    assert await queue_driver.exists(rid)
    await queue_driver.delete(rid)
    await queue_driver.delete(rid)
    assert not await queue_driver.exists(rid)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect_nats_tenant(credentials)


async def test_tenants_names_the_resources_of_the_accounts_the_resolver_holds(
    queue_driver: NatsAccountDriver,
) -> None:
    kept, deleted = uuid.uuid4(), uuid.uuid4()
    await queue_driver.create(kept, LIMITS)
    await queue_driver.create(deleted, LIMITS)
    assert {kept, deleted} <= await queue_driver.tenants()
    await queue_driver.delete(deleted)
    listed = await queue_driver.tenants()
    assert kept in listed
    assert deleted not in listed
    await queue_driver.delete(kept)


async def test_delete_of_a_never_created_account_succeeds(
    queue_driver: NatsAccountDriver,
) -> None:
    rid = uuid.uuid4()
    await queue_driver.delete(rid)
    assert not await queue_driver.exists(rid)


async def test_delete_refuses_the_system_account_and_leaves_it_in_place(
    env: dict[str, str], queue_driver: NatsAccountDriver
) -> None:
    rid = uuid.uuid4()
    await queue_driver.create(rid, LIMITS)
    # A driver that believes this tenant's account is the system account must not delete it.
    confused = NatsAccountDriver(
        queue_driver._system,
        operator=queue_driver._operator,
        system_account=queue_driver.account_key(rid).public_key,
        public_url=env["SPINUP_CUSTOMER_NATS_PUBLIC_URL"],
        request_timeout=2.0,
    )
    with pytest.raises(DropRefusedError):
        await confused.delete(rid)
    assert await queue_driver.exists(rid)
    await queue_driver.delete(rid)


async def test_accounts_of_two_resources_differ(queue_driver: NatsAccountDriver) -> None:
    assert (
        queue_driver.account_key(uuid.uuid4()).public_key
        != queue_driver.account_key(uuid.uuid4()).public_key
    )


async def test_unreachable_server_is_backend_unavailable(
    stack: Stack, env: dict[str, str], queue_driver: NatsAccountDriver
) -> None:
    closed_port = env["SPINUP_CUSTOMER_NATS_URL"].rsplit(":", 1)[0] + ":1"
    with pytest.raises(BackendUnavailableError):
        await connect_nats_driver(env, closed_port)
    stack.stop_server("customer-nats")
    try:
        # Together: each waits one request timeout for the connection to come back.
        outcomes = await asyncio.gather(
            queue_driver.create(uuid.uuid4(), LIMITS),
            queue_driver.delete(uuid.uuid4()),
            queue_driver.set_limits(uuid.uuid4(), LIMITS),
            queue_driver.rotate(uuid.uuid4(), LIMITS),
            queue_driver.usage([uuid.uuid4()]),
            queue_driver.capacity(),
            return_exceptions=True,
        )
        assert [type(outcome) for outcome in outcomes] == [BackendUnavailableError] * 6
    finally:
        stack.start_server("customer-nats")


async def account_claims(driver: NatsAccountDriver, rid: uuid.UUID) -> dict[str, object]:
    """The account JWT as the server's resolver holds it, signature checked."""
    account = driver.account_key(rid).public_key
    reply = await driver._system.request(f"$SYS.REQ.ACCOUNT.{account}.CLAIMS.LOOKUP", b"")
    return natsjwt.decode_jwt(reply.data.decode(), issuer=driver._operator.public_key)


async def fill(client: NatsClient, subject: str, total: int) -> None:
    js = client.jetstream()
    for _ in range(total // CHUNK):
        await js.publish(subject, b"x" * CHUNK)


async def test_set_limits_reaches_open_connections_and_lets_writes_past_the_old_limit(
    queue_driver: NatsAccountDriver,
) -> None:
    rid = uuid.uuid4()
    credentials = await queue_driver.create(rid, LIMITS)
    client = await connect_nats_tenant(credentials)
    try:
        js = client.jetstream()
        beyond_old = (LIMITS.disk_storage_mb + 1) * MIB
        with pytest.raises(APIError, match="insufficient storage"):
            await js.add_stream(name="BIG", subjects=["big.>"], max_bytes=beyond_old)

        await queue_driver.set_limits(rid, BIGGER)
        await queue_driver.set_limits(rid, BIGGER)  # idempotent

        # The connection opened before the change sees the new limits and may use them.
        info = await js.account_info()
        assert info.limits.max_storage == BIGGER.disk_storage_mb * MIB
        assert info.limits.max_memory == BIGGER.memory_storage_mb * MIB
        assert (info.limits.max_streams, info.limits.max_consumers) == (7, 9)
        limits = (await account_claims(queue_driver, rid))["nats"]["limits"]  # type: ignore[index]
        assert limits["conn"] == BIGGER.connections
        assert limits["payload"] == BIGGER.max_payload_kb * KIB
        await js.add_stream(name="BIG", subjects=["big.>"], max_bytes=beyond_old)
        await fill(client, "big.data", LIMITS.disk_storage_mb * MIB + 4 * CHUNK)
        stored = (await js.stream_info("BIG")).state.bytes
        assert stored > LIMITS.disk_storage_mb * MIB
        assert (await queue_driver.usage([rid]))[rid] >= stored
    finally:
        await client.close()
    # The credentials issued before the change still log in.
    again = await connect_nats_tenant(credentials)
    await again.close()
    await queue_driver.delete(rid)


async def test_rotate_refuses_old_users_cuts_their_connections_and_keeps_the_data(
    queue_driver: NatsAccountDriver,
) -> None:
    rid = uuid.uuid4()
    old = await queue_driver.create(rid, LIMITS)
    closed = asyncio.Event()
    old_client = await connect_nats_tenant(old, closed)
    js = old_client.jetstream()
    await js.add_stream(name="KEPT", subjects=["kept.>"], max_bytes=MIB)
    await js.publish("kept.one", b"before rotate")

    new = await queue_driver.rotate(rid, LIMITS)
    assert new.account == old.account
    assert new.connection_url == old.connection_url
    assert new.user_seed != old.user_seed
    await asyncio.wait_for(closed.wait(), timeout=5)
    assert old_client.is_closed
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect_nats_tenant(old)

    client = await connect_nats_tenant(new)
    try:
        message = await client.jetstream().get_msg("KEPT", 1)
        assert message.data == b"before rotate"
    finally:
        await client.close()

    # A second rotation within the same second still revokes the user the first one issued.
    newer = await queue_driver.rotate(rid, LIMITS)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect_nats_tenant(new)
    client = await connect_nats_tenant(newer)
    await client.close()
    revoked = (await account_claims(queue_driver, rid))["nats"]["revocations"]  # type: ignore[index]
    issued = natsjwt.decode_jwt(newer.user_jwt, issuer=newer.account)["iat"]
    assert revoked == {natsjwt.ALL_USERS: issued - 1}

    # Changing limits afterwards keeps the revocation: the rotated users stay refused.
    await queue_driver.set_limits(rid, BIGGER)
    for dead in (old, new):
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await connect_nats_tenant(dead)
    client = await connect_nats_tenant(newer)
    await client.close()
    await queue_driver.delete(rid)


async def test_create_again_revokes_the_users_it_issued_before(
    queue_driver: NatsAccountDriver,
) -> None:
    rid = uuid.uuid4()
    first = await queue_driver.create(rid, LIMITS)
    second = await queue_driver.create(rid, LIMITS)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect_nats_tenant(first)
    client = await connect_nats_tenant(second)
    await client.close()
    await queue_driver.delete(rid)


async def test_usage_counts_file_and_memory_bytes_of_each_account(
    queue_driver: NatsAccountDriver,
) -> None:
    busy, idle, deleted, never = (uuid.uuid4() for _ in range(4))
    credentials = await queue_driver.create(busy, LIMITS)
    await queue_driver.create(idle, LIMITS)
    await queue_driver.create(deleted, LIMITS)
    await queue_driver.delete(deleted)
    client = await connect_nats_tenant(credentials)
    try:
        js = client.jetstream()
        await js.add_stream(name="FILE", subjects=["file.>"], max_bytes=MIB)
        await js.add_stream(
            name="MEM", subjects=["mem.>"], max_bytes=MIB // 2, storage=StorageType.MEMORY
        )
        before = await queue_driver.usage([busy])
        assert before == {busy: 0}
        await fill(client, "file.x", 50 * CHUNK)
        await fill(client, "mem.x", 25 * CHUNK)
    finally:
        await client.close()
    usage = await queue_driver.usage([busy, idle, deleted, never])
    # Each stored message carries its subject, headers and sequence besides the payload.
    assert 75 * CHUNK <= usage[busy] <= 75 * (CHUNK + 200)
    assert usage[idle] == 0  # exists, never used: known from the resolver
    assert set(usage) == {busy, idle}
    assert await queue_driver.usage([]) == {}
    await queue_driver.delete(busy)
    await queue_driver.delete(idle)


async def test_an_unused_accounts_zero_stands_until_a_connection_loads_it(
    queue_driver: NatsAccountDriver,
) -> None:
    # ADR 0059: an account the server has not loaded stores nothing; once its JWT was found, its
    # 0 stands without another resolver lookup, and JSZ measures it as soon as it is loaded.
    used, unused = uuid.uuid4(), uuid.uuid4()
    credentials = await queue_driver.create(used, LIMITS)
    await queue_driver.create(unused, LIMITS)
    counted = usage_measures_since("nats")
    assert await queue_driver.usage([used, unused]) == {used: 0, unused: 0}
    assert counted() == (2, 0)
    assert await queue_driver.usage([used, unused]) == {used: 0, unused: 0}
    assert counted() == (2, 2), "the second sweep stood on the first lookups"
    client = await connect_nats_tenant(credentials)
    try:
        await client.jetstream().add_stream(name="S", subjects=["s.>"], max_bytes=MIB)
        await fill(client, "s.x", 10 * CHUNK)
    finally:
        await client.close()
    usage = await queue_driver.usage([used, unused])
    assert usage[used] >= 10 * CHUNK
    assert usage[unused] == 0
    assert counted() == (3, 3)
    await queue_driver.delete(unused)
    assert await queue_driver.usage([unused]) == {}, "a delete forgets what stood"
    await queue_driver.delete(used)


async def test_the_server_refuses_writes_past_the_quota_by_itself(
    queue_driver: NatsAccountDriver,
) -> None:
    rid = uuid.uuid4()
    quota = LIMITS.disk_storage_mb * MIB
    credentials = await queue_driver.create(rid, LIMITS)
    client = await connect_nats_tenant(credentials)
    try:
        js = client.jetstream()
        await js.add_stream(
            name="FULL", subjects=["full.>"], max_bytes=quota, discard=DiscardPolicy.NEW
        )
        # Nothing is left for a second stream.
        with pytest.raises(APIError, match="insufficient storage"):
            await js.add_stream(name="MORE", subjects=["more.>"], max_bytes=CHUNK * 4)
        refused = None
        for _ in range(quota // CHUNK + 10):
            try:
                await js.publish("full.x", b"x" * CHUNK)
            except APIError as exc:
                refused = exc
                break
        assert refused is not None, "the server accepted writes past the quota"
        assert "resource limits exceeded for account" in str(refused.description)
        usage = (await queue_driver.usage([rid]))[rid]
        assert quota - 2 * CHUNK <= usage <= quota

        # The sweep's calls change nothing: the refusal above was the server's own.
        await queue_driver.block_writes(rid, usage=usage, quota=quota)
        with pytest.raises(APIError, match="resource limits exceeded"):
            await js.publish("full.x", b"x" * CHUNK)
        assert (await js.get_msg("FULL", 1)).data == b"x" * CHUNK  # reads work
        await js.purge_stream("FULL")  # deleting works
        assert (await queue_driver.usage([rid]))[rid] == 0
        await queue_driver.allow_writes(rid)
        await js.publish("full.x", b"after purge")
    finally:
        await client.close()
    await queue_driver.delete(rid)


async def test_operations_on_a_missing_account_say_so_and_create_nothing(
    queue_driver: NatsAccountDriver,
) -> None:
    deleted, never = uuid.uuid4(), uuid.uuid4()
    await queue_driver.create(deleted, LIMITS)
    await queue_driver.delete(deleted)
    for rid in (deleted, never):
        with pytest.raises(SpinupError) as rotated:
            await queue_driver.rotate(rid, LIMITS)
        assert rotated.value.code is ErrorCode.NOT_FOUND
        with pytest.raises(SpinupError) as changed:
            await queue_driver.set_limits(rid, BIGGER)
        assert changed.value.code is ErrorCode.NOT_FOUND
        await queue_driver.block_writes(rid, usage=1, quota=1)
        await queue_driver.allow_writes(rid)
        assert not await queue_driver.exists(rid)
    assert await queue_driver.usage([deleted, never]) == {}


async def test_changes_refuse_the_system_account(
    env: dict[str, str], queue_driver: NatsAccountDriver
) -> None:
    rid = uuid.uuid4()
    confused = NatsAccountDriver(
        queue_driver._system,
        operator=queue_driver._operator,
        system_account=queue_driver.account_key(rid).public_key,
        public_url=env["SPINUP_CUSTOMER_NATS_PUBLIC_URL"],
        request_timeout=2.0,
    )
    for change in (confused.create, confused.set_limits, confused.rotate):
        with pytest.raises(DropRefusedError):
            await change(rid, LIMITS)
    assert not await queue_driver.exists(rid)


def _on_disk(stack: Stack, account: str) -> list[str]:
    """Every file or directory of the customer NATS server's data that names ``account``."""
    data_dir = stack.servers["customer-nats"].data_dir
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if account in p.name)


async def test_delete_leaves_nothing_of_the_account_on_the_servers_disk(
    queue_driver: NatsAccountDriver, stack: Stack
) -> None:
    rid = uuid.uuid4()
    credentials = await queue_driver.create(rid, LIMITS)
    client = await connect_nats_tenant(credentials)
    try:
        js = client.jetstream()
        await js.add_stream(name="ORDERS", subjects=["orders.>"], storage=StorageType.FILE)
        await js.publish("orders.one", b"a tenant's data")
        kv = await js.create_key_value(bucket="settings")
        await kv.put("theme", b"dark")
    finally:
        await client.close()
    account = credentials.account
    assert any("jetstream" in path for path in _on_disk(stack, account))

    await queue_driver.delete(rid)

    assert _on_disk(stack, account) == []


def _held_in_memory(stack: Stack) -> set[str]:
    """The accounts the customer NATS server holds in memory (its monitor's list loads none)."""
    url = f"http://127.0.0.1:{stack.profile.ports.customer_nats_monitor}/accountz"
    with urllib.request.urlopen(url, timeout=5) as answer:
        return set(json.load(answer)["accounts"])


async def test_a_delete_leaves_an_account_that_never_connected_out_of_the_servers_memory(
    queue_driver: NatsAccountDriver, stack: Stack
) -> None:
    # nats-server keeps every account it loaded until it restarts (ADR 0056). The delete's purge
    # loaded each one that never connected, only to find nothing: about 9 KB each, for ever.
    rids = [uuid.uuid4() for _ in range(3)]
    accounts = {queue_driver.account_key(rid).public_key for rid in rids}
    for rid in rids:
        await queue_driver.create(rid, LIMITS)
    assert not accounts & await asyncio.to_thread(_held_in_memory, stack)

    for rid in rids:
        await queue_driver.delete(rid)

    assert not accounts & await asyncio.to_thread(_held_in_memory, stack)
    assert not any([await queue_driver.exists(rid) for rid in rids])


async def test_a_stream_made_while_an_unloaded_account_is_deleted_is_removed_too(
    env: dict[str, str], stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The delete finds the account not loaded and sends the claim delete without a purge. A
    # connection that came in between may have stored something: it is purged after. Within a
    # second of the claim delete the server answers that purge at once (it does not ask its
    # resolver again so soon), so it fits the short request timeout of the test below too.
    driver = await connect_nats_driver(env, request_timeout=1.0)
    try:
        rid = uuid.uuid4()
        credentials = await driver.create(rid, LIMITS)
        client = await connect_nats_tenant(credentials)
        try:
            await client.jetstream().add_stream(name="ORDERS", subjects=["orders.>"])
            await client.jetstream().publish("orders.one", b"stored in between")
        finally:
            await client.close()
        assert _on_disk(stack, credentials.account)
        loaded = driver._loaded
        seen: list[str] = []

        async def not_loaded_at_first(account: str) -> bool:
            """The first check answers as it would have just before the connection came in."""
            seen.append(account)
            return False if len(seen) == 1 else await loaded(account)

        monkeypatch.setattr(driver, "_loaded", not_loaded_at_first)
        await driver.delete(rid)

        assert seen == [credentials.account, credentials.account]
        assert _on_disk(stack, credentials.account) == []
        assert not await driver.exists(rid)
    finally:
        await driver.close()


async def test_accounts_that_never_connected_are_deleted_within_a_short_request_timeout(
    env: dict[str, str],
) -> None:
    # Once an account's JWT is gone, a purge of it waits for the resolver's fetch timeout (1.9 s)
    # when the account never connected: the bench's deletes got 503 while the purge came second.
    driver = await connect_nats_driver(env, request_timeout=1.0)
    try:
        rids = [uuid.uuid4() for _ in range(4)]
        for rid in rids:
            await driver.create(rid, LIMITS)
        await asyncio.gather(*(driver.delete(rid) for rid in rids))
        await asyncio.gather(*(driver.delete(rid) for rid in rids))  # again: nothing left
        assert not any([await driver.exists(rid) for rid in rids])
    finally:
        await driver.close()


async def test_tenants_whose_limits_add_up_past_the_servers_storage_all_get_jetstream(
    queue_driver: NatsAccountDriver,
) -> None:
    # A standalone nats-server reserves every account's limits as it enables JetStream for it,
    # against max_file_store and max_memory_store: past them, a new tenant's JetStream is
    # refused ("no responders"). The server's ceilings are what it may promise (ADR 0050), so
    # tenants whose limits add up to more than the store the server has still get JetStream.
    share = JETSTREAM_FILE_STORE_MB // 2 + 1
    large = msgspec.structs.replace(LIMITS, disk_storage_mb=share, memory_storage_mb=1)
    rids = [uuid.uuid4() for _ in range(3)]
    try:
        for index, rid in enumerate(rids):
            client = await connect_nats_tenant(await queue_driver.create(rid, large))
            try:
                js = client.jetstream()
                await js.add_stream(name="ORDERS", subjects=["orders.>"])
                await js.publish("orders.one", b"in")
                info = await js.account_info()
                assert info.limits.max_storage == share * MIB, index
            finally:
                await client.close()
    finally:
        for rid in rids:
            await queue_driver.delete(rid)


async def test_a_connection_holds_no_more_subscriptions_than_its_plan_allows(
    queue_driver: NatsAccountDriver,
) -> None:
    # Each subscription holds about 3.5 KB of the shared server's memory: unbounded, one tenant
    # took the server past 1.7 GB with 500,000 of them (ADR 0051).
    limits = msgspec.structs.replace(LIMITS, subscriptions_per_connection=5)
    rid = uuid.uuid4()
    credentials = await queue_driver.create(rid, limits)
    closed = asyncio.Event()
    client = await connect_nats_tenant(credentials, closed)
    other = await connect_nats_tenant(credentials)
    try:
        held = [await client.subscribe(f"topic.{n}") for n in range(5)]
        await client.flush()
        await other.publish("topic.4", b"hello")
        await other.flush()
        assert (await held[4].next_msg(timeout=2)).data == b"hello"
        assert client.last_error is None

        await client.subscribe("topic.5")
        # The server refuses the sixth with -ERR, on which nats-py (as other clients) closes.
        await asyncio.wait_for(closed.wait(), timeout=5)
        assert "maximum subscriptions exceeded" in str(client.last_error).lower()

        # Per connection, as nats-server applies it: another connection has its own five.
        second = [await other.subscribe(f"topic.{n}") for n in range(5)]
        await other.flush()
        await other.publish("topic.4", b"again")
        assert (await second[4].next_msg(timeout=2)).data == b"again"
    finally:
        await other.close()
        await client.close()
        await queue_driver.delete(rid)


async def test_capacity_reports_the_ceilings_the_server_is_configured_with(
    queue_driver: NatsAccountDriver,
) -> None:
    figures = await queue_driver.capacity()
    # What the server may promise: the store it has times the overcommit (ADR 0050).
    promised_per_mb = JETSTREAM_OVERCOMMIT * MIB
    assert {ceiling: limit for ceiling, (_, limit) in figures.items()} == {
        # nats-server's DEFAULT_MAX_CONNECTIONS: the customer server's config sets none.
        Ceiling.CONNECTIONS: 64 * 1024,
        Ceiling.JETSTREAM_MEMORY_RESERVED_BYTES: JETSTREAM_MEMORY_STORE_MB * promised_per_mb,
        Ceiling.JETSTREAM_STORAGE_RESERVED_BYTES: JETSTREAM_FILE_STORE_MB * promised_per_mb,
    }
    assert all(0 <= used <= limit for used, limit in figures.values())
    assert figures[Ceiling.CONNECTIONS][0] >= 1, "the driver's own connection counts"


async def test_capacity_counts_every_open_connection(queue_driver: NatsAccountDriver) -> None:
    rid = uuid.uuid4()
    credentials = await queue_driver.create(rid, LIMITS)
    before, _ = (await queue_driver.capacity())[Ceiling.CONNECTIONS]
    clients = [await connect_nats_tenant(credentials) for _ in range(LIMITS.connections)]
    try:
        used, _ = (await queue_driver.capacity())[Ceiling.CONNECTIONS]
        assert used >= before + LIMITS.connections
    finally:
        for client in clients:
            await client.close()
        await queue_driver.delete(rid)


def _reserved(figures: dict[Ceiling, tuple[int, int]]) -> tuple[int, int]:
    """JetStream memory and storage reserved, as ``capacity`` reports them."""
    return (
        figures[Ceiling.JETSTREAM_MEMORY_RESERVED_BYTES][0],
        figures[Ceiling.JETSTREAM_STORAGE_RESERVED_BYTES][0],
    )


async def test_a_tenants_first_connection_reserves_its_plans_jetstream_limits(
    queue_driver: NatsAccountDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ADR 0050: a standalone server reserves an account's limits when it enables JetStream for
    # it (its first connection, never the create) and refuses the next account past them. Its
    # streams add nothing: unsized ones reserve nothing, sized ones fit in the account's limits.
    # The reservations are read at every call here, not once a minute.
    monkeypatch.setattr(queue_driver, "_reservations_every_s", 0.0)
    rid = uuid.uuid4()
    before = _reserved(await queue_driver.capacity())
    credentials = await queue_driver.create(rid, LIMITS)
    assert _reserved(await queue_driver.capacity()) == before, "a create alone reserves nothing"
    client = await connect_nats_tenant(credentials)
    try:
        js = client.jetstream()
        await js.add_stream(name="ORDERS", subjects=["orders.>"])
        reserved = (
            before[0] + LIMITS.memory_storage_mb * MIB,
            before[1] + LIMITS.disk_storage_mb * MIB,
        )
        assert _reserved(await queue_driver.capacity()) == reserved
        await js.add_stream(name="SIZED", subjects=["sized.>"], max_bytes=MIB)
        assert _reserved(await queue_driver.capacity()) == reserved
    finally:
        await client.close()
    await queue_driver.delete(rid)
    assert _reserved(await queue_driver.capacity()) == before, "a delete gives it back"
