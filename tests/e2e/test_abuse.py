"""Abuse controls over HTTP: count caps (402), the rate limit (429), who a client is, fail open.

A gateway of its own serves plans with tight caps and rate limit and trusts 127.0.0.1 as a
proxy, so each test is a client of its own: a fresh random network named in X-Forwarded-For
(its own fingerprint, its own counters).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from bench.inventory import redis_tenants
from bench.pg_pool import pool_members_taken
from devstack.services import ServiceProcess
from devstack.stack import Stack
from shared.crypto.tokens import fingerprint
from tests.e2e.conftest import gateway_with_plans

pytestmark = pytest.mark.e2e

ACTIVE_PER_KIND = 2
PROVISIONS_PER_DAY = 4
PER_MINUTE = 6  # above every other test's requests per network, so only the rate test hits it


@dataclass(frozen=True)
class Client:
    """A client network; ``host(n)`` is its n-th address."""

    network: IPv4Network | IPv6Network

    def host(self, n: int = 1) -> str:
        return str(self.network[n])

    def headers(self, n: int = 1) -> dict[str, str]:
        return {"X-Forwarded-For": self.host(n)}

    def neighbour(self) -> Client:
        """The next network of the same size: a different client however close."""
        return _claim(_next(self.network))


_used: set[IPv4Network | IPv6Network] = set()


def _next(network: IPv4Network | IPv6Network) -> IPv4Network | IPv6Network:
    following = int(network.network_address) + network.num_addresses
    if isinstance(network, IPv4Network):
        return IPv4Network((following, network.prefixlen))
    return IPv6Network((following, network.prefixlen))


def _claim(network: IPv4Network | IPv6Network) -> Client:
    assert network not in _used, f"{network} was already some other test's client"
    _used.add(network)
    return Client(network)


def fresh_client(version: int = 4) -> Client:
    """A random /24 of 100.64.0.0/10, or a random /48 of 2001:db8::/32, never used before."""
    while True:
        if version == 4:
            base = int(IPv4Address("100.64.0.0")) + (secrets.randbelow(2**14) << 8)
            network: IPv4Network | IPv6Network = IPv4Network((base, 24))
        else:
            base = int(IPv6Address("2001:db8::")) + (secrets.randbelow(2**16) << 80)
            network = IPv6Network((base, 48))
        # Its neighbour is kept free too: tests use it as "the next network".
        if network not in _used and _next(network) not in _used:
            return _claim(network)


def tight_limits(plans: dict[str, Any]) -> None:
    """Tight caps and rate limit for anonymous callers and accounts."""
    for tier in {plans["anonymous_tier"], plans["account_tier"]}:
        plans["tiers"][tier]["caps"] = {
            "active_per_kind": ACTIVE_PER_KIND,
            "provisions_per_day": PROVISIONS_PER_DAY,
        }
        plans["tiers"][tier]["rate_limit"] = {"provisions_per_minute": PER_MINUTE}


@pytest.fixture(scope="module")
def abuse_gateway(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    trusting_localhost = {"SPINUP_TRUSTED_PROXIES": "127.0.0.1/32"}
    directory = tmp_path_factory.mktemp("abuse")
    with gateway_with_plans(stack, directory, tight_limits, trusting_localhost) as gateway:
        yield gateway


@pytest.fixture(scope="module")
async def abuse_http(abuse_gateway: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=str(abuse_gateway.url), timeout=60) as client:
        yield client


def token_key(env: dict[str, str]) -> bytes:
    raw = env["SPINUP_TOKEN_KEY"]
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))


async def create(http: httpx.AsyncClient, path: str, client: Client, n: int = 1) -> dict[str, Any]:
    response = await http.post(f"/{path}/new", headers=client.headers(n))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def delete(http: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    response = await http.delete(f"/resources/{resource['token']}")
    assert response.status_code == 200, response.text


def log_events(gateway: ServiceProcess, event: str) -> list[dict[str, Any]]:
    lines = gateway.log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if f'"{event}"' in line]


async def test_count_cap_refuses_with_402_saying_what_to_do_and_a_delete_makes_room(
    abuse_http: httpx.AsyncClient,
) -> None:
    client = fresh_client()
    made = [await create(abuse_http, "db", client) for _ in range(ACTIVE_PER_KIND)]
    # What the 402 will point to: the claim_url an anonymous response carries.
    assert all("claim_url" in body for body in made)

    refused = await abuse_http.post("/db/new", headers=client.headers())
    assert refused.status_code == 402, refused.text
    body = refused.json()
    assert body["ok"] is False
    assert body["error"] == "plan_limit_reached"
    assert "caps.active_per_kind" in body["message"]
    assert f"{ACTIVE_PER_KIND} live postgres" in body["message"]
    assert "claim_url" in body["agent_action"]
    assert "POST /auth/register" in body["agent_action"]
    assert "DELETE /resources/{token}" in body["agent_action"]
    assert "retry-after" not in refused.headers  # waiting does not help here

    # The cap counts one kind: another kind is still allowed.
    await create(abuse_http, "webhook", client)
    await delete(abuse_http, made[0])
    await create(abuse_http, "db", client)


async def test_provisions_per_day_cap_counts_every_kind_and_deleted_ones(
    abuse_http: httpx.AsyncClient,
) -> None:
    client = fresh_client()
    for path in ("db", "webhook", "db", "webhook")[:PROVISIONS_PER_DAY]:
        await delete(abuse_http, await create(abuse_http, path, client))

    # Nothing is alive, so only the daily cap can refuse.
    refused = await abuse_http.post("/cache/new", headers=client.headers())
    assert refused.status_code == 402, refused.text
    body = refused.json()
    assert body["error"] == "plan_limit_reached"
    assert "caps.provisions_per_day" in body["message"]
    assert f"make {PROVISIONS_PER_DAY} resources in 24 hours" in body["message"]
    assert "claim_url" in body["agent_action"]
    assert "24 hours" in body["agent_action"]


async def test_a_create_refused_after_its_object_was_made_leaves_no_object_behind(
    abuse_http: httpx.AsyncClient, env: dict[str, str]
) -> None:
    # Without an Idempotency-Key a cache is made first and recorded in one append, which counts
    # the caps (ADR 0032, 0040): one refused there was already made, and must be deleted.
    client = fresh_client()
    for _ in range(ACTIVE_PER_KIND):
        await create(abuse_http, "cache", client)
    before = await redis_tenants(env)
    refused = await abuse_http.post("/cache/new", headers=client.headers())
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"] == "plan_limit_reached"
    assert f"{ACTIVE_PER_KIND} live redis" in refused.json()["message"]
    assert await redis_tenants(env) - before == set(), "the refused cache's ACL user is left"


async def test_a_database_refused_at_the_cap_takes_nothing_from_the_warm_pool(
    abuse_http: httpx.AsyncClient, platform_db: asyncpg.Pool
) -> None:
    # A pooled database is scarce: were it taken and dropped on every refused attempt, a network
    # at its cap could drain the pool at its rate limit. Its caps are counted before the take.
    client = fresh_client()
    before = await pool_members_taken(platform_db)
    for _ in range(ACTIVE_PER_KIND):
        await create(abuse_http, "db", client)
    served = await pool_members_taken(platform_db) - before
    assert served == ACTIVE_PER_KIND, "the test stack's pool served no create"
    refused = await abuse_http.post("/db/new", headers=client.headers())
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"] == "plan_limit_reached"
    assert await pool_members_taken(platform_db) == before + ACTIVE_PER_KIND


async def test_a_refused_create_is_refused_again_and_a_made_one_replays_even_at_the_cap(
    abuse_http: httpx.AsyncClient,
) -> None:
    client = fresh_client()

    async def create_keyed(key: str) -> httpx.Response:
        headers = {**client.headers(), "Idempotency-Key": key}
        return await abuse_http.post("/cache/new", headers=headers)

    first = await create_keyed("first")
    assert first.status_code == 201, first.text
    second = await create(abuse_http, "cache", client)
    # At the cap now: the first create's retry is answered with what it made, as before.
    replayed = await create_keyed("first")
    assert replayed.status_code == 201, replayed.text
    assert replayed.json()["token"] == first.json()["token"]
    # A refused create recorded nothing: its retry is counted again, and refused again until
    # there is room.
    for _ in range(2):
        refused = await create_keyed("third")
        assert refused.status_code == 402, refused.text
        assert refused.json()["error"] == "plan_limit_reached"
    await delete(abuse_http, second)
    third = await create_keyed("third")
    assert third.status_code == 201, third.text


async def acl_users_set(env: dict[str, str]) -> int:
    """How many ``ACL SETUSER`` the customer Redis has run: one per cache a worker makes."""
    client = Redis.from_url(env["SPINUP_CUSTOMER_REDIS_URL"])
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    calls: int = stats.get("cmdstat_acl|setuser", {}).get("calls", 0)
    return calls


async def test_a_refusal_is_remembered_so_the_next_create_at_the_cap_reaches_no_backend(
    abuse_http: httpx.AsyncClient, env: dict[str, str]
) -> None:
    # The first refusal comes from the append that would have recorded the cache, after the
    # worker made its ACL user (and deleted it). The gateway remembers it (ADR 0041): the next
    # create at the cap is refused by the rate limit's round trip, with the same words.
    client = fresh_client()
    made = [await create(abuse_http, "cache", client) for _ in range(ACTIVE_PER_KIND)]
    first = await abuse_http.post("/cache/new", headers=client.headers())
    assert first.status_code == 402, first.text
    users_set = await acl_users_set(env)
    for _ in range(PER_MINUTE - ACTIVE_PER_KIND - 2):
        again = await abuse_http.post("/cache/new", headers=client.headers())
        assert again.status_code == 402, again.text
        assert again.json() | {"request_id": None} == first.json() | {"request_id": None}
    assert await acl_users_set(env) == users_set, "a remembered refusal reached the worker"
    # A delete makes room at once (the rate allows one more: 2 made, 4 refused, this one).
    await delete(abuse_http, made[0])
    await create(abuse_http, "cache", client)


async def test_a_claim_makes_room_for_the_network_at_once(abuse_http: httpx.AsyncClient) -> None:
    client = fresh_client()
    made = [await create(abuse_http, "webhook", client) for _ in range(ACTIVE_PER_KIND)]
    refused = await abuse_http.post("/webhook/new", headers=client.headers())
    assert refused.status_code == 402, refused.text
    claimed = await abuse_http.post(
        "/claim", json={"token": made[-1]["claim_url"]}, headers=await register(abuse_http)
    )
    assert claimed.status_code == 200, claimed.text
    # The network holds none of them now: a new anonymous one is let in, not remembered out.
    await create(abuse_http, "webhook", client)


async def test_rate_limit_answers_429_with_retry_after_for_the_whole_network(
    abuse_http: httpx.AsyncClient,
) -> None:
    client = fresh_client()
    statuses = [
        (await abuse_http.post("/webhook/new", headers=client.headers(n))).status_code
        for n in range(1, PER_MINUTE + 1)
    ]
    # Requests refused for a cap spend from the rate too: the rate limit is checked first.
    assert statuses == [201] * ACTIVE_PER_KIND + [402] * (PER_MINUTE - ACTIVE_PER_KIND)

    limited = await abuse_http.post("/db/new", headers=client.headers(200))
    assert limited.status_code == 429, limited.text
    body = limited.json()
    assert body["error"] == "rate_limited"
    assert f"{PER_MINUTE} per minute" in body["message"]
    retry_after = int(limited.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert body["agent_action"].startswith(f"Wait {retry_after} seconds and retry")
    assert "POST /auth/register" in body["agent_action"]

    # A refused request is not counted: asking again at once is refused the same way.
    again = await abuse_http.post("/db/new", headers=client.headers(3))
    assert again.status_code == 429
    assert int(again.headers["retry-after"]) <= retry_after
    # The next network is another client with a budget of its own.
    await create(abuse_http, "db", client.neighbour())


@pytest.mark.parametrize(("version", "far_host"), [(4, 254), (6, 2**79 + 12345)])
async def test_addresses_of_one_network_share_the_caps_and_other_networks_do_not(
    abuse_http: httpx.AsyncClient, version: int, far_host: int
) -> None:
    client = fresh_client(version)
    for n in range(1, ACTIVE_PER_KIND + 1):
        await create(abuse_http, "webhook", client, n)
    # Another address of the same /24 (/48 for IPv6) is the same client.
    refused = await abuse_http.post("/webhook/new", headers=client.headers(far_host))
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"] == "plan_limit_reached"
    await create(abuse_http, "webhook", client.neighbour())
    await create(abuse_http, "webhook", fresh_client(version))


async def test_forwarded_for_counts_only_through_a_trusted_proxy(
    http: httpx.AsyncClient,
    abuse_http: httpx.AsyncClient,
    platform_db: asyncpg.Pool,
    env: dict[str, str],
) -> None:
    key = token_key(env)
    client = fresh_client()
    via_main = await create(http, "webhook", client)  # the main gateway trusts no proxy
    via_proxy = await create(abuse_http, "webhook", client)

    async def fingerprint_of(resource: dict[str, Any]) -> str:
        query = "SELECT fingerprint FROM resources WHERE id = $1::uuid"
        value: str = await platform_db.fetchval(query, resource["id"])
        return value

    # uvicorn's proxy_headers (on by default, trusting 127.0.0.1) would rewrite the peer from
    # X-Forwarded-For before the gateway's own, configured, check ever sees it.
    assert await fingerprint_of(via_main) == fingerprint(key, "127.0.0.1"), (
        "the main gateway believed X-Forwarded-For from a peer it does not trust"
    )
    assert await fingerprint_of(via_proxy) == fingerprint(key, client.host())
    assert fingerprint(key, client.host()) != fingerprint(key, "127.0.0.1")


async def test_platform_redis_down_provisioning_goes_on_and_one_line_says_so(
    stack: Stack, abuse_gateway: ServiceProcess, abuse_http: httpx.AsyncClient
) -> None:
    assert log_events(abuse_gateway, "gateway.ratelimit.unavailable") == []
    client = fresh_client()
    stack.stop_server("redis")
    try:
        for _ in range(ACTIVE_PER_KIND):
            await create(abuse_http, "db", client)
        # The caps live in Postgres: they still hold while the rate limit is off.
        refused = await abuse_http.post("/db/new", headers=client.headers())
        assert refused.status_code == 402, refused.text
    finally:
        stack.start_server("redis")
    (warning,) = log_events(abuse_gateway, "gateway.ratelimit.unavailable")
    assert warning["level"] == "warning"
    assert warning["error"] == "ConnectionError"

    # Redis is asked again on the next request, and the gateway says it is back.
    await create(abuse_http, "webhook", fresh_client())
    assert len(log_events(abuse_gateway, "gateway.ratelimit.restored")) == 1


async def test_a_gateway_started_while_platform_redis_is_down_serves_and_says_why(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # It opens its Redis connections before it serves (gateway.main), but does not wait for
    # them: provisioning goes on without the rate limit, as above.
    stack.stop_server("redis")
    try:
        directory = tmp_path_factory.mktemp("no-redis")
        with gateway_with_plans(stack, directory, lambda _plans: None) as gateway:
            lines = log_events(gateway, "gateway.redis.not_opened")
            assert lines, "no gateway process said it could not open its Redis connections"
            assert {line["error"] for line in lines} == {"ConnectionError"}
            async with httpx.AsyncClient(base_url=str(gateway.url), timeout=60) as http:
                made = await http.post("/cache/new")
                assert made.status_code == 201, made.text
                await http.delete(f"/resources/{made.json()['token']}")
    finally:
        stack.start_server("redis")


async def register(http: httpx.AsyncClient) -> dict[str, str]:
    """A new account; the Authorization header of its session."""
    email = f"abuse-{secrets.token_hex(6)}@example.com"
    response = await http.post(
        "/auth/register", json={"email": email, "password": "correct horse battery staple"}
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def test_an_account_has_caps_of_its_own_wherever_it_calls_from(
    abuse_http: httpx.AsyncClient,
) -> None:
    account = await register(abuse_http)
    home = fresh_client()

    async def create_as_account(client: Client) -> httpx.Response:
        return await abuse_http.post("/webhook/new", headers={**account, **client.headers()})

    made = []
    for _ in range(ACTIVE_PER_KIND):
        response = await create_as_account(home)
        assert response.status_code == 201, response.text
        assert response.json()["expires_at"] is None
        made.append(response.json())
    # The cap follows the account to another network...
    refused = await create_as_account(fresh_client())
    assert refused.status_code == 402, refused.text
    body = refused.json()
    assert body["error"] == "plan_limit_reached"
    assert f"plan allows {ACTIVE_PER_KIND} live webhook" in body["message"]
    assert "caps.active_per_kind" in body["message"]
    assert "GET /plans" in body["agent_action"]
    assert "DELETE /resources/{token}" in body["agent_action"]
    assert "claim_url" not in body["agent_action"]
    # ...and the network's anonymous callers are counted apart from it.
    await create(abuse_http, "webhook", home)
    await delete(abuse_http, made[0])
    assert (await create_as_account(home)).status_code == 201


async def test_an_account_has_a_rate_limit_of_its_own_across_networks(
    abuse_http: httpx.AsyncClient,
) -> None:
    account = await register(abuse_http)
    statuses = [
        (
            await abuse_http.post("/webhook/new", headers={**account, **fresh_client().headers()})
        ).status_code
        for _ in range(PER_MINUTE)
    ]
    assert statuses == [201] * ACTIVE_PER_KIND + [402] * (PER_MINUTE - ACTIVE_PER_KIND)
    limited = await abuse_http.post("/db/new", headers={**account, **fresh_client().headers()})
    assert limited.status_code == 429, limited.text
    assert int(limited.headers["retry-after"]) >= 1
    assert "GET /plans" in limited.json()["agent_action"]
    # Anonymous callers of any network are not slowed by an account's requests.
    await create(abuse_http, "db", fresh_client())
