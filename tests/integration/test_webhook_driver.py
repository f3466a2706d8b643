import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from devstack.procs import free_ports
from gateway.webhook_driver import (
    RecordOutcome,
    StoredRequest,
    WebhookDriver,
    encode_body,
    resource_id_of_receive_key,
)
from shared.contracts.errors import BackendUnavailableError
from shared.contracts.kinds import WebhookLimits

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
    return WebhookDriver(redis, public_url="http://gateway.test/", token_key=TOKEN_KEY)


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
    key = second.receive_url.rsplit("/", 1)[1]
    assert resource_id_of_receive_key(TOKEN_KEY, key) == rid
    assert resource_id_of_receive_key(b"x" * 32, key) is None
    assert await redis.hgetall(f"webhook:t_{rid.hex}:limits") == {
        b"requests_kept": b"3",
        b"max_body_kb": b"1",
    }
    await webhooks.delete(rid)


async def test_requests_are_kept_newest_first_up_to_the_cap(webhooks: WebhookDriver) -> None:
    rid = uuid.uuid4()
    await webhooks.create(rid, LIMITS)
    sent = [a_request(f'{{"n": {n}}}'.encode()) for n in range(LIMITS.requests_kept + 2)]
    for request in sent:
        assert await webhooks.record(rid, request) is RecordOutcome.STORED
    kept = await webhooks.recent(rid, 100)
    assert [r.id for r in kept] == [r.id for r in reversed(sent)][: LIMITS.requests_kept]
    assert kept[0] == sent[-1]
    await webhooks.delete(rid)


async def test_body_over_the_limit_is_refused_and_not_stored(webhooks: WebhookDriver) -> None:
    rid = uuid.uuid4()
    await webhooks.create(rid, LIMITS)
    too_big = a_request(b"x" * (LIMITS.max_body_kb * 1024 + 1))
    assert await webhooks.record(rid, too_big) is RecordOutcome.TOO_LARGE
    assert await webhooks.recent(rid, 10) == []
    binary = a_request(b"\xff" * (LIMITS.max_body_kb * 1024))
    assert binary.body_encoding == "base64"
    assert await webhooks.record(rid, binary) is RecordOutcome.STORED
    (stored,) = await webhooks.recent(rid, 10)
    assert base64.b64decode(stored.body) == b"\xff" * (LIMITS.max_body_kb * 1024)
    await webhooks.delete(rid)


async def test_delete_is_idempotent_removes_everything_and_refuses_later_requests(
    webhooks: WebhookDriver,
) -> None:
    rid = uuid.uuid4()
    await webhooks.delete(rid)
    await webhooks.create(rid, LIMITS)
    await webhooks.record(rid, a_request())
    assert await webhooks.stored_keys(rid) == 2
    await webhooks.delete(rid)
    await webhooks.delete(rid)
    assert await webhooks.stored_keys(rid) == 0
    assert await webhooks.record(rid, a_request()) is RecordOutcome.NO_RECEIVER
    assert await webhooks.stored_keys(rid) == 0


async def test_live_feed_gets_new_requests_and_ends_when_the_receiver_is_deleted(
    webhooks: WebhookDriver,
) -> None:
    rid = uuid.uuid4()
    await webhooks.create(rid, LIMITS)
    live = await webhooks.subscribe(rid)
    sent = a_request(b"live")
    await webhooks.record(rid, sent)
    events = live.events(keepalive_s=0.2)
    assert await anext(events) == sent
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
    unreachable = WebhookDriver(client, public_url="http://gateway.test", token_key=TOKEN_KEY)
    try:
        with pytest.raises(BackendUnavailableError):
            await unreachable.create(uuid.uuid4(), LIMITS)
        with pytest.raises(BackendUnavailableError):
            await unreachable.delete(uuid.uuid4())
        with pytest.raises(BackendUnavailableError):
            await unreachable.subscribe(uuid.uuid4())
    finally:
        await client.aclose()
