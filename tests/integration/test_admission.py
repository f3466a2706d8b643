"""The rate limit against the real platform Redis, failing open against a dead, hung or paused
one, and what the 402/429 errors tell a person or an agent (numbers and tier names from
plans.yaml)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from structlog.testing import capture_logs

from devstack.procs import free_ports
from gateway.admission import policy
from gateway.admission.ratelimit import RateLimiter
from shared.caps import over_active_cap, over_daily_cap
from shared.contracts.errors import ErrorCode
from shared.contracts.kinds import ResourceKind
from shared.plans import load_plans
from shared.redis_handshake import open_connections

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
WINDOW_MS = 1000  # a one-second "minute", so the window can be watched sliding


def gateway_redis(url: str) -> Redis:
    """A client configured as gateway.main configures its own."""
    return Redis.from_url(
        url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
    )


def limiter_of(redis: Redis) -> RateLimiter:
    """A limiter as the gateway builds it, with a one-second window."""
    return RateLimiter(redis, window_ms=WINDOW_MS)


@pytest.fixture
async def redis(env: dict[str, str]) -> AsyncIterator[Redis]:
    client = gateway_redis(env["SPINUP_REDIS_URL"])
    yield client
    await client.aclose()


async def test_the_limit_holds_in_any_window_and_a_refused_request_is_not_counted(
    redis: Redis,
) -> None:
    limiter, holder = limiter_of(redis), f"client:{uuid.uuid4().hex}"
    assert await limiter.spend(holder, 3) == 0
    await asyncio.sleep(WINDOW_MS / 2 / 1000)
    assert [await limiter.spend(holder, 3) for _ in range(2)] == [0, 0]
    # Full: the next slot frees when the first request leaves the window, half a window on.
    wait_ms = await limiter.spend(holder, 3)
    assert 0 < wait_ms <= WINDOW_MS / 2
    # Refusals are not recorded: they do not push the next free slot further away.
    again = await limiter.spend(holder, 3)
    assert 0 < again <= wait_ms
    await asyncio.sleep(again / 1000)
    assert await limiter.spend(holder, 3) == 0
    # A sliding window: only that one slot freed, the two later requests still count.
    assert await limiter.spend(holder, 3) > 0


async def test_holders_are_counted_apart_and_their_logs_expire(redis: Redis) -> None:
    limiter = limiter_of(redis)
    first, second = f"client:{uuid.uuid4().hex}", f"account:{uuid.uuid4()}"
    assert await limiter.spend(first, 1) == 0
    assert await limiter.spend(first, 1) > 0
    assert await limiter.spend(second, 1) == 0
    ttl_ms = await redis.pttl(f"ratelimit:provision:{first}")
    assert 0 < ttl_ms <= WINDOW_MS


async def test_a_remembered_refusal_is_recalled_under_its_caps_only_after_the_rate(
    redis: Redis,
) -> None:
    limiter, holder = limiter_of(redis), f"client:{uuid.uuid4().hex}"
    key, scope, refusal = f"caps:refused:{holder}:redis", "2/4\n", '2/4\n{"message":"full"}'

    async def ask(under: str) -> tuple[int, str | None]:
        return await limiter.spend_unless_refused(holder, 3, refusal_key=key, refusal_scope=under)

    assert await ask(scope) == (0, None)  # nothing remembered
    await limiter.remember(key, refusal, for_s=60)
    assert 0 < await redis.ttl(key) <= 60
    assert await ask(scope) == (0, refusal)
    # Under other caps (a plan changed) it is not recalled.
    assert await ask("3/4\n") == (0, None)
    # The rate comes first: each ask above spent a slot, so the fourth is over it, recalled or not.
    wait_ms, recalled = await ask(scope)
    assert wait_ms > 0
    assert recalled is None
    await limiter.forget(key)
    assert await redis.exists(key) == 0


async def test_a_redis_that_forgot_the_script_gets_it_again(redis: Redis) -> None:
    limiter, holder = limiter_of(redis), f"client:{uuid.uuid4().hex}"
    assert await limiter.spend(holder, 2) == 0
    await redis.script_flush()  # what a restart does
    with capture_logs() as logs:
        assert await limiter.spend(holder, 2) == 0
        assert await limiter.spend(holder, 2) > 0
    assert logs == []


async def test_a_dead_redis_lets_every_request_through_and_warns_once() -> None:
    dead = gateway_redis(f"redis://127.0.0.1:{free_ports(1)[0]}/0")
    limiter = limiter_of(dead)
    try:
        with capture_logs() as logs:
            waits = [await limiter.spend("client:x", 1) for _ in range(20)]
            # Remembering and forgetting a refusal fail as quietly: it is simply not recalled.
            await limiter.remember("caps:refused:client:x:redis", "2/4\n{}", for_s=60)
            await limiter.forget("caps:refused:client:x:redis")
            recalled = await limiter.spend_unless_refused(
                "client:x", 1, refusal_key="caps:refused:client:x:redis", refusal_scope="2/4\n"
            )
    finally:
        await dead.aclose()
    assert waits == [0] * 20
    assert recalled == (0, None)
    assert [entry["event"] for entry in logs] == ["gateway.ratelimit.unavailable"]
    assert logs[0]["log_level"] == "warning"
    assert logs[0]["failures"] == 1


async def test_a_hung_redis_costs_at_most_the_limiter_timeout(env: dict[str, str]) -> None:
    released = asyncio.Event()
    handlers: list[asyncio.Task[None]] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        handlers.append(handler)
        try:
            await reader.read(1 << 16)
            await released.wait()  # answers nothing until the test is over
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hung = gateway_redis(f"redis://127.0.0.1:{port}/0")
    try:
        with capture_logs() as logs:
            began = time.monotonic()
            assert await limiter_of(hung).spend("client:x", 1) == 0
            took = time.monotonic() - began
    finally:
        await hung.aclose()
        released.set()
        await asyncio.gather(*handlers, return_exceptions=True)
        server.close()
        await server.wait_closed()
    # The client's own timeout (0.5 s, and a retry) would take a second: the limiter's is tighter.
    assert took < 0.5
    assert [entry["event"] for entry in logs] == ["gateway.ratelimit.unavailable"]


async def test_redis_answering_again_is_said_once(redis: Redis) -> None:
    limiter = limiter_of(redis)
    # A paused Redis holds writes (the limiter's script among them) past the limiter's timeout.
    await redis.client_pause(300, all=False)
    with capture_logs() as logs:
        assert await limiter.spend(f"client:{uuid.uuid4().hex}", 1) == 0
        await asyncio.sleep(0.3)
        for _ in range(3):
            await limiter.spend(f"client:{uuid.uuid4().hex}", 1)
    events = [entry["event"] for entry in logs]
    assert events == ["gateway.ratelimit.unavailable", "gateway.ratelimit.restored"]
    assert logs[0]["error"] == "TimeoutError"


async def test_connections_opened_before_serving_serve_a_burst_and_a_dead_redis_raises(
    env: dict[str, str],
) -> None:
    # What the gateway does at start (gateway.main): a burst finds its connections open.
    url = env["SPINUP_REDIS_URL"]
    name = f"opened-{uuid.uuid4().hex[:8]}"
    client, observer = Redis.from_url(url, client_name=name), Redis.from_url(url)
    try:

        async def opened() -> int:
            return sum(1 for listed in await observer.client_list() if listed["name"] == name)

        await open_connections(client, 5)
        assert await opened() == 5
        await asyncio.gather(*(client.ping() for _ in range(5)))
        assert await opened() == 5, "the burst opened connections of its own"
    finally:
        await client.aclose()
        await observer.aclose()
    # Nothing listening: an error the gateway logs before it serves anyway.
    (port,) = free_ports(1)
    dead = gateway_redis(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(RedisConnectionError):
        await open_connections(dead, 3)
    await dead.aclose()


def test_errors_name_the_cap_its_value_and_what_to_do() -> None:
    plans = load_plans(REPO_ROOT / "plans.yaml")
    anonymous, account = plans.anonymous, plans.account

    error = over_active_cap(
        plans.anonymous_tier,
        anonymous.caps.active_per_kind,
        ResourceKind.POSTGRES,
        7,
        anonymous=True,
    )
    assert error.code is ErrorCode.PLAN_LIMIT_REACHED
    assert f"{anonymous.caps.active_per_kind} live postgres" in error.message
    assert "caps.active_per_kind" in error.message
    assert error.agent_action is not None
    assert "claim_url" in error.agent_action
    assert "DELETE /resources/{token}" in error.agent_action

    error = over_active_cap(
        plans.account_tier, account.caps.active_per_kind, ResourceKind.REDIS, 7, anonymous=False
    )
    assert f"the {plans.account_tier} plan allows {account.caps.active_per_kind}" in error.message
    assert error.agent_action is not None
    assert "GET /plans" in error.agent_action
    assert "GET /resources?kind=redis" in error.agent_action

    error = over_daily_cap(plans.account_tier, account.caps.provisions_per_day, 9, anonymous=False)
    assert f"{account.caps.provisions_per_day} new resources in 24 hours" in error.message
    assert error.agent_action is not None
    assert "GET /plans" in error.agent_action

    error = policy._rate_limited(anonymous, 1500, anonymous=True)
    assert error.code is ErrorCode.RATE_LIMITED
    assert error.retry_after_s == 2  # rounded up: never tell a client to come back too early
    assert f"{anonymous.rate_limit.provisions_per_minute} per minute" in error.message
    assert error.agent_action is not None
    assert error.agent_action.startswith("Wait 2 seconds and retry")
    assert "POST /auth/register" in error.agent_action
    account_error = policy._rate_limited(account, 1, anonymous=False)
    assert account_error.retry_after_s == 1
    assert account_error.agent_action is not None
    assert "GET /plans" in account_error.agent_action
