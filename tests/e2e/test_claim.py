"""Claim: anonymous resources move into an account, with their limits raised in each backend.

Every test shares 127.0.0.1, so a claim through it would sweep up every other test's anonymous
resources. Here each test is a client network of its own: a gateway that trusts 127.0.0.1 as a
proxy, and an ``X-Forwarded-For`` address in a /24 nobody else uses.
"""

from __future__ import annotations

import io
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import httpx
import jwt
import pytest
import redis.asyncio as aioredis
from miniopy_async.api import Minio
from nats.aio.client import Client as NatsClient
from nats.aio.client import RawCredentials
from nats.js.errors import APIError

from devstack.procs import free_ports
from devstack.stack import Stack
from gateway.claims.routes import mint_claim_token
from shared.config import Env
from shared.plans import Plans, Tier, load_plans
from storage_provisioner.driver import S3Driver

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
PASSWORD = "correct horse battery staple"
KIND_PATHS = {
    "postgres": "/db/new",
    "nats": "/queue/new",
    "s3": "/storage/new",
    "redis": "/cache/new",
    "mongo": "/nosql/new",
    "webhook": "/webhook/new",
}


@pytest.fixture(scope="session")
def plans(env: dict[str, str]) -> Plans:
    return load_plans(Path(env["SPINUP_PLANS_FILE"]))


@pytest.fixture(scope="session")
def jwt_key(env: dict[str, str]) -> bytes:
    return Env(env).key("SPINUP_JWT_KEY")


@pytest.fixture(scope="module")
def proxied_gateway_url(stack: Stack) -> Iterator[str]:
    """A gateway that believes X-Forwarded-For from 127.0.0.1, so a test picks its network."""
    gateway = stack.start_extra_gateway(
        free_ports(1)[0], {"SPINUP_TRUSTED_PROXIES": "127.0.0.1/32"}
    )
    try:
        yield str(gateway.url)
    finally:
        gateway.stop()


@pytest.fixture
async def network(proxied_gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client on a /24 of its own (through the proxied gateway)."""
    address = f"10.{random.randrange(256)}.{random.randrange(256)}.7"  # noqa: S311
    async with httpx.AsyncClient(
        base_url=proxied_gateway_url, timeout=60, headers={"X-Forwarded-For": address}
    ) as client:
        yield client


@pytest.fixture
async def aiohttp_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def account(http: httpx.AsyncClient) -> str:
    """Register and log in; the session token."""
    email = f"claim-{uuid.uuid4().hex[:12]}@example.com"
    credentials = {"email": email, "password": PASSWORD}
    registered = await http.post("/auth/register", json=credentials)
    assert registered.status_code == 201, registered.text
    logged_in = await http.post("/auth/login", json=credentials)
    assert logged_in.status_code == 200, logged_in.text
    token: str = logged_in.json()["token"]
    return token


async def create(client: httpx.AsyncClient, kind: str) -> dict[str, Any]:
    response = await client.post(KIND_PATHS[kind])
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["tier"] == "anonymous"
    return body


def token_of(claim_url: str) -> str:
    return parse_qs(urlsplit(claim_url).query)["t"][0]


async def claim(http: httpx.AsyncClient, token: str, session: str | None) -> httpx.Response:
    headers = bearer(session) if session else {}
    return await http.post("/claim", json={"token": token}, headers=headers)


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == code
    assert body["message"]
    return body


# -- the whole flow -------------------------------------------------------------------------------


async def nats_client(queue: dict[str, Any]) -> NatsClient:
    client = NatsClient()
    try:
        await client.connect(
            queue["connection_url"],
            user_credentials=RawCredentials(queue["credentials"]["creds"]),
            allow_reconnect=False,
        )
    except BaseException:
        await client.close()
        raise
    return client


def minio_of(bucket: dict[str, Any], session: aiohttp.ClientSession) -> Minio:
    creds = bucket["credentials"]
    return Minio(
        creds["endpoint"].removeprefix("http://"),
        access_key=creds["access_key"],
        secret_key=creds["secret_key"],
        secure=False,
        region=creds["region"],
        session=session,
    )


async def role_limits(admin: asyncpg.Connection, resource_id: str) -> tuple[int, int]:
    name = f"t_{uuid.UUID(resource_id).hex}"
    row = await admin.fetchrow(
        "SELECT r.rolconnlimit, d.datconnlimit FROM pg_roles r JOIN pg_database d"
        " ON d.datname = r.rolname WHERE r.rolname = $1",
        name,
    )
    assert row is not None
    return int(row["rolconnlimit"]), int(row["datconnlimit"])


async def check_anonymous_limits_in_the_backends(
    made: dict[str, dict[str, Any]], tier: Tier, admin: asyncpg.Connection, s3_driver: S3Driver
) -> None:
    db, queue, bucket = made["postgres"], made["nats"], made["s3"]
    assert await role_limits(admin, db["id"]) == (tier.postgres.connections,) * 2
    assert await s3_driver.quota_bytes(uuid.UUID(bucket["id"])) == tier.s3.storage_mb * MIB
    client = await nats_client(queue)
    try:
        with pytest.raises(APIError):
            await client.jetstream().add_stream(
                name="BIG", subjects=["big"], max_bytes=tier.nats.disk_storage_mb * MIB + 1
            )
    finally:
        await client.close()


async def check_account_limits_in_the_backends(
    made: dict[str, dict[str, Any]],
    plans: Plans,
    admin: asyncpg.Connection,
    s3_driver: S3Driver,
    session: aiohttp.ClientSession,
) -> None:
    """The account plan's limits are in force in each backend, and the same URLs still work."""
    free, anonymous = plans.account, plans.anonymous
    db, queue, bucket = made["postgres"], made["nats"], made["s3"]
    assert await role_limits(admin, db["id"]) == (free.postgres.connections,) * 2
    conn = await asyncpg.connect(db["connection_url"])
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()

    client = await nats_client(queue)
    try:
        info = await client.jetstream().account_info()
        assert info.limits.max_storage == free.nats.disk_storage_mb * MIB
        assert info.limits.max_streams == free.nats.streams
        await client.jetstream().add_stream(
            name="BIG", subjects=["big"], max_bytes=anonymous.nats.disk_storage_mb * MIB + 1
        )
        await client.jetstream().publish("big", b"kept")
    finally:
        await client.close()

    assert await s3_driver.quota_bytes(uuid.UUID(bucket["id"])) == free.s3.storage_mb * MIB
    await minio_of(bucket, session).put_object(
        bucket["credentials"]["bucket"], "after-claim", io.BytesIO(b"x"), 1
    )

    cache = made["redis"]
    redis = aioredis.Redis.from_url(cache["connection_url"])
    try:
        assert await redis.set(f"{cache['credentials']['key_prefix']}after-claim", "x")
    finally:
        await redis.aclose()


async def test_anonymous_resources_move_into_an_account_with_their_limits_raised_in_the_backends(
    *,
    http: httpx.AsyncClient,
    network: httpx.AsyncClient,
    plans: Plans,
    customer_admin: asyncpg.Connection,
    s3_driver: S3Driver,
    aiohttp_session: aiohttp.ClientSession,
) -> None:
    made = {kind: await create(network, kind) for kind in KIND_PATHS}
    claim_url = made["webhook"]["claim_url"]  # the newest response: its link names all
    later = await create(network, "postgres")  # made after the claim link: not part of it
    await check_anonymous_limits_in_the_backends(made, plans.anonymous, customer_admin, s3_driver)

    preview = await http.get(claim_url)
    assert preview.status_code == 200, preview.text
    listed = {r["id"]: r for r in preview.json()["resources"]}
    assert set(listed) == {body["id"] for body in made.values()}
    for kind, body in made.items():
        entry = listed[body["id"]]
        assert entry["kind"] == kind
        assert entry["tier"] == "anonymous"
        assert entry["expires_at"]
        assert entry["limits"] == {k: v for k, v in body["limits"].items() if k != "expires_in"}
        assert entry["tier_after_claim"] == plans.account_tier
        assert entry["limits_after_claim"]
    assert "POST /claim" in preview.json()["how_to_claim"]
    for secret in ("password", "secret_key", "creds", "connection_url", "user_seed"):
        assert secret not in preview.text
    same = await http.get("/claim/preview", params={"t": token_of(claim_url)})
    assert same.json()["resources"] == preview.json()["resources"]

    session = await account(http)
    claimed = await claim(http, token_of(claim_url), session)
    assert claimed.status_code == 200, claimed.text
    moved = {r["id"]: r for r in claimed.json()["resources"]}
    assert set(moved) == set(listed)
    for kind, body in made.items():
        assert moved[body["id"]]["kind"] == kind
        assert moved[body["id"]]["tier"] == plans.account_tier
        assert moved[body["id"]]["expires_at"] is None
        assert moved[body["id"]]["limits"] == listed[body["id"]]["limits_after_claim"]
        shown = await http.get(f"/resources/{body['token']}")
        assert shown.status_code == 200, shown.text
        assert shown.json()["claimed"] is True
        assert shown.json()["tier"] == plans.account_tier
        assert shown.json()["expires_at"] is None
        assert shown.json()["limits"]["expires_in"] is None
        assert shown.json()["credentials"] == body["credentials"]
        assert shown.json()["connection_url"] == body["connection_url"]

    await check_account_limits_in_the_backends(
        made, plans, customer_admin, s3_driver, aiohttp_session
    )
    # Redis and MongoDB cap no user's memory or storage: the usage sweep compares with this.
    shown_cache = (await http.get(f"/resources/{made['redis']['token']}")).json()
    assert shown_cache["usage"]["quota_bytes"] == plans.account.redis.memory_mb * MIB
    shown_nosql = (await http.get(f"/resources/{made['mongo']['token']}")).json()
    assert shown_nosql["usage"]["quota_bytes"] == plans.account.mongo.storage_mb * MIB
    listing = await http.get("/resources", headers=bearer(session))
    assert listing.status_code == 200, listing.text
    assert {body["id"] for body in made.values()} <= {r["id"] for r in listing.json()["resources"]}

    # The resource made after the link stays anonymous, and the link works once.
    assert (await http.get(f"/resources/{later['token']}")).json()["claimed"] is False
    again = await claim(http, token_of(claim_url), session)
    assert "already claimed" in refused(again, 409, "claim_already_used")["message"]


# -- refusals -------------------------------------------------------------------------------------


async def test_another_account_cannot_use_a_claim_token_already_used(
    http: httpx.AsyncClient, network: httpx.AsyncClient
) -> None:
    body = await create(network, "postgres")
    assert (await http.get(body["claim_url"])).json()["used"] is False
    first, second = await account(http), await account(http)
    # The whole claim URL is accepted too: agents often pass the URL rather than the token.
    assert (await claim(http, body["claim_url"], first)).status_code == 200
    after = (await http.get(body["claim_url"])).json()
    assert after["used"] is True
    assert after["resources"] == []
    used = await claim(http, token_of(body["claim_url"]), second)
    assert "another account" in refused(used, 409, "claim_already_used")["message"]
    shown = await http.get(f"/resources/{body['token']}")
    assert shown.json()["claimed"] is True


async def test_an_expired_claim_token_is_410(
    http: httpx.AsyncClient, network: httpx.AsyncClient, jwt_key: bytes
) -> None:
    await create(network, "postgres")
    fresh = token_of((await create(network, "postgres"))["claim_url"])
    network_fp = jwt.decode(fresh, options={"verify_signature": False})["fp"]
    expired = mint_claim_token(jwt_key, network_fp, ttl_seconds=60, now=time.time() - 3600)
    refused(await http.get("/claim/preview", params={"t": expired}), 410, "claim_token_expired")
    session = await account(http)
    refused(await claim(http, expired, session), 410, "claim_token_expired")


@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "spn_" + "A" * 43])
async def test_a_garbage_claim_token_is_400(http: httpx.AsyncClient, garbage: str) -> None:
    refused(await http.get("/claim", params={"t": garbage}), 400, "invalid_claim_token")
    session = await account(http)
    refused(await claim(http, garbage, session), 400, "invalid_claim_token")


async def test_a_forged_or_session_token_is_not_a_claim_token(
    http: httpx.AsyncClient, network: httpx.AsyncClient
) -> None:
    session = await account(http)
    refused(await claim(http, session, session), 400, "invalid_claim_token")
    body = await create(network, "postgres")
    claims = jwt.decode(token_of(body["claim_url"]), options={"verify_signature": False})
    forged = jwt.encode(claims, b"not the platform's key at all, 32+ bytes", algorithm="HS256")
    refused(await claim(http, forged, session), 400, "invalid_claim_token")
    # ...and a claim token is not a session.
    refused(
        await http.get("/resources", headers=bearer(token_of(body["claim_url"]))),
        401,
        "unauthorized",
    )


async def test_claiming_without_an_account_is_401_saying_how_to_get_one(
    http: httpx.AsyncClient, network: httpx.AsyncClient
) -> None:
    body = await create(network, "postgres")
    response = await claim(http, token_of(body["claim_url"]), None)
    error = refused(response, 401, "unauthorized")
    assert "/auth/register" in error["agent_action"]
    assert "/auth/login" in error["agent_action"]
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_nothing_left_to_claim_is_409(
    http: httpx.AsyncClient, network: httpx.AsyncClient
) -> None:
    body = await create(network, "postgres")
    deleted = await http.delete(f"/resources/{body['token']}")
    assert deleted.status_code == 200
    session = await account(http)
    refused(await claim(http, token_of(body["claim_url"]), session), 409, "nothing_to_claim")
    preview = await http.get(body["claim_url"])
    assert preview.status_code == 200
    assert preview.json()["resources"] == []


async def test_a_claim_cut_short_by_a_worker_outage_resumes_with_the_same_token(
    http: httpx.AsyncClient, network: httpx.AsyncClient, stack: Stack
) -> None:
    db, queue = await create(network, "postgres"), await create(network, "nats")
    session, other = await account(http), await account(http)
    stack.stop_service("queue-provisioner")
    try:
        cut_short = await claim(http, token_of(queue["claim_url"]), session)
        assert "same claim token again" in refused(cut_short, 503, "worker_unavailable")["message"]
        assert cut_short.headers["retry-after"]
        assert (await http.get(f"/resources/{db['token']}")).json()["claimed"] is True
        assert (await http.get(f"/resources/{queue['token']}")).json()["claimed"] is False
        # Started by one account, the claim is that account's, even unfinished.
        taken = await claim(http, token_of(queue["claim_url"]), other)
        refused(taken, 409, "claim_already_used")
    finally:
        stack.start_service("queue-provisioner")
    resumed = await claim(http, token_of(queue["claim_url"]), session)
    assert resumed.status_code == 200, resumed.text
    assert {r["id"] for r in resumed.json()["resources"]} == {db["id"], queue["id"]}
    shown = (await http.get(f"/resources/{queue['token']}")).json()
    assert shown["claimed"] is True
    assert shown["expires_at"] is None
