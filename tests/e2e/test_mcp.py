"""The MCP server, driven by the official SDK's own client against the running platform.

Over stdio (the server a subprocess, as an agent's host starts it) and over streamable HTTP.
No claim of a real claim_url here: every test shares 127.0.0.1, so it would sweep up the other
tests' anonymous resources (test_claim.py gives each test a network of its own for that).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_types import CallToolResult, TextContent

from devstack.procs import free_ports
from devstack.stack import Stack
from shared.testing.polling import eventually
from tests.e2e.conftest import new_email, one_service_app, register

pytestmark = pytest.mark.e2e

SPINUP_MCP = Path(sys.executable).with_name("spinup-mcp")
TOOLS = {
    "create_database",
    "create_cache",
    "create_nosql",
    "create_queue",
    "create_storage",
    "create_webhook",
    "list_resources",
    "get_resource",
    "delete_resource",
    "rotate_credentials",
    "fork_resource",
    "query_database",
    "read_webhook_requests",
    "claim",
    "deploy_stack",
    "read_logs",
    "control_stack",
}


@contextlib.asynccontextmanager
async def stdio_mcp(gateway_url: str, token: str | None = None) -> AsyncIterator[Client]:
    """``spinup-mcp`` started by the SDK's stdio client, with only the configuration given."""
    env = {"SPINUP_URL": gateway_url, **({"SPINUP_TOKEN": token} if token else {})}
    params = StdioServerParameters(command=str(SPINUP_MCP), env=env)
    async with Client(params, read_timeout_seconds=60) as client:
        yield client


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def answer(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    body: dict[str, Any] = result.structured_content
    return body


def refusal(result: CallToolResult) -> tuple[str, dict[str, Any]]:
    assert result.is_error, text_of(result)
    body: dict[str, Any] = result.structured_content
    return text_of(result), body


async def database_name(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        name: str = await conn.fetchval("SELECT current_database()")
        return name
    finally:
        await conn.close()


async def test_stdio_tools_create_use_show_rotate_and_delete_a_database(stack: Stack) -> None:
    async with stdio_mcp(stack.gateway_url) as client:
        tools = (await client.list_tools()).tools
        assert {tool.name for tool in tools} >= TOOLS
        for tool in tools:
            assert tool.description, tool.name
            assert len(tool.description) > 80, tool.name
            assert tool.input_schema["type"] == "object", tool.name
        create = next(tool for tool in tools if tool.name == "create_database")
        assert "token" in create.description
        assert "24 hours" in create.description
        assert {"name", "idempotency_key"} <= create.input_schema["properties"].keys()

        created = answer(await client.call_tool("create_database", {"name": "mcp-test"}))
        assert created["token"].startswith("spn_")
        assert created["kind"] == "postgres"
        assert created["claim_url"]
        assert await database_name(created["connection_url"]) == created["credentials"]["database"]

        shown = answer(await client.call_tool("get_resource", {"resource": created["token"]}))
        assert (shown["id"], shown["status"], shown["name"]) == (
            created["id"],
            "active",
            "mcp-test",
        )
        assert shown["connection_url"] == created["connection_url"]

        rotated = answer(
            await client.call_tool("rotate_credentials", {"resource": created["token"]})
        )
        assert rotated["connection_url"] != created["connection_url"]
        assert await database_name(rotated["connection_url"]) == created["credentials"]["database"]
        with pytest.raises(asyncpg.InvalidPasswordError):
            await database_name(created["connection_url"])

        deleted = answer(await client.call_tool("delete_resource", {"resource": created["token"]}))
        assert (deleted["id"], deleted["status"]) == (created["id"], "deleted")

        text, body = refusal(await client.call_tool("get_resource", {"resource": created["token"]}))
        assert body["error"] == "not_found"
        assert body["message"] in text
        assert "not_found" in text

        # Without SPINUP_TOKEN the account tools say what to configure, without asking the API.
        text, body = refusal(await client.call_tool("list_resources", {}))
        assert "SPINUP_TOKEN" in text
        assert body["error"] == "unauthorized"


async def test_query_database_runs_sql_as_the_database_own_user(stack: Stack) -> None:
    async with stdio_mcp(stack.gateway_url) as client:
        created = answer(await client.call_tool("create_database", {}))
        token = created["token"]

        def run(sql: str, **more: Any) -> Any:
            return client.call_tool("query_database", {"resource": token, "sql": sql, **more})

        script = answer(
            await run(
                "CREATE TABLE notes (id int PRIMARY KEY, body text, raw bytea, at timestamptz,"
                " price numeric, tags text[]);"
                "INSERT INTO notes SELECT n, 'note ' || n, '\\x00ff', '2026-12-04T10:00:00Z',"
                " 1.50, ARRAY['a', 'b'] FROM generate_series(1, 5) n"
            )
        )
        assert script["status"] == "INSERT 0 5"
        rows = answer(await run("SELECT * FROM notes WHERE id > 2 ORDER BY id"))
        assert rows["status"] == "SELECT 3"
        assert rows["columns"] == ["id", "body", "raw", "at", "price", "tags"]
        assert rows["rows"][0] == [
            3,
            "note 3",
            "\\x00ff",
            "2026-12-04T10:00:00+00:00",
            "1.50",
            ["a", "b"],
        ]
        assert (rows["row_count"], rows["truncated"]) == (3, False)
        capped = answer(await run("SELECT id FROM notes ORDER BY id", max_rows=2))
        assert (capped["rows"], capped["row_count"], capped["truncated"]) == ([[1], [2]], 5, True)

        # It is the tenant's own session: the server's rules, not the platform's, decide.
        who = answer(await run("SELECT current_user = current_database() AS own"))
        assert who["rows"] == [[True]]
        text, body = refusal(await run("SELECT * FROM pg_database"))
        assert body["error"] == "sql_error"
        assert body["sqlstate"] == "42501", text  # permission denied (docs/adr/0016)
        text, body = refusal(await run("SELEC 1"))
        assert body["sqlstate"] == "42601"
        assert body["position"] == "1", body
        assert "syntax error" in text

        cache = answer(await client.call_tool("create_cache", {}))
        text, body = refusal(
            await client.call_tool("query_database", {"resource": cache["token"], "sql": "x"})
        )
        assert body["error"] == "invalid_request"
        assert "redis" in text
        for made in (created, cache):
            answer(await client.call_tool("delete_resource", {"resource": made["token"]}))


async def test_stdio_tools_in_an_account_and_the_servers_agent_action(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    session = await register(http, new_email("mcp"))
    issued = await http.post(
        "/auth/tokens",
        json={"name": "mcp read only", "scopes": ["read"]},
        headers={"Authorization": f"Bearer {session}"},
    )
    assert issued.status_code == 201, issued.text
    read_only = issued.json()["token"]

    async with stdio_mcp(stack.gateway_url, session) as client:
        created = answer(await client.call_tool("create_webhook", {"name": "mcp-hook"}))
        assert created["expires_at"] is None
        assert created["claim_url"] is None
        listed = answer(await client.call_tool("list_resources", {"kind": "webhook"}))
        assert [each["id"] for each in listed["resources"]] == [created["id"]]
        # With the account's credential the resource's id works where a token does.
        shown = answer(await client.call_tool("get_resource", {"resource": created["id"]}))
        assert shown["name"] == "mcp-hook"

        text, body = refusal(
            await client.call_tool("claim", {"claim_url": f"{stack.gateway_url}/claim?t=forged"})
        )
        assert body["error"] == "invalid_claim_token"
        assert body["message"] in text

    async with stdio_mcp(stack.gateway_url, read_only) as client:
        listed = answer(await client.call_tool("list_resources", {}))
        assert [each["id"] for each in listed["resources"]] == [created["id"]]
        text, body = refusal(await client.call_tool("create_cache", {}))
        assert body["error"] == "insufficient_scope"
        assert body["agent_action"]
        assert body["message"] in text
        assert f"What to do: {body['agent_action']}" in text


async def test_the_stdio_servers_log_names_no_token(stack: Stack, tmp_path: Path) -> None:
    # An MCP host keeps the server's stderr in its log files, and a resource's URL holds its
    # token: the SDK logs at INFO, and httpx each request's URL at INFO.
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        created = (await http.post("/cache/new")).json()
        # Wide: the SDK's log handler wraps lines at the terminal's width, within the token too.
        env = {"SPINUP_URL": stack.gateway_url, "PATH": os.environ["PATH"], "COLUMNS": "1000"}
        params = StdioServerParameters(command=str(SPINUP_MCP), env=env)
        log = tmp_path / "stderr.log"
        with log.open("w") as errlog:
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                shown = await session.call_tool("get_resource", {"resource": created["token"]})
                assert answer(shown)["id"] == created["id"]
        assert created["token"] not in log.read_text(), log.read_text() + "|" + created["token"]
        await http.delete(f"/resources/{created['token']}")


@pytest.fixture
def http_mcp(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """``spinup-mcp --http`` as a subprocess on a free port; yields its MCP endpoint."""
    port = free_ports(1)[0]
    env = {k: v for k, v in os.environ.items() if k != "SPINUP_TOKEN"}
    env["SPINUP_URL"] = stack.gateway_url
    log = (tmp_path / "spinup-mcp.log").open("wb")
    process = subprocess.Popen(  # noqa: S603  (our own console script)
        [str(SPINUP_MCP), "--http", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


async def listening(url: str) -> bool:
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def test_streamable_http_lists_tools_and_creates_a_webhook(
    http_mcp: str, http: httpx.AsyncClient
) -> None:
    assert await eventually(lambda: listening(http_mcp), within=20), "spinup-mcp --http"
    async with Client(http_mcp, read_timeout_seconds=60) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} >= TOOLS
        created = answer(await client.call_tool("create_webhook", {}))
        assert created["kind"] == "webhook"
        sent = await http.post(created["credentials"]["receive_url"] + "/hello", json={"n": 1})
        assert sent.status_code < 300, sent.text
        read = answer(
            await client.call_tool(
                "read_webhook_requests", {"resource": created["token"], "limit": 5}
            )
        )
        assert read["count"] == 1
        assert read["requests"][0]["path"] == "/hello"
        # The old argument name gets an answer that names the right one, not pydantic's text.
        wrong = await client.call_tool("read_webhook_requests", {"token": created["token"]})
        assert wrong.is_error
        text = text_of(wrong)
        assert "`token` is not an argument of read_webhook_requests" in text, text
        assert "`resource` is required" in text, text
        assert "validation error" not in text
        assert "input_value" not in text
        answer(await client.call_tool("delete_resource", {"resource": created["token"]}))


async def test_stdio_tools_deploy_a_stack_read_its_logs_stop_it_and_delete_it(
    stack: Stack, tmp_path: Path
) -> None:
    app = one_service_app(tmp_path / "app", "hello from mcp")
    async with stdio_mcp(stack.gateway_url) as client:
        refused, body = refusal(
            await client.call_tool("deploy_stack", {"directory": str(tmp_path / "nowhere")})
        )
        assert "spinup.yaml" in refused
        assert body["error"] == "invalid_request"

        created = answer(await client.call_tool("deploy_stack", {"directory": str(app)}))
        token = created["token"]
        assert created["status"] == "building"

        async def running() -> dict[str, Any]:
            shown = answer(await client.call_tool("get_resource", {"resource": token}))
            return shown if shown["stack"]["status"] in {"running", "failed"} else {}

        shown = await eventually(running, within=180, interval=1)
        assert shown["stack"]["status"] == "running", shown
        async with httpx.AsyncClient(timeout=10) as http:
            page = await http.get(created["urls"]["web"])
        assert page.text.strip() == "hello from mcp"

        logs = answer(await client.call_tool("read_logs", {"resource": token}))["events"]
        assert any(event["data"]["source"] == "build:web" for event in logs), logs

        stopped = answer(
            await client.call_tool("control_stack", {"resource": token, "action": "stop"})
        )
        assert stopped["status"] == "stopped"
        answer(await client.call_tool("delete_resource", {"resource": token}))
