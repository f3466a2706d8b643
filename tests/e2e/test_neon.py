"""The Neon-compatible claimable Postgres API, as Neon's docs and its get-db CLI use it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest

from devstack.stack import Stack
from tests.e2e.conftest import anonymous_tier, gateway_with_plans

pytestmark = pytest.mark.e2e

NEON_FIELDS = {
    "id",
    "status",
    "neon_project_id",
    "connection_string",
    "claim_url",
    "expires_at",
    "created_at",
    "updated_at",
}
REF = {"ref": "spinup-tests"}


async def new_database(http: httpx.AsyncClient, **kwargs: Any) -> dict[str, Any]:
    response = await http.post("/api/v1/database", **kwargs)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def neon_error(response: httpx.Response, status: int, message: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == message
    assert body["request_id"]
    return body


async def test_create_answers_with_neons_fields_and_a_working_connection_string(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    body = await new_database(http, json=REF)
    assert set(body) == NEON_FIELDS
    assert uuid.UUID(body["id"]).version == 4
    assert body["status"] == "UNCLAIMED"
    assert body["neon_project_id"]
    assert body["claim_url"].startswith(f"{stack.gateway_url}/claim?t=")
    expires = datetime.fromisoformat(body["expires_at"])
    created = datetime.fromisoformat(body["created_at"])
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)
    assert created <= datetime.fromisoformat(body["updated_at"])

    conn = await asyncpg.connect(body["connection_string"])
    try:
        await conn.execute("CREATE TABLE todo (title text)")
        await conn.execute("INSERT INTO todo VALUES ('ship it')")
        assert await conn.fetchval("SELECT title FROM todo") == "ship it"
    finally:
        await conn.close()

    shown = await http.get(f"/api/v1/database/{body['id']}")
    assert shown.status_code == 200, shown.text
    assert set(shown.json()) == NEON_FIELDS
    for field in ("id", "status", "neon_project_id", "connection_string", "expires_at"):
        assert shown.json()[field] == body[field]


async def test_the_get_db_cli_flow_with_a_client_chosen_id(http: httpx.AsyncClient) -> None:
    database_id = str(uuid.uuid4())
    # What get-db sends: no body, the referrer in the query string, then a GET for the URL.
    created = await http.post(
        f"/api/v1/database/{database_id}",
        params={"referrer": "npm:get-db|npm:get-db/cli"},
        headers={"Content-Type": "application/json"},
    )
    assert created.status_code == 201, created.text
    assert created.json()["id"] == database_id
    shown = await http.get(f"/api/v1/database/{database_id}")
    assert shown.status_code == 200
    url = shown.json()["connection_string"]
    assert url == created.json()["connection_string"]
    conn = await asyncpg.connect(url)
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()

    again = await http.post(f"/api/v1/database/{database_id}", json=REF)
    assert again.status_code == 200, again.text
    assert again.json()["connection_string"] == url
    assert again.json()["neon_project_id"] == created.json()["neon_project_id"]


async def test_missing_or_empty_ref_is_400_with_a_hint(http: httpx.AsyncClient) -> None:
    for kwargs in ({}, {"json": {}}, {"json": {"ref": ""}}, {"json": {"ref": "   "}}):
        body = neon_error(await http.post("/api/v1/database", **kwargs), 400, "Missing referrer")
        assert "ref" in body["hint"]
        assert body["code"] == "invalid_request"
    body = neon_error(await http.post(f"/api/v1/database/{uuid.uuid4()}"), 400, "Missing referrer")
    assert body["hint"]


@pytest.mark.parametrize(
    "raw_id",
    [
        "not-a-uuid",
        "00000000-0000-0000-0000-000000000000",
        str(uuid.uuid1()),
        str(uuid.uuid5(uuid.NAMESPACE_DNS, "guessable")),
        # Version 4 by its version digits, hand-picked by the rest.
        "00000000-0000-4000-8000-000000000000",
        "11111111-1111-4111-8111-111111111111",
        "01010101-0101-7101-8101-010101010101",
    ],
)
async def test_a_malformed_or_guessable_id_is_400_database_not_found(
    http: httpx.AsyncClient, raw_id: str
) -> None:
    created = await http.post(f"/api/v1/database/{raw_id}", json=REF)
    assert "random UUID" in neon_error(created, 400, "Database not found")["hint"]
    neon_error(await http.get(f"/api/v1/database/{raw_id}"), 400, "Database not found")


async def test_an_unknown_id_is_404_database_not_found(http: httpx.AsyncClient) -> None:
    neon_error(await http.get(f"/api/v1/database/{uuid.uuid4()}"), 404, "Database not found")


async def test_a_resource_id_never_opens_a_database(http: httpx.AsyncClient) -> None:
    """Resource ids are not secrets (previews list them); only the database id is a key."""
    plain = await http.post("/db/new")
    assert plain.status_code == 201
    neon = await new_database(http, json=REF)
    neon_resource_id = str(uuid.UUID(neon["neon_project_id"].removeprefix("t_")))
    secrets = {plain.json()["connection_url"], neon["connection_string"]}
    for resource_id in (plain.json()["id"], neon_resource_id):
        shown = await http.get(f"/api/v1/database/{resource_id}")
        assert shown.status_code in {400, 404}
        assert shown.json()["error"] == "Database not found"
        taken = await http.post(f"/api/v1/database/{resource_id}", json=REF)
        assert not secrets & {taken.json().get("connection_string")}
    # A resource id made through this API is derived (UUIDv5), so not even a valid database id.
    assert uuid.UUID(neon_resource_id).version == 5


async def test_logical_replication_is_refused_honestly(http: httpx.AsyncClient) -> None:
    refused = await http.post("/api/v1/database", json={**REF, "enable_logical_replication": True})
    body = neon_error(refused, 400, "Logical replication is not available on this platform.")
    assert "enable_logical_replication" in body["hint"]
    plain = await new_database(http, json={**REF, "enable_logical_replication": False})
    assert plain["status"] == "UNCLAIMED"


@pytest.mark.parametrize(
    "content", [b"{not json", b'{"ref": 5}', b'{"ref": "x", "enable_logical_replication": "y"}']
)
async def test_a_malformed_body_is_400_not_500(http: httpx.AsyncClient, content: bytes) -> None:
    response = await http.post(
        "/api/v1/database", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request"


async def test_the_claim_url_names_this_database_only(http: httpx.AsyncClient) -> None:
    other = await http.post("/db/new")
    assert other.status_code == 201
    body = await new_database(http, json=REF)
    preview = await http.get(body["claim_url"])
    assert preview.status_code == 200, preview.text
    moved = preview.json()["resources"]
    assert [r["id"] for r in moved] == [str(uuid.UUID(body["neon_project_id"][2:]))]
    assert moved[0]["kind"] == "postgres"


@pytest.fixture(scope="module")
def tight_gateway_url(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway whose anonymous tier may hold one database per client network."""

    def one_database(plans: dict[str, Any]) -> None:
        anonymous_tier(plans)["caps"]["active_per_kind"] = 1

    with gateway_with_plans(stack, tmp_path_factory.mktemp("tight"), one_database) as gateway:
        yield str(gateway.url)


async def test_admission_applies_as_on_db_new(
    http: httpx.AsyncClient, tight_gateway_url: str
) -> None:
    await new_database(http, json=REF)  # this network now holds at least one database
    async with httpx.AsyncClient(base_url=tight_gateway_url, timeout=60) as tight:
        refused = await tight.post("/api/v1/database", json=REF)
        assert refused.status_code == 402, refused.text
        assert refused.json()["code"] == "plan_limit_reached"
        assert refused.json()["hint"]
        chosen = await tight.post(f"/api/v1/database/{uuid.uuid4()}", json=REF)
        assert chosen.status_code == 402


async def test_claiming_goes_through_claiming_to_claimed_and_hides_the_connection_string(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    body = await new_database(http, json=REF)
    credentials = {"email": f"neon-{uuid.uuid4().hex[:12]}@example.com", "password": "pw-" * 6}
    registered = await http.post("/auth/register", json=credentials)
    assert registered.status_code == 201, registered.text
    headers = {"Authorization": f"Bearer {registered.json()['token']}"}
    token = parse_qs(urlsplit(body["claim_url"]).query)["t"][0]

    stack.stop_service("pg-provisioner")
    try:
        cut_short = await http.post("/claim", json={"token": token}, headers=headers)
        assert cut_short.status_code == 503, cut_short.text
        claiming = (await http.get(f"/api/v1/database/{body['id']}")).json()
        assert claiming["status"] == "CLAIMING"
        assert claiming["connection_string"] == body["connection_string"]
    finally:
        stack.start_service("pg-provisioner")
    claimed = await http.post("/claim", json={"token": token}, headers=headers)
    assert claimed.status_code == 200, claimed.text

    shown = await http.get(f"/api/v1/database/{body['id']}")
    assert shown.status_code == 200
    assert shown.json()["status"] == "CLAIMED"
    assert shown.json()["connection_string"] is None
    assert shown.json()["claim_url"] is None
    assert shown.json()["expires_at"] is None
    again = await http.post(f"/api/v1/database/{body['id']}", json=REF)
    assert again.status_code == 200
    assert again.json()["connection_string"] is None
    conn = await asyncpg.connect(body["connection_string"])  # the URL itself did not change
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()
