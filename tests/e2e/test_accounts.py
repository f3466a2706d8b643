"""A user's view of accounts: register, log in, permanent resources, rotate, tokens, refusals.

Every credential is checked with the real client library of its kind; every refusal with the
JSON error code a client matches on.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import httpx
import jwt
import pytest
import redis.asyncio as aioredis
from miniopy_async import Minio
from miniopy_async.error import S3Error
from nats.aio.client import Client as NatsClient
from nats.aio.client import RawCredentials
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure
from redis.exceptions import AuthenticationError

from gateway.accounts.auth import SESSION_AUDIENCE, SESSION_ISSUER
from gateway.accounts.store import AccountProjection, account_stream, rebuild_accounts
from shared.config import Env
from shared.contracts.events import AccessTokenCreated
from shared.crypto.tokens import hash_token
from shared.eventlog.store import EventStore
from shared.plans import Plans, load_plans
from tests.e2e.conftest import PASSWORD, new_email, new_resource

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def plans(env: dict[str, str]) -> Plans:
    return load_plans(Path(env["SPINUP_PLANS_FILE"]))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(http: httpx.AsyncClient, email: str | None = None) -> dict[str, Any]:
    response = await http.post(
        "/auth/register", json={"email": email or new_email(), "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def new_access_token(
    http: httpx.AsyncClient, session: str, scopes: list[str], name: str = "cli"
) -> dict[str, Any]:
    response = await http.post(
        "/auth/tokens", json={"name": name, "scopes": scopes}, headers=bearer(session)
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def create(http: httpx.AsyncClient, path: str, token: str | None = None) -> dict[str, Any]:
    return await new_resource(http, path, headers=bearer(token) if token else {})


async def rotate(http: httpx.AsyncClient, ref: str, token: str | None = None) -> dict[str, Any]:
    response = await http.post(f"/resources/{ref}/rotate", headers=bearer(token) if token else {})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["ok"] is False
    assert body["error"] == code
    assert body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    return body


# -- the whole journey --------------------------------------------------------------------------


async def registered_and_logged_in(http: httpx.AsyncClient, plans: Plans) -> str:
    """Register (email in upper case), then log in: the new session token."""
    email = new_email()
    registered = await register(http, email.upper())
    account = registered["account"]
    assert registered["ok"] is True
    assert account["email"] == email
    assert account["tier"] == plans.account_tier
    assert datetime.fromisoformat(registered["expires_at"]) > datetime.now(UTC)
    uuid.UUID(account["id"])
    login = await http.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    assert login.json()["account"] == account
    assert login.json()["token"] != registered["token"]
    token: str = login.json()["token"]
    return token


async def permanent_database_with_data(
    http: httpx.AsyncClient, plans: Plans, session: str
) -> dict[str, Any]:
    db = await create(http, "db", session)
    assert db["tier"] == plans.account_tier
    assert db["expires_at"] is None
    assert db["limits"]["expires_in"] is None
    assert db["claim_url"] is None
    assert db["limits"]["connections"] == plans.account.postgres.connections
    conn = await asyncpg.connect(db["connection_url"])
    await conn.execute("CREATE TABLE notes (body text)")
    await conn.execute("INSERT INTO notes VALUES ('kept across rotation')")
    await conn.close()
    return db


async def assert_listed(
    http: httpx.AsyncClient, plans: Plans, session: str, db: dict[str, Any]
) -> None:
    listed = await http.get("/resources", headers=bearer(session))
    assert listed.status_code == 200, listed.text
    [shown] = listed.json()["resources"]
    assert shown["id"] == db["id"]
    assert (shown["kind"], shown["status"], shown["tier"]) == (
        "postgres",
        "active",
        plans.account_tier,
    )
    assert shown["expires_at"] is None
    assert shown["created_at"]
    assert shown["claimed"] is False
    assert shown["connection_url"] == db["connection_url"]
    assert {"bytes", "quota_bytes", "measured_at", "over_quota"} <= set(shown["usage"])
    assert shown["usage"]["quota_bytes"] == plans.account.postgres.storage_mb * 1024 * 1024
    assert shown["usage"]["over_quota"] is False
    assert shown["limits"] == db["limits"]
    only_caches = await http.get("/resources", params={"kind": "redis"}, headers=bearer(session))
    assert only_caches.json()["resources"] == []
    only_dbs = await http.get("/resources", params={"kind": "postgres"}, headers=bearer(session))
    assert [r["id"] for r in only_dbs.json()["resources"]] == [db["id"]]


async def rotated_database(
    http: httpx.AsyncClient, session: str, db: dict[str, Any]
) -> dict[str, Any]:
    rotated = await rotate(http, db["id"], session)
    assert (rotated["id"], rotated["kind"]) == (db["id"], "postgres")
    assert rotated["connection_url"] == rotated["credentials"]["connection_url"]
    assert rotated["credentials"]["password"] != db["credentials"]["password"]
    assert rotated["credentials"]["database"] == db["credentials"]["database"]
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(db["connection_url"])
    conn = await asyncpg.connect(rotated["connection_url"])
    assert await conn.fetchval("SELECT body FROM notes") == "kept across rotation"
    assert await conn.fetchval("SELECT current_database()") == db["credentials"]["database"]
    await conn.close()
    by_id = await http.get(f"/resources/{db['id']}", headers=bearer(session))
    assert by_id.status_code == 200, by_id.text
    assert by_id.json()["connection_url"] == rotated["connection_url"]
    by_token = await http.get(f"/resources/{db['token']}")
    assert by_token.json()["connection_url"] == rotated["connection_url"]
    return rotated


async def test_register_login_provision_list_rotate_delete_a_permanent_database(
    http: httpx.AsyncClient, plans: Plans
) -> None:
    session = await registered_and_logged_in(http, plans)
    db = await permanent_database_with_data(http, plans, session)
    await assert_listed(http, plans, session, db)
    rotated = await rotated_database(http, session, db)

    deleted = await http.delete(f"/resources/{db['id']}", headers=bearer(session))
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["status"] == "deleted"
    assert (await http.get("/resources", headers=bearer(session))).json()["resources"] == []
    assert_error(
        await http.get(f"/resources/{db['id']}", headers=bearer(session)), 404, "not_found"
    )
    with pytest.raises(
        (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
    ):
        await asyncpg.connect(rotated["connection_url"])


async def test_user_shows_the_account_its_credential_and_its_plan_from_plans_yaml(
    http: httpx.AsyncClient, plans: Plans
) -> None:
    registered = await register(http)
    session = registered["token"]
    user = await http.get("/auth/user", headers=bearer(session))
    assert user.status_code == 200, user.text
    body = user.json()
    assert body["account"] == registered["account"]
    assert body["credential"] == {"type": "session", "scopes": ["delete", "provision", "read"]}
    published = (await http.get("/plans")).json()["tiers"][plans.account_tier]
    assert body["plan"] == published
    assert body["plan"]["ttl_seconds"] is None
    pat = await new_access_token(http, session, ["read"])
    as_token = (await http.get("/auth/user", headers=bearer(pat["token"]))).json()
    assert as_token["credential"] == {"type": "access_token", "scopes": ["read"]}
    assert as_token["account"] == registered["account"]


# -- rotation of every kind through HTTP --------------------------------------------------------


async def test_rotating_a_cache_refuses_the_old_password_and_keeps_the_keys(
    http: httpx.AsyncClient,
) -> None:
    cache = await create(http, "cache")
    prefix = cache["credentials"]["key_prefix"]
    old = aioredis.Redis.from_url(cache["connection_url"], decode_responses=True)
    await old.set(f"{prefix}kept", "yes")
    await old.aclose()

    rotated = await rotate(http, cache["token"])
    assert rotated["credentials"]["password"] != cache["credentials"]["password"]
    assert rotated["credentials"]["key_prefix"] == prefix
    stale = aioredis.Redis.from_url(cache["connection_url"], decode_responses=True)
    try:
        with pytest.raises(AuthenticationError):
            await stale.ping()
    finally:
        await stale.aclose()
    fresh = aioredis.Redis.from_url(rotated["connection_url"], decode_responses=True)
    try:
        assert await fresh.get(f"{prefix}kept") == "yes"
    finally:
        await fresh.aclose()


async def nats_connect(url: str, creds: str) -> NatsClient:
    client = NatsClient()
    try:
        await client.connect(
            url, user_credentials=RawCredentials(creds), allow_reconnect=False, connect_timeout=5
        )
    except BaseException:
        # nats-py leaves the socket of a refused first connect open.
        await client.close()
        raise
    return client


async def test_rotating_a_queue_refuses_the_old_user_and_keeps_the_streams(
    http: httpx.AsyncClient,
) -> None:
    queue = await create(http, "queue")
    client = await nats_connect(queue["connection_url"], queue["credentials"]["creds"])
    await client.jetstream().add_stream(name="ORDERS", subjects=["orders.>"], max_bytes=1 << 20)
    await client.close()

    rotated = await rotate(http, queue["token"])
    assert rotated["credentials"]["account"] == queue["credentials"]["account"]
    assert rotated["credentials"]["user_jwt"] != queue["credentials"]["user_jwt"]
    with pytest.raises(Exception, match="Authorization Violation"):
        await nats_connect(queue["connection_url"], queue["credentials"]["creds"])
    fresh = await nats_connect(rotated["connection_url"], rotated["credentials"]["creds"])
    try:
        info = await fresh.jetstream().stream_info("ORDERS")
        assert info.config.subjects == ["orders.>"]
    finally:
        await fresh.close()


async def test_rotating_a_nosql_database_refuses_the_old_password_and_keeps_the_documents(
    http: httpx.AsyncClient,
) -> None:
    nosql = await create(http, "nosql")
    old: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        nosql["connection_url"], serverSelectionTimeoutMS=3000
    )
    await old.get_default_database().notes.insert_one({"body": "kept"})
    await old.close()

    rotated = await rotate(http, nosql["token"])
    assert rotated["credentials"]["password"] != nosql["credentials"]["password"]
    assert rotated["credentials"]["database"] == nosql["credentials"]["database"]
    stale: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        nosql["connection_url"], serverSelectionTimeoutMS=3000
    )
    try:
        with pytest.raises(OperationFailure):
            await stale.get_default_database().notes.find_one({})
    finally:
        await stale.close()
    fresh: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        rotated["connection_url"], serverSelectionTimeoutMS=3000
    )
    try:
        assert await fresh.get_default_database().notes.find_one({}, {"_id": 0}) == {"body": "kept"}
    finally:
        await fresh.close()


def minio_of(credentials: dict[str, Any], session: aiohttp.ClientSession) -> Minio:
    return Minio(
        credentials["endpoint"].removeprefix("http://"),
        access_key=credentials["access_key"],
        secret_key=credentials["secret_key"],
        secure=False,
        region=credentials["region"],
        session=session,
    )


async def test_rotating_a_bucket_refuses_the_old_key_and_keeps_the_objects(
    http: httpx.AsyncClient,
) -> None:
    bucket = await create(http, "storage")
    name = bucket["credentials"]["bucket"]
    async with aiohttp.ClientSession() as session:
        old = minio_of(bucket["credentials"], session)
        await old.put_object(name, "kept.txt", io.BytesIO(b"kept"), 4)

        rotated = await rotate(http, bucket["token"])
        assert rotated["credentials"]["bucket"] == name
        assert rotated["credentials"]["access_key"] != bucket["credentials"]["access_key"]
        with pytest.raises(S3Error) as refused:
            await old.get_object(name, "kept.txt")  # a GET: a HEAD's error has no code
        assert refused.value.code == "InvalidAccessKeyId"
        fresh = minio_of(rotated["credentials"], session)
        response = await fresh.get_object(name, "kept.txt")
        try:
            assert await response.read() == b"kept"
        finally:
            response.release()


async def test_rotating_a_webhook_receiver_retires_the_old_url(http: httpx.AsyncClient) -> None:
    webhook = await create(http, "webhook")
    assert (await http.post(webhook["credentials"]["receive_url"], content=b"one")).is_success

    rotated = await rotate(http, webhook["token"])
    new_url = rotated["credentials"]["receive_url"]
    assert new_url != webhook["credentials"]["receive_url"]
    assert (await http.post(webhook["credentials"]["receive_url"], content=b"two")).status_code in {
        404,
        410,
    }
    assert (await http.post(new_url, content=b"three")).is_success
    requests = await http.get(f"/webhook/{webhook['token']}/requests")
    assert sorted(r["body"] for r in requests.json()["requests"]) == ["one", "three"]


async def test_rotating_needs_the_token_or_the_owners_provision_scope(
    http: httpx.AsyncClient,
) -> None:
    owner = await register(http)
    db = await create(http, "db", owner["token"])
    reader = await new_access_token(http, owner["token"], ["read", "delete"])
    assert_error(
        await http.post(f"/resources/{db['id']}/rotate", headers=bearer(reader["token"])),
        403,
        "insufficient_scope",
    )
    stranger = await register(http)
    assert_error(
        await http.post(f"/resources/{db['id']}/rotate", headers=bearer(stranger["token"])),
        404,
        "not_found",
    )
    assert_error(await http.post(f"/resources/{db['id']}/rotate"), 401, "unauthorized")
    assert_error(await http.post(f"/resources/spn_{'A' * 43}/rotate"), 404, "not_found")
    # Nothing above changed the credentials.
    conn = await asyncpg.connect(db["connection_url"])
    await conn.close()


# -- access tokens ------------------------------------------------------------------------------


async def test_access_token_is_shown_once_works_with_its_scopes_and_stops_when_revoked(
    http: httpx.AsyncClient, plans: Plans
) -> None:
    owner = await register(http)
    session = owner["token"]
    issued = await new_access_token(http, session, ["read", "provision", "read"], "agent")
    secret = issued["token"]
    assert secret.startswith("spp_")
    assert len(secret) == 47
    assert issued["access_token"]["scopes"] == ["provision", "read"]
    assert issued["access_token"]["name"] == "agent"
    assert issued["access_token"]["revoked_at"] is None
    assert issued["access_token"]["expires_at"] is None

    listed = await http.get("/auth/tokens", headers=bearer(session))
    assert listed.status_code == 200, listed.text
    assert listed.json()["access_tokens"] == [issued["access_token"]]
    assert secret not in listed.text
    assert secret[4:] not in listed.text

    cache = await create(http, "cache", secret)
    assert cache["expires_at"] is None
    assert cache["tier"] == plans.account_tier
    resources = (await http.get("/resources", headers=bearer(secret))).json()["resources"]
    assert [r["id"] for r in resources] == [cache["id"]]
    assert resources[0]["credentials"]["password"] == cache["credentials"]["password"]
    assert_error(
        await http.delete(f"/resources/{cache['id']}", headers=bearer(secret)),
        403,
        "insufficient_scope",
    )

    revoked = await http.delete(
        f"/auth/tokens/{issued['access_token']['id']}", headers=bearer(session)
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["access_token"]["revoked_at"]
    again = await http.delete(
        f"/auth/tokens/{issued['access_token']['id']}", headers=bearer(session)
    )
    assert (
        again.json()["access_token"]["revoked_at"] == revoked.json()["access_token"]["revoked_at"]
    )
    body = assert_error(await http.get("/resources", headers=bearer(secret)), 401, "unauthorized")
    assert "revoked" in body["message"]
    assert "POST /auth/tokens" in body["message"]
    assert_error(await http.post("/cache/new", headers=bearer(secret)), 401, "unauthorized")
    [listed_revoked] = (await http.get("/auth/tokens", headers=bearer(session))).json()[
        "access_tokens"
    ]
    assert listed_revoked["revoked_at"] == revoked.json()["access_token"]["revoked_at"]
    deleted = await http.delete(f"/resources/{cache['id']}", headers=bearer(session))
    assert deleted.status_code == 200, deleted.text


async def test_access_token_without_provision_scope_cannot_create(http: httpx.AsyncClient) -> None:
    owner = await register(http)
    reader = await new_access_token(http, owner["token"], ["read"])
    for path in ("db", "cache", "webhook"):
        body = assert_error(
            await http.post(f"/{path}/new", headers=bearer(reader["token"])),
            403,
            "insufficient_scope",
        )
        assert "provision" in body["message"]
    assert (await http.get("/resources", headers=bearer(owner["token"]))).json()["resources"] == []


async def test_access_tokens_cannot_manage_access_tokens_or_log_out(
    http: httpx.AsyncClient,
) -> None:
    owner = await register(http)
    pat = await new_access_token(http, owner["token"], ["provision", "read", "delete"])
    token_id = pat["access_token"]["id"]
    as_pat = bearer(pat["token"])
    new = {"name": "child", "scopes": ["read"]}
    assert_error(await http.post("/auth/tokens", json=new, headers=as_pat), 403, "forbidden")
    assert_error(await http.get("/auth/tokens", headers=as_pat), 403, "forbidden")
    assert_error(await http.delete(f"/auth/tokens/{token_id}", headers=as_pat), 403, "forbidden")
    assert_error(await http.post("/auth/logout", headers=as_pat), 403, "forbidden")
    assert (await http.get("/auth/user", headers=as_pat)).status_code == 200


async def test_one_account_cannot_see_or_touch_anothers_tokens_or_resources(
    http: httpx.AsyncClient,
) -> None:
    alice, mallory = await register(http), await register(http)
    pat = await new_access_token(http, alice["token"], ["read"])
    db = await create(http, "db", alice["token"])
    as_mallory = bearer(mallory["token"])
    assert_error(
        await http.delete(f"/auth/tokens/{pat['access_token']['id']}", headers=as_mallory),
        404,
        "not_found",
    )
    assert (await http.get("/auth/tokens", headers=as_mallory)).json()["access_tokens"] == []
    assert (await http.get("/resources", headers=as_mallory)).json()["resources"] == []
    for response in (
        await http.get(f"/resources/{db['id']}", headers=as_mallory),
        await http.delete(f"/resources/{db['id']}", headers=as_mallory),
    ):
        body = assert_error(response, 404, "not_found")
        assert db["id"] not in body["message"]
    assert (await http.get(f"/resources/{pat['token']}")).status_code == 404
    assert (await http.get(f"/resources/{db['id']}", headers=bearer(pat["token"]))).json()[
        "status"
    ] == "active"
    assert_error(await http.get(f"/resources/{db['id']}"), 401, "unauthorized")


# -- sessions and their refusals ----------------------------------------------------------------


def session_jwt(key: bytes, account_id: str, **overrides: Any) -> str:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": SESSION_ISSUER,
        "aud": SESSION_AUDIENCE,
        "sub": account_id,
        "jti": uuid.uuid4().hex,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
    }
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="HS256")


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_a_jwt_made_with_the_gateways_key_works_and_forged_ones_do_not(
    http: httpx.AsyncClient, env: dict[str, str]
) -> None:
    key = Env(env).key("SPINUP_JWT_KEY")
    account_id = (await register(http))["account"]["id"]
    good = session_jwt(key, account_id)
    assert (await http.get("/auth/user", headers=bearer(good))).status_code == 200

    past = datetime.now(UTC) - timedelta(hours=2)
    expired = session_jwt(
        key, account_id, iat=int(past.timestamp()), exp=int((past + timedelta(hours=1)).timestamp())
    )
    body = assert_error(await http.get("/auth/user", headers=bearer(expired)), 401, "unauthorized")
    assert "expired" in body["message"]
    assert "POST /auth/login" in body["message"]

    header, payload, _ = good.split(".")
    claim_url = (await create(http, "webhook"))["claim_url"]
    forged = {
        "claim token": parse_qs(urlsplit(claim_url).query)["t"][0],
        "bad signature": f"{header}.{payload}.{b64({'x': 1})}",
        "other key": session_jwt(b"k" * 64, account_id),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "HS512": jwt.encode(
            jwt.decode(good, options={"verify_signature": False}), key * 2, "HS512"
        ),
        "no jti": session_jwt(key, account_id, jti=None),
        "other audience": session_jwt(key, account_id, aud="elsewhere"),
        "unknown account": session_jwt(key, str(uuid.uuid4())),
        "garbage": "not.a.jwt",
        "resource token": f"spn_{'A' * 43}",
        "unknown access token": f"spp_{'A' * 43}",
    }
    for name, token in forged.items():
        response = await http.get("/auth/user", headers=bearer(token))
        body = assert_error(response, 401, "unauthorized")
        assert "Traceback" not in body["message"], name
    basic = await http.get("/auth/user", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert "Bearer" in assert_error(basic, 401, "unauthorized")["message"]
    assert_error(await http.get("/auth/user"), 401, "unauthorized")
    assert_error(await http.post("/db/new", headers=bearer("not.a.jwt")), 401, "unauthorized")


async def test_logout_revokes_that_session_only(http: httpx.AsyncClient) -> None:
    email = new_email()
    first = await register(http, email)
    login = await http.post("/auth/login", json={"email": email, "password": PASSWORD})
    second = login.json()["token"]

    out = await http.post("/auth/logout", headers=bearer(first["token"]))
    assert out.status_code == 200, out.text
    assert out.json()["ok"] is True
    body = assert_error(
        await http.get("/auth/user", headers=bearer(first["token"])), 401, "unauthorized"
    )
    assert "logged out" in body["message"]
    assert_error(
        await http.post("/auth/logout", headers=bearer(first["token"])), 401, "unauthorized"
    )
    assert_error(await http.post("/db/new", headers=bearer(first["token"])), 401, "unauthorized")
    assert (await http.get("/auth/user", headers=bearer(second))).status_code == 200


async def test_wrong_password_and_unknown_email_get_the_same_answer(
    http: httpx.AsyncClient,
) -> None:
    email = new_email()
    await register(http, email)
    wrong = await http.post("/auth/login", json={"email": email, "password": PASSWORD + "!"})
    unknown = await http.post("/auth/login", json={"email": new_email(), "password": PASSWORD})
    a = assert_error(wrong, 401, "invalid_credentials")
    b = assert_error(unknown, 401, "invalid_credentials")
    assert a["message"] == b["message"]
    assert a["agent_action"] == b["agent_action"]
    ok = await http.post("/auth/login", json={"email": f"  {email.upper()} ", "password": PASSWORD})
    assert ok.status_code == 200, ok.text


async def test_an_email_registers_once_whatever_its_case_even_concurrently(
    http: httpx.AsyncClient,
) -> None:
    email = new_email()
    await register(http, email)
    taken = await http.post("/auth/register", json={"email": email.upper(), "password": PASSWORD})
    body = assert_error(taken, 409, "email_taken")
    assert "POST /auth/login" in body["agent_action"]

    racing = new_email()
    responses = await asyncio.gather(
        *(
            http.post("/auth/register", json={"email": racing, "password": PASSWORD})
            for _ in range(4)
        )
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "email_taken")


@pytest.mark.parametrize(
    ("path", "content", "code"),
    [
        ("/auth/register", b"{not json", "invalid_json"),
        ("/auth/register", b'{"email": "a@example.com"}', "invalid_request"),
        ("/auth/register", b'{"email": "a@example.com", "password": 5}', "invalid_request"),
        (
            "/auth/register",
            b'{"email": "a@example.com", "password": "long enough pass", "tier": "team"}',
            "invalid_request",
        ),
        ("/auth/register", b'{"email": "a@example.com", "password": "short"}', "invalid_request"),
        (
            "/auth/register",
            b'{"email": "a@example.com", "password": "' + b"p" * 257 + b'"}',
            "invalid_request",
        ),
        (
            "/auth/register",
            b'{"email": "nobody", "password": "long enough pass"}',
            "invalid_request",
        ),
        ("/auth/register", b"[]", "invalid_request"),
        ("/auth/login", b'{"email": "a@example.com"}', "invalid_request"),
        ("/auth/login", b"", "invalid_request"),
    ],
)
async def test_malformed_account_bodies_are_a_400(
    http: httpx.AsyncClient, path: str, content: bytes, code: str
) -> None:
    response = await http.post(path, content=content, headers={"content-type": "application/json"})
    assert_error(response, 400, code)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["admin"]},
        {"name": "", "scopes": ["read"]},
        {"name": "x" * 65, "scopes": ["read"]},
        {"scopes": ["read"]},
        {"name": "x", "scopes": ["read"], "expires_in_days": 0},
        {"name": "x", "scopes": ["read"], "owner": "someone"},
    ],
)
async def test_malformed_access_token_requests_are_a_400(
    http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    session = (await register(http))["token"]
    assert_error(
        await http.post("/auth/tokens", json=body, headers=bearer(session)), 400, "invalid_request"
    )
    assert (await http.get("/auth/tokens", headers=bearer(session))).json()["access_tokens"] == []


async def test_listing_resources_needs_an_account_and_a_known_kind(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/resources"), 401, "unauthorized")
    session = (await register(http))["token"]
    body = assert_error(
        await http.get("/resources", params={"kind": "mainframe"}, headers=bearer(session)),
        400,
        "invalid_request",
    )
    assert "postgres" in body["message"]
    assert_error(
        await http.delete(f"/auth/tokens/{uuid.uuid4()}", headers=bearer(session)),
        404,
        "not_found",
    )


async def test_access_token_with_an_expiry_carries_it(http: httpx.AsyncClient) -> None:
    session = (await register(http))["token"]
    response = await http.post(
        "/auth/tokens",
        json={"name": "ci", "scopes": ["read"], "expires_in_days": 30},
        headers=bearer(session),
    )
    assert response.status_code == 201, response.text
    expires_at = datetime.fromisoformat(response.json()["access_token"]["expires_at"])
    assert timedelta(days=29) < expires_at - datetime.now(UTC) <= timedelta(days=30)
    listed = (await http.get("/auth/tokens", headers=bearer(session))).json()["access_tokens"]
    assert listed == [response.json()["access_token"]]
    token = response.json()["token"]
    assert (await http.get("/resources", headers=bearer(token))).status_code == 200


async def test_an_access_token_past_its_expiry_is_refused(
    http: httpx.AsyncClient, platform_db: asyncpg.Pool, env: dict[str, str]
) -> None:
    # The API only makes tokens that expire in a day or more: the event is appended directly,
    # as the gateway would, with its expiry a minute ago.
    owner = await register(http)
    account_id = uuid.UUID(owner["account"]["id"])
    secret = f"spp_{'B' * 43}"
    store = EventStore(platform_db, [AccountProjection()])
    version = await platform_db.fetchval("SELECT version FROM accounts WHERE id = $1", account_id)
    await store.append(
        account_stream(account_id),
        version,
        [
            AccessTokenCreated(
                account_id=account_id,
                token_id=uuid.uuid4(),
                name="stale",
                scopes=["read"],
                token_hash=hash_token(secret),
                expires_at=datetime.now(UTC) - timedelta(minutes=1),
            )
        ],
        command_id=uuid.uuid4(),
        correlation_id="test",
    )
    body = assert_error(await http.get("/resources", headers=bearer(secret)), 401, "unauthorized")
    assert "expired" in body["message"]
    [listed] = (await http.get("/auth/tokens", headers=bearer(owner["token"]))).json()[
        "access_tokens"
    ]
    assert listed["name"] == "stale"


# -- the projection is the fold of the log ------------------------------------------------------


async def account_tables(pool: asyncpg.Pool) -> dict[str, list[asyncpg.Record]]:
    return {
        "accounts": await pool.fetch("SELECT * FROM accounts ORDER BY id"),
        "access_tokens": await pool.fetch("SELECT * FROM access_tokens ORDER BY id"),
        "revoked_sessions": await pool.fetch("SELECT * FROM revoked_sessions ORDER BY jti"),
    }


async def test_rebuilding_the_account_tables_from_the_log_gives_the_live_ones(
    http: httpx.AsyncClient, platform_db: asyncpg.Pool
) -> None:
    owner = await register(http)
    pat = await new_access_token(http, owner["token"], ["read"])
    await new_access_token(http, owner["token"], ["provision"])
    await http.delete(f"/auth/tokens/{pat['access_token']['id']}", headers=bearer(owner["token"]))
    await http.post("/auth/logout", headers=bearer(owner["token"]))
    live = await account_tables(platform_db)
    assert all(live.values())

    assert await rebuild_accounts(platform_db) == len(live["accounts"])
    assert await account_tables(platform_db) == live
