import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec
import pytest
from redis.asyncio import Redis

from devstack.procs import free_ports
from gateway.webhooks.driver import (
    ReceiveKey,
    RecordOutcome,
    Setting,
    StoredRequest,
    WebhookDriver,
    encode_body,
    receive_key_of_url,
)
from shared.contracts.errors import BackendUnavailableError, ErrorCode, SpinupError
from shared.contracts.kinds import WebhookCredentials, WebhookLimits

pytestmark = pytest.mark.integration

TOKEN_KEY = b"k" * 32
LIMITS = WebhookLimits(requests_kept=3, max_body_kb=1)


@pytest.fixture
async def redis(env: dict[str, str]) -> AsyncIterator[Redis]:
    client = Redis.from_url(env["SPINUP_REDIS_URL"])
    yield client
    await client.aclose()


@pytest.fixture
def webhooks(redis: Redis) -> WebhookDriver:
    return WebhookDriver(redis, content_url="http://gateway.test/", token_key=TOKEN_KEY)


def key_of(credentials: WebhookCredentials) -> ReceiveKey:
    key = receive_key_of_url(TOKEN_KEY, credentials.receive_url)
    assert key is not None
    return key


def a_request(body: bytes = b"{}") -> StoredRequest:
    text, encoding = encode_body(body)
    return StoredRequest(
        id=uuid.uuid4().hex,
        method="POST",
        path="/",
        query="",
        query_params={},
        headers=[("content-type", "application/json")],
        body=text,
        body_encoding=encoding,
        size=len(body),
        received_at=datetime.now(UTC),
        client_ip="127.0.0.1",
    )


async def test_create_twice_gives_the_same_url_and_the_newest_limits(
    webhooks: WebhookDriver, redis: Redis
) -> None:
    rid = uuid.uuid4()
    first = await webhooks.create(rid, WebhookLimits(requests_kept=5, max_body_kb=2))
    second = await webhooks.create(rid, LIMITS)
    assert first.receive_url == second.receive_url
    assert second.receive_url.startswith("http://gateway.test/webhook/receive/whk_")
    assert key_of(second) == ReceiveKey(rid, 1)
    assert receive_key_of_url(b"x" * 32, second.receive_url) is None
    assert await redis.hgetall(f"webhook:t_{rid.hex}:limits") == {
        b"requests_kept": b"3",
        b"max_body_kb": b"1",
        b"generation": b"1",
    }
    await webhooks.delete(rid)


async def test_a_fresh_create_opens_the_receiver_a_create_would_and_takes_requests(
    webhooks: WebhookDriver, redis: Redis
) -> None:
    rid = uuid.uuid4()
    fresh = await webhooks.create_fresh(rid, LIMITS)
    assert key_of(fresh) == ReceiveKey(rid, 1)
    assert await redis.hgetall(f"webhook:t_{rid.hex}:limits") == {
        b"requests_kept": b"3",
        b"max_body_kb": b"1",
        b"generation": b"1",
    }
    assert await webhooks.record(key_of(fresh), a_request()) is RecordOutcome.STORED
    # A later create of the same resource (a retry) finds it: same URL, the request kept.
    assert (await webhooks.create(rid, LIMITS)).receive_url == fresh.receive_url
    assert len(await webhooks.recent(rid, 10)) == 1
    await webhooks.delete(rid)


async def test_requests_are_kept_newest_first_up_to_the_cap(webhooks: WebhookDriver) -> None:
    rid = uuid.uuid4()
    key = key_of(await webhooks.create(rid, LIMITS))
    sent = [a_request(f'{{"n": {n}}}'.encode()) for n in range(LIMITS.requests_kept + 2)]
    for request in sent:
        assert await webhooks.record(key, request) is RecordOutcome.STORED
    kept = await webhooks.recent(rid, 100)
    assert [r.id for r in kept] == [r.id for r in reversed(sent)][: LIMITS.requests_kept]
    # Numbered in the order stored, from 1 (the gateway sends 0; the record script numbers it).
    assert [r.seq for r in kept] == list(range(len(sent), len(sent) - LIMITS.requests_kept, -1))
    assert kept[0] == msgspec.structs.replace(sent[-1], seq=len(sent))
    await webhooks.delete(rid)


async def test_body_over_the_limit_is_refused_and_not_stored(webhooks: WebhookDriver) -> None:
    rid = uuid.uuid4()
    key = key_of(await webhooks.create(rid, LIMITS))
    too_big = a_request(b"x" * (LIMITS.max_body_kb * 1024 + 1))
    assert await webhooks.record(key, too_big) is RecordOutcome.TOO_LARGE
    assert await webhooks.recent(rid, 10) == []
    binary = a_request(b"\xff" * (LIMITS.max_body_kb * 1024))
    assert binary.body_encoding == "base64"
    assert await webhooks.record(key, binary) is RecordOutcome.STORED
    (stored,) = await webhooks.recent(rid, 10)
    assert base64.b64decode(stored.body) == b"\xff" * (LIMITS.max_body_kb * 1024)
    await webhooks.delete(rid)


async def test_delete_is_idempotent_removes_everything_and_refuses_later_requests(
    webhooks: WebhookDriver,
) -> None:
    rid = uuid.uuid4()
    await webhooks.delete(rid)
    key = key_of(await webhooks.create(rid, LIMITS))
    await webhooks.record(key, a_request())
    assert await webhooks.stored_keys(rid) == 2
    await webhooks.delete(rid)
    await webhooks.delete(rid)
    assert await webhooks.stored_keys(rid) == 0
    assert await webhooks.record(key, a_request()) is RecordOutcome.NO_RECEIVER
    assert await webhooks.stored_keys(rid) == 0


async def test_tenants_lists_the_receivers_that_exist(webhooks: WebhookDriver) -> None:
    rid, other = uuid.uuid4(), uuid.uuid4()
    await webhooks.create(rid, LIMITS)
    await webhooks.record(key_of(await webhooks.create(other, LIMITS)), a_request())
    assert {rid, other} <= await webhooks.tenants()
    await webhooks.delete(rid)
    listed = await webhooks.tenants()
    assert rid not in listed
    assert other in listed
    await webhooks.delete(other)


async def test_live_feed_gets_new_requests_and_ends_when_the_receiver_is_deleted(
    webhooks: WebhookDriver,
) -> None:
    rid = uuid.uuid4()
    key = key_of(await webhooks.create(rid, LIMITS))
    live = await webhooks.subscribe(rid)
    sent = a_request(b"live")
    await webhooks.record(key, sent)
    events = live.events(keepalive_s=0.2)
    assert await anext(events) == msgspec.structs.replace(sent, seq=1)
    assert await anext(events) is None  # quiet: a keep-alive tick
    await webhooks.delete(rid)
    assert [event async for event in events] == []
    assert live.receiver_gone


async def test_a_feed_closed_while_waiting_leaves_no_reader_on_a_pooled_connection(
    webhooks: WebhookDriver,
) -> None:
    # A client leaving a stream cancels the feed mid-read. A read left running would go on
    # reading from the connection the pool hands to the next command and steal its reply.
    rid = uuid.uuid4()
    await webhooks.create(rid, LIMITS)
    live = await webhooks.subscribe(rid)
    waiting = asyncio.ensure_future(anext(live.events(keepalive_s=30)))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    readers = [t for t in asyncio.all_tasks() if "get_message" in repr(t.get_coro())]
    assert [t for t in readers if not t.done()] == []
    for _ in range(20):
        assert await webhooks.exists(rid)
        assert await webhooks.stored_keys(rid) == 1


async def test_feed_of_a_deleted_receiver_ends_at_once(webhooks: WebhookDriver) -> None:
    live = await webhooks.subscribe(uuid.uuid4())
    assert [event async for event in live.events(keepalive_s=5)] == []
    assert live.receiver_gone


async def test_unreachable_redis_is_backend_unavailable() -> None:
    client = Redis(port=free_ports(1)[0], socket_connect_timeout=0.5)
    unreachable = WebhookDriver(client, content_url="http://gateway.test", token_key=TOKEN_KEY)
    try:
        with pytest.raises(BackendUnavailableError):
            await unreachable.create(uuid.uuid4(), LIMITS)
        with pytest.raises(BackendUnavailableError):
            await unreachable.delete(uuid.uuid4())
        with pytest.raises(BackendUnavailableError):
            await unreachable.subscribe(uuid.uuid4())
        with pytest.raises(BackendUnavailableError):
            await unreachable.set_limits(uuid.uuid4(), LIMITS)
        with pytest.raises(BackendUnavailableError):
            await unreachable.rotate(uuid.uuid4(), LIMITS)
    finally:
        await client.aclose()


async def test_set_limits_changes_the_cap_and_body_size_but_not_the_url_or_the_requests(
    webhooks: WebhookDriver, redis: Redis
) -> None:
    rid = uuid.uuid4()
    credentials = await webhooks.create(rid, LIMITS)
    key = key_of(credentials)
    await webhooks.record(key, a_request(b"kept"))
    bigger = WebhookLimits(requests_kept=5, max_body_kb=4)
    await webhooks.set_limits(rid, bigger)
    await webhooks.set_limits(rid, bigger)  # idempotent
    assert await redis.hgetall(f"webhook:t_{rid.hex}:limits") == {
        b"requests_kept": b"5",
        b"max_body_kb": b"4",
        b"generation": b"1",
        b"seq": b"1",
    }
    # The same URL takes a body the old limit refused, and keeps more requests.
    assert await webhooks.record(key, a_request(b"x" * 3 * 1024)) is RecordOutcome.STORED
    for n in range(5):
        await webhooks.record(key, a_request(str(n).encode()))
    kept = await webhooks.recent(rid, 100)
    assert [r.body for r in kept] == ["4", "3", "2", "1", "0"]
    assert (await webhooks.create(rid, bigger)).receive_url == credentials.receive_url
    await webhooks.delete(rid)


async def test_rotate_retires_the_old_url_at_once_and_keeps_the_requests(
    webhooks: WebhookDriver,
) -> None:
    rid = uuid.uuid4()
    old = await webhooks.create(rid, LIMITS)
    before = a_request(b"before")
    assert await webhooks.record(key_of(old), before) is RecordOutcome.STORED

    new = await webhooks.rotate(rid, LIMITS)
    assert new.receive_url != old.receive_url
    assert key_of(new) == ReceiveKey(rid, 2)
    # Same host, path and receiver id; only the secret part after the id changes.
    prefix = old.receive_url[: old.receive_url.index("whk_") + 36]
    assert new.receive_url.startswith(prefix)
    assert await webhooks.record(key_of(old), a_request(b"old")) is RecordOutcome.RETIRED_KEY
    assert await webhooks.record(key_of(new), a_request(b"new")) is RecordOutcome.STORED
    assert [r.body for r in await webhooks.recent(rid, 10)] == ["new", "before"]

    # Create again (a provision retry) hands out the current URL, not the retired one.
    assert (await webhooks.create(rid, LIMITS)).receive_url == new.receive_url
    newest = await webhooks.rotate(rid, LIMITS)
    assert await webhooks.record(key_of(new), a_request()) is RecordOutcome.RETIRED_KEY
    assert await webhooks.record(key_of(newest), a_request()) is RecordOutcome.STORED
    await webhooks.delete(rid)


async def test_a_lost_hash_reopens_at_the_recorded_generation_and_never_over_a_newer_one(
    webhooks: WebhookDriver, redis: Redis
) -> None:
    rid = uuid.uuid4()
    first = key_of(await webhooks.create(rid, LIMITS))
    current = key_of(await webhooks.rotate(rid, LIMITS))
    await redis.delete(f"webhook:t_{rid.hex}:limits")  # Redis lost it
    assert await webhooks.record(current, a_request()) is RecordOutcome.NO_RECEIVER
    await webhooks.reopen(current, LIMITS)
    assert await webhooks.record(current, a_request()) is RecordOutcome.STORED
    # A restore that read older credentials arrives late: it must not bring the old URL back.
    await webhooks.reopen(first, LIMITS)
    assert await webhooks.record(first, a_request()) is RecordOutcome.RETIRED_KEY
    assert await webhooks.record(current, a_request()) is RecordOutcome.STORED
    await webhooks.delete(rid)


async def test_usage_is_empty_and_the_write_block_changes_nothing(
    webhooks: WebhookDriver, redis: Redis
) -> None:
    # No byte quota: the list is capped by requests_kept (tested above), so nothing to block.
    rid = uuid.uuid4()
    key = key_of(await webhooks.create(rid, LIMITS))
    await webhooks.record(key, a_request(b"x" * 1024))
    assert await webhooks.usage([rid, uuid.uuid4()]) == {}
    before = await redis.hgetall(f"webhook:t_{rid.hex}:limits")
    await webhooks.block_writes(rid, usage=1, quota=1)
    assert await redis.hgetall(f"webhook:t_{rid.hex}:limits") == before
    assert await webhooks.record(key, a_request()) is RecordOutcome.STORED
    await webhooks.allow_writes(rid)
    # Only the request counter moved (by the one request stored).
    assert await redis.hgetall(f"webhook:t_{rid.hex}:limits") == {**before, b"seq": b"2"}
    await webhooks.delete(rid)


async def test_operations_on_a_missing_receiver_create_nothing(
    webhooks: WebhookDriver,
) -> None:
    deleted, never = uuid.uuid4(), uuid.uuid4()
    await webhooks.create(deleted, LIMITS)
    await webhooks.delete(deleted)
    for rid in (deleted, never):
        with pytest.raises(SpinupError) as rotated:
            await webhooks.rotate(rid, LIMITS)
        assert rotated.value.code is ErrorCode.NOT_FOUND
        await webhooks.set_limits(rid, LIMITS)
        await webhooks.block_writes(rid, usage=1, quota=1)
        await webhooks.allow_writes(rid)
        assert await webhooks.stored_keys(rid) == 0
        assert await webhooks.record(ReceiveKey(rid, 1), a_request()) is RecordOutcome.NO_RECEIVER


async def test_live_streams_have_a_bounded_pool_of_their_own(
    redis: Redis, env: dict[str, str]
) -> None:
    live = Redis.from_url(env["SPINUP_REDIS_URL"], max_connections=1)
    bounded = WebhookDriver(
        redis, content_url="http://gateway.test", token_key=TOKEN_KEY, live=live
    )
    rid = uuid.uuid4()
    key = key_of(await bounded.create(rid, LIMITS))
    try:
        first = await bounded.subscribe(rid)
        with pytest.raises(BackendUnavailableError, match="live streams"):
            await bounded.subscribe(rid)
        # Streams cannot starve the commands: receiving still works beside the full pool.
        assert await bounded.record(key, a_request()) is RecordOutcome.STORED
        await first.close()
        second = await bounded.subscribe(rid)  # the freed connection serves the next stream
        await second.close()
    finally:
        await bounded.delete(rid)
        await live.aclose()


async def test_settings_come_back_with_the_stored_request_and_go_with_the_receiver(
    webhooks: WebhookDriver, redis: Redis
) -> None:
    rid = uuid.uuid4()
    assert not await webhooks.set_setting(rid, Setting.RESPONSE, b'{"status": 202}')
    assert await webhooks.stored_keys(rid) == 0
    key = key_of(await webhooks.create(rid, LIMITS))
    assert await webhooks.receive(key, a_request()) == (RecordOutcome.STORED, None)
    assert await webhooks.set_setting(rid, Setting.RESPONSE, b'{"status": 202}')
    assert await webhooks.set_setting(rid, Setting.VERIFY, b"{}")
    assert await webhooks.receive(key, a_request()) == (RecordOutcome.STORED, b'{"status": 202}')
    too_big = a_request(b"x" * (LIMITS.max_body_kb * 1024 + 1))
    assert await webhooks.receive(key, too_big) == (RecordOutcome.TOO_LARGE, None)
    # A rotation changes the URL, not the receiver: its settings stay.
    rotated = key_of(await webhooks.rotate(rid, LIMITS))
    assert await webhooks.setting(rid, Setting.RESPONSE) == b'{"status": 202}'
    assert await webhooks.receive(rotated, a_request()) == (
        RecordOutcome.STORED,
        b'{"status": 202}',
    )
    await webhooks.clear_setting(rid, Setting.RESPONSE)
    assert await webhooks.receive(rotated, a_request()) == (RecordOutcome.STORED, None)
    await webhooks.delete(rid)
    assert await webhooks.setting(rid, Setting.VERIFY) is None
    assert not await webhooks.set_setting(rid, Setting.VERIFY, b"{}")
    assert await redis.exists(f"webhook:t_{rid.hex}:limits") == 0
