"""No issued secret is stored or logged in plaintext anywhere the platform keeps things.

One full workload (every kind created, rotated, claimed and deleted; an account with a password,
a session and an access token) runs first; every secret the API handed out is collected from its
answers. Then the platform database (every row of every table, event payloads included), the
JetStream streams the relay fills and every log file of the stack are searched for each of them,
as text and as hex (a bytea column renders as hex): zero hits.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import nats
import pytest
from nats.js.errors import NotFoundError

from devstack.stack import Stack
from tests.e2e.conftest import PASSWORD, new_email, new_resource

pytestmark = pytest.mark.e2e

KINDS = ("db", "cache", "nosql", "queue", "storage", "webhook")
# The credential fields that are secrets (usernames, hosts and bucket names are not).
SECRET_FIELDS = ("password", "secret_key", "user_seed", "creds", "user_jwt", "connection_url")
SHORTEST_SECRET = 12


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


async def full_workload(http: httpx.AsyncClient) -> tuple[set[str], set[str]]:
    """Every kind made, rotated, claimed into a new account and deleted.

    Returns the secrets issued, and the ids of the resources (not secret: they must be found,
    which proves the scan reads where the platform writes).
    """
    issued: set[str] = {PASSWORD}
    made = []
    for kind in KINDS:
        body = await new_resource(http, kind)
        issued |= secrets_of(body)
        rotated = await http.post(f"/resources/{body['token']}/rotate")
        assert rotated.status_code == 200, rotated.text
        issued |= secrets_of(rotated.json())
        made.append(body)
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
    return issued, {body["id"] for body in [*made, owned]}


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
    issued, ids = await full_workload(http)
    haystacks = {
        "platform database": await platform_rows(env["SPINUP_PLATFORM_DSN"]),
        "JetStream": await jetstream_messages(env["SPINUP_NATS_URL"]),
    }
    logs = sorted(path for path in stack.logs_dir.rglob("*") if path.is_file())
    assert logs
    for log in logs:
        haystacks[f"log {log.name}"] = [log.read_bytes()]
    for where in ("platform database", "JetStream"):
        assert len(hits(ids, {where: haystacks[where]})) == len(ids), where
    assert hits(issued, haystacks) == []
