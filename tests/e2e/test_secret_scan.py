"""No issued secret is stored or logged in plaintext anywhere the platform keeps things.

One full workload (every kind created, rotated, claimed and deleted; an account with a password,
a session and an access token; a webhook signing secret given to ``PUT /webhook/{token}/verify``)
runs first; every secret the API handed out or was given is collected. Then the platform
database (every row of every table, event payloads included), the JetStream streams the relay
fills, the platform Redis (read while the signing secret's receiver still exists) and every log
file of the stack are searched for each of them, as text and as hex (a bytea column renders as
hex): zero hits.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import nats
import pytest
from nats.js.errors import NotFoundError
from redis.asyncio import Redis

from devstack.stack import Stack
from tests.e2e.conftest import PASSWORD, new_email, new_resource

pytestmark = pytest.mark.e2e

KINDS = ("db", "cache", "nosql", "queue", "storage", "webhook")
# The credential fields that are secrets (usernames, hosts and bucket names are not).
SECRET_FIELDS = ("password", "secret_key", "user_seed", "creds", "user_jwt", "connection_url")
SHORTEST_SECRET = 12
# Given by the user, not issued: a webhook signing secret must be sealed at rest all the same.
SIGNING_SECRET = "whsec_c2VjcmV0LXNjYW4tc2lnbmluZy1zZWNyZXQ="  # base64, as Standard Webhooks wants


def secrets_of(answer: dict[str, Any]) -> set[str]:
    """Every secret in one create/rotate/show answer: the token and the credentials' secrets."""
    found = {answer["token"]} if answer.get("token") else set()
    credentials = answer.get("credentials") or {}
    for field in SECRET_FIELDS:
        value = credentials.get(field)
        if isinstance(value, str) and value:
            found.add(value)
    if answer.get("claim_url"):
        found.add(parse_qs(urlsplit(answer["claim_url"]).query)["t"][0])
    return found


async def platform_redis(redis_url: str) -> list[bytes]:
    """Every key and value of the platform Redis (hashes and lists element by element)."""
    redis = Redis.from_url(redis_url)
    try:
        found: list[bytes] = []
        async for key in redis.scan_iter():
            found.append(key)
            kind = await redis.type(key)
            if kind == b"hash":
                for field, value in (await redis.hgetall(key)).items():
                    found += [field, value]
            elif kind == b"list":
                found += await redis.lrange(key, 0, -1)
            elif kind == b"string":
                found.append(await redis.get(key) or b"")
        assert found, "the platform Redis is empty: the scan would prove nothing"
        return found
    finally:
        await redis.aclose()


async def full_workload(
    http: httpx.AsyncClient, redis_url: str
) -> tuple[set[str], set[str], list[bytes]]:
    """Every kind made, rotated, claimed into a new account and deleted.

    Returns the secrets issued or given, the ids of the resources (not secret: they must be
    found, which proves the scan reads where the platform writes), and the platform Redis as it
    was while the webhook receivers (and their signing secret) existed.
    """
    issued: set[str] = {PASSWORD, SIGNING_SECRET}
    made = []
    for kind in KINDS:
        body = await new_resource(http, kind)
        issued |= secrets_of(body)
        rotated = await http.post(f"/resources/{body['token']}/rotate")
        assert rotated.status_code == 200, rotated.text
        issued |= secrets_of(rotated.json())
        made.append(body)
        if kind == "webhook":
            check = {"scheme": "standard-webhooks", "secret": SIGNING_SECRET}
            verify = await http.put(f"/webhook/{body['token']}/verify", json=check)
            assert verify.status_code == 200, verify.text
            sent = await http.post(rotated.json()["credentials"]["receive_url"], content=b"{}")
            assert sent.status_code == 200, sent.text
            read = await http.get(f"/webhook/{body['token']}/requests")
            assert read.json()["requests"][0]["signature"]["status"] == "missing"
    redis_contents = await platform_redis(redis_url)
    registered = await http.post(
        "/auth/register", json={"email": new_email(), "password": PASSWORD}
    )
    assert registered.status_code == 201, registered.text
    session = registered.json()["token"]
    issued.add(session)
    bearer = {"Authorization": f"Bearer {session}"}
    pat = await http.post(
        "/auth/tokens", json={"name": "scan", "scopes": ["provision", "read"]}, headers=bearer
    )
    assert pat.status_code == 201, pat.text
    issued.add(pat.json()["token"])
    claim_token = parse_qs(urlsplit(made[-1]["claim_url"]).query)["t"][0]
    claimed = await http.post("/claim", json={"token": claim_token}, headers=bearer)
    assert claimed.status_code == 200, claimed.text
    owned = await new_resource(
        http, "db", headers={"Authorization": f"Bearer {pat.json()['token']}"}
    )
    issued |= secrets_of(owned)
    for body in [*made, owned]:
        shown = await http.get(f"/resources/{body['token']}")
        assert shown.status_code == 200, shown.text
        issued |= secrets_of(shown.json())
        deleted = await http.delete(f"/resources/{body['token']}")
        assert deleted.status_code == 200, deleted.text
    assert (await http.post("/auth/logout", headers=bearer)).status_code == 200
    assert all(len(secret) >= SHORTEST_SECRET for secret in issued)
    return issued, {body["id"] for body in [*made, owned]}, redis_contents


async def platform_rows(dsn: str) -> list[bytes]:
    """Every row of every table of the platform database, as text."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT schemaname, tablename FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
        rows: list[bytes] = []
        for table in tables:
            name = f'"{table["schemaname"]}"."{table["tablename"]}"'
            found = await conn.fetch(f"SELECT t::text FROM {name} t")
            rows += [row[0].encode() for row in found]
        assert rows, "the platform database is empty: the scan would prove nothing"
        return rows
    finally:
        await conn.close()


async def jetstream_messages(nats_url: str) -> list[bytes]:
    """Every message still held by every stream of the platform NATS."""
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        messages: list[bytes] = []
        for stream in await js.streams_info():
            if not stream.state.messages:
                continue  # an empty stream's first sequence is 0, which no message has
            for sequence in range(stream.state.first_seq, stream.state.last_seq + 1):
                try:
                    message = await js.get_msg(stream.config.name, sequence)
                except NotFoundError:
                    continue
                messages.append(message.data or b"")
        assert messages, "no JetStream message: the relay published nothing to scan"
        return messages
    finally:
        await client.close()


def hits(secrets: set[str], haystacks: dict[str, list[bytes]]) -> list[str]:
    """Where any secret appears, as text or hex, in any of ``haystacks`` (name: contents)."""
    found = []
    for secret in secrets:
        needles = (secret.encode(), secret.encode().hex().encode())
        for where, contents in haystacks.items():
            if any(needle in item for item in contents for needle in needles):
                found.append(f"{secret[:8]}… in {where}")
    return found


async def test_no_issued_secret_is_in_the_database_the_event_stream_or_any_log(
    stack: Stack, env: dict[str, str], http: httpx.AsyncClient
) -> None:
    issued, ids, redis_contents = await full_workload(http, env["SPINUP_REDIS_URL"])
    haystacks = {
        "platform database": await platform_rows(env["SPINUP_PLATFORM_DSN"]),
        "JetStream": await jetstream_messages(env["SPINUP_NATS_URL"]),
        "platform Redis": redis_contents,
    }
    logs = sorted(path for path in stack.logs_dir.rglob("*") if path.is_file())
    assert logs
    for log in logs:
        haystacks[f"log {log.name}"] = [log.read_bytes()]
    for where in ("platform database", "JetStream"):
        assert len(hits(ids, {where: haystacks[where]})) == len(ids), where
    assert hits(issued, haystacks) == []
