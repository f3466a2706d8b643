"""A user's view: NATS accounts over HTTP, used with nats-py, and every way out of one tried."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.client import RawCredentials
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from devstack.stack import Stack
from queue_provisioner.driver import KIB, MIB, NatsAccountDriver
from shared.crypto import natsjwt
from shared.testing.polling import eventually
from tests.e2e.conftest import SHORT_TTL_S, new_resource

pytestmark = pytest.mark.e2e

# JetStream API error codes (nats-server ``errors.json``).
MAX_STREAMS_REACHED = 10027
INSUFFICIENT_STORAGE = 10047
INSUFFICIENT_MEMORY = 10028
# A write that would take the account past its storage (``NewJSAccountResourcesExceededError``).
ACCOUNT_RESOURCES_EXCEEDED = 10002


@pytest.fixture
def operator_seed(env: dict[str, str]) -> str:
    return Path(env["SPINUP_CUSTOMER_NATS_OPERATOR_SEED_FILE"]).read_text()


@pytest.fixture
async def queue_driver(env: dict[str, str], operator_seed: str) -> AsyncIterator[NatsAccountDriver]:
    driver = await NatsAccountDriver.connect(
        env["SPINUP_CUSTOMER_NATS_URL"],
        system_creds=Path(env["SPINUP_CUSTOMER_NATS_SYSTEM_CREDS"]),
        operator_seed=operator_seed,
        public_url=env["SPINUP_CUSTOMER_NATS_PUBLIC_URL"],
        request_timeout=2.0,
        name="test-queue-e2e",
    )
    yield driver
    await driver.close()


async def connect(queue: dict[str, Any], creds: str | None = None, **options: Any) -> NatsClient:
    options.setdefault("allow_reconnect", False)
    client = NatsClient()
    try:
        await client.connect(
            queue["connection_url"],
            user_credentials=RawCredentials(creds or queue["credentials"]["creds"]),
            **options,
        )
    except BaseException:
        # nats-py leaves the socket of a refused first connect open.
        await client.close()
        raise
    return client


def async_check(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def checked() -> bool:
        return check()

    return checked


@contextlib.asynccontextmanager
async def tenant(queue: dict[str, Any]) -> AsyncIterator[NatsClient]:
    client = await connect(queue)
    try:
        yield client
    finally:
        await client.close()


async def test_new_queue_answers_with_a_working_account(http: httpx.AsyncClient) -> None:
    queue = await new_resource(http, "queue")
    credentials = queue["credentials"]
    assert credentials["type"] == "nats"
    assert queue["connection_url"] == credentials["connection_url"]
    assert queue["connection_url"].startswith("nats://")
    assert credentials["account"].startswith("A")
    assert natsjwt.jwt_of_creds(credentials["creds"]) == credentials["user_jwt"]
    assert natsjwt.decode_jwt(credentials["user_jwt"], issuer=credentials["account"])
    assert credentials["user_seed"] in credentials["creds"]
    shown = (await http.get(f"/resources/{queue['token']}")).json()
    assert shown["kind"] == "nats"
    assert shown["status"] == "active"
    assert shown["credentials"] == credentials


async def test_two_tenants_each_publish_subscribe_and_keep_a_stream_of_the_same_name(
    http: httpx.AsyncClient,
) -> None:
    a, b = await new_resource(http, "queue"), await new_resource(http, "queue")
    assert a["credentials"]["account"] != b["credentials"]["account"]
    for queue, word in ((a, b"from a"), (b, b"from b")):
        async with tenant(queue) as client:
            subscription = await client.subscribe("greetings")
            await client.publish("greetings", word)
            assert (await subscription.next_msg(timeout=2)).data == word
            js = client.jetstream()
            await js.add_stream(name="ORDERS", subjects=["orders.>"], max_bytes=64 * KIB)
            await js.publish("orders.new", word)
    for queue, word in ((a, b"from a"), (b, b"from b")):
        async with tenant(queue) as client:
            js = client.jetstream()
            info = await js.stream_info("ORDERS")
            assert info.state.messages == 1
            assert (await js.get_msg("ORDERS", 1)).data == word


async def test_tenant_sees_none_of_another_tenants_messages_streams_or_system_subjects(
    http: httpx.AsyncClient,
) -> None:
    a, b = await new_resource(http, "queue"), await new_resource(http, "queue")
    async with tenant(a) as spy, tenant(b) as victim:
        seen: list[str] = []

        async def record(msg: Msg) -> None:
            seen.append(msg.subject)

        everything = await spy.subscribe(">", cb=record)
        await spy.flush()
        victim_js = victim.jetstream()
        await victim_js.add_stream(name="ORDERS", subjects=["orders.>"], max_bytes=64 * KIB)
        await victim_js.add_stream(name="B_ONLY", subjects=["secret.>"], max_bytes=64 * KIB)
        for subject in ("orders.new", "secret.plans", "greetings", "_INBOX.x", "$JS.EVENT.x"):
            await victim.publish(subject, b"for b only")
        await victim_js.publish("secret.plans", b"stored for b")
        await victim.flush()
        await asyncio.sleep(0.5)
        # The spy's own message proves its subscription is live, so "nothing else" means it.
        await spy.publish("spy.check", b"mine")
        await spy.flush()
        assert await eventually(async_check(lambda: "spy.check" in seen))
        assert seen == ["spy.check"]
        await everything.unsubscribe()

        spy_js = spy.jetstream()
        await spy_js.add_stream(name="ORDERS", subjects=["orders.>"], max_bytes=64 * KIB)
        assert [info.config.name for info in await spy_js.streams_info()] == ["ORDERS"]
        assert (await spy_js.stream_info("ORDERS")).state.messages == 0
        with pytest.raises(NotFoundError):
            await spy_js.stream_info("B_ONLY")
        stored_for_b = (await victim_js.stream_info("B_ONLY")).state.messages
        with pytest.raises(NoRespondersError):
            await spy.request("secret.plans", b"write into b", timeout=1)
        assert (await victim_js.stream_info("B_ONLY")).state.messages == stored_for_b

        # The system account, and through it the list of accounts, is out of reach; so is the
        # resolver's update subject, the one way to push an account JWT that imports B's streams.
        for subject in (
            "$SYS.REQ.SERVER.PING",
            "$SYS.REQ.CLAIMS.LIST",
            f"$SYS.REQ.ACCOUNT.{b['credentials']['account']}.CLAIMS.LOOKUP",
            "$SYS.REQ.CLAIMS.UPDATE",
            f"$SYS.REQ.ACCOUNT.{a['credentials']['account']}.CLAIMS.UPDATE",
        ):
            with pytest.raises(NoRespondersError):
                await spy.request(subject, b"", timeout=1)


async def test_tenant_cannot_log_into_another_account(http: httpx.AsyncClient) -> None:
    a, b = await new_resource(http, "queue"), await new_resource(http, "queue")
    spy_user = natsjwt.NKey.from_seed(a["credentials"]["user_seed"])
    # B's JWT with A's seed: the nonce signature does not match B's user key.
    mixed = natsjwt.creds_file(b["credentials"]["user_jwt"], spy_user.seed)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(b, mixed)
    # A tenant holds only a user key; a user JWT it signs itself, naming B, is refused.
    forged_user = natsjwt.NKey.generate(natsjwt.KeyKind.USER)
    forged = natsjwt.encode_claims(
        forged_user.public_key,
        {"type": "user", "issuer_account": b["credentials"]["account"], "pub": {}, "sub": {}},
        spy_user,
    )
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(b, natsjwt.creds_file(forged, forged_user.seed))


async def test_stream_count_and_sizes_from_the_plan_are_enforced_by_the_server(
    http: httpx.AsyncClient,
) -> None:
    queue = await new_resource(http, "queue")
    limits = queue["limits"]
    async with tenant(queue) as client:
        js = client.jetstream()
        with pytest.raises(APIError) as too_big:
            await js.add_stream(
                name="HUGE", subjects=["huge"], max_bytes=limits["disk_storage_mb"] * MIB + 1
            )
        assert too_big.value.err_code == INSUFFICIENT_STORAGE
        with pytest.raises(APIError) as too_big_in_memory:
            await js.add_stream(
                name="HUGEMEM",
                subjects=["hugemem"],
                storage="memory",
                max_bytes=limits["memory_storage_mb"] * MIB + 1,
            )
        assert too_big_in_memory.value.err_code == INSUFFICIENT_MEMORY
        for index in range(limits["streams"]):
            await js.add_stream(name=f"S{index}", subjects=[f"s{index}"], max_bytes=KIB)
        with pytest.raises(APIError) as one_more:
            await js.add_stream(name="ONE_MORE", subjects=["one.more"], max_bytes=KIB)
        assert one_more.value.err_code == MAX_STREAMS_REACHED
        for index in range(limits["consumers"]):
            await js.add_consumer("S0", durable_name=f"c{index}")
        with pytest.raises(APIError, match="maximum consumers"):
            await js.add_consumer("S0", durable_name="one_more")


async def test_connection_count_from_the_plan_is_enforced_by_the_server(
    http: httpx.AsyncClient,
) -> None:
    queue = await new_resource(http, "queue")
    clients = [await connect(queue) for _ in range(queue["limits"]["connections"])]
    try:
        with pytest.raises(nats.errors.Error, match="maximum account active connections"):
            await connect(queue)
    finally:
        for client in clients:
            await client.close()


async def test_subscriptions_per_connection_from_the_plan_are_enforced_by_the_server(
    http: httpx.AsyncClient,
) -> None:
    queue = await new_resource(http, "queue")
    limit = queue["limits"]["subscriptions_per_connection"]
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    async def quiet(exc: Exception) -> None:
        pass  # the refusal is what this test provokes

    client = await connect(queue, closed_cb=on_closed, error_cb=quiet)
    try:
        for index in range(limit):
            await client.subscribe(f"orders.{index}")
        await client.flush()
        assert client.is_connected
        await client.subscribe("orders.one_more")
        await asyncio.wait_for(closed.wait(), timeout=5)
        assert "maximum subscriptions exceeded" in str(client.last_error).lower()
    finally:
        await client.close()


async def test_payload_limit_is_what_the_client_is_told_and_the_server_holds_it(
    http: httpx.AsyncClient,
) -> None:
    queue = await new_resource(http, "queue")
    limit = queue["limits"]["max_payload_kb"] * KIB
    async with tenant(queue) as client:
        # The server's INFO (sent before login) and the account agree (ADR 0025): nats-py
        # refuses a bigger message itself, and the connection stays up.
        assert client.max_payload == limit
        subscription = await client.subscribe("big")
        await client.publish("big", b"x" * limit)
        assert len((await subscription.next_msg(timeout=2)).data) == limit
        with pytest.raises(nats.errors.MaxPayloadError):
            await client.publish("big", b"x" * (limit + 1))
        await client.flush(timeout=2)
        assert client.is_connected
    # A client that ignores the INFO is cut off by the server.
    client = await connect(queue)
    client._max_payload = 2 * limit
    with contextlib.suppress(nats.errors.Error, OSError):
        await client.publish("big", b"x" * (limit + 1))
        await client.flush(timeout=2)
    assert await eventually(async_check(lambda: client.is_closed)), (
        "the server accepted an oversized message"
    )


async def refusal_when_filling(js: JetStreamContext, subject: str, chunk: bytes) -> int | None:
    """Publish ``chunk`` until JetStream refuses (at most 1000 times); the refusal's code."""
    for _ in range(1000):
        try:
            await js.publish(subject, chunk)
        except APIError as refused:
            return refused.err_code
    return None


async def test_unsized_streams_of_a_full_account_take_nothing_from_another(
    http: httpx.AsyncClient,
) -> None:
    a, b = await new_resource(http, "queue"), await new_resource(http, "queue")
    quota = a["limits"]["disk_storage_mb"] * MIB
    chunk = b"z" * (256 * KIB)
    async with tenant(a) as client:
        js = client.jetstream()
        # No max_bytes (ADR 0025): the stream reserves nothing and stops at the account's quota.
        await js.add_stream(name="FILL", subjects=["fill"])
        await js.add_stream(name="MEM", subjects=["mem"], storage="memory")
        assert await refusal_when_filling(js, "fill", chunk) == ACCOUNT_RESOURCES_EXCEEDED
        assert (await js.stream_info("FILL")).state.bytes <= quota
        assert await refusal_when_filling(js, "mem", chunk) == ACCOUNT_RESOURCES_EXCEEDED
        assert (await js.stream_info("MEM")).state.bytes <= a["limits"]["memory_storage_mb"] * MIB
        # Updating the stream to a size past the quota is refused too.
        with pytest.raises(APIError):
            await js.update_stream(name="FILL", subjects=["fill"], max_bytes=quota + 1)
    async with tenant(b) as client:
        js = client.jetstream()
        await js.add_stream(name="FILL", subjects=["fill"])
        for _ in range(quota // len(chunk) - 1):
            await js.publish("fill", chunk)
        assert (await js.stream_info("FILL")).state.messages == quota // len(chunk) - 1


async def test_delete_closes_open_connections_and_the_credentials_stop_working(
    http: httpx.AsyncClient, queue_driver: NatsAccountDriver
) -> None:
    queue = await new_resource(http, "queue")
    resource_id = uuid.UUID(queue["id"])
    client = await connect(
        queue,
        allow_reconnect=True,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.1,
    )
    assert await queue_driver.exists(resource_id)
    deleted = await http.delete(f"/resources/{queue['token']}")
    assert deleted.status_code == 200, deleted.text
    assert await eventually(async_check(lambda: client.is_closed)), (
        "the open connection was not closed"
    )
    # The server ends the session with this error; nats-py then stops reconnecting.
    assert "account authentication expired" in str(client.last_error), client.last_error
    assert not await queue_driver.exists(resource_id)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(queue)


async def test_expired_queue_is_reaped_and_its_account_gone(
    http: httpx.AsyncClient,
    short_ttl_http: httpx.AsyncClient,
    queue_driver: NatsAccountDriver,
) -> None:
    queue = await new_resource(short_ttl_http, "queue")
    assert queue["limits"]["expires_in"] <= SHORT_TTL_S
    client = await connect(queue)
    await client.close()

    async def gone() -> bool:
        return (await http.get(f"/resources/{queue['token']}")).status_code == 410

    assert await eventually(gone), "the reaper did not expire the queue"
    assert not await queue_driver.exists(uuid.UUID(queue["id"]))
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(queue)


async def test_customer_nats_down_gives_503_and_recovers(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    stack.stop_server("customer-nats")
    try:
        response = await http.post("/queue/new")
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "backend_unavailable"
    finally:
        stack.start_server("customer-nats")

    async def recovered() -> bool:
        return (await http.post("/queue/new")).status_code == 201

    assert await eventually(recovered), "provisioning did not recover after the server restart"
