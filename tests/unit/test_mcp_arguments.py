"""The MCP tools' arguments: one name for one thing, and wrong arguments answered in words.

In-process (the SDK's own client connected to the server object): a wrong argument is refused
before any call to the API, so no platform is needed.
"""

from __future__ import annotations

from mcp import Client
from mcp_types import TextContent
from spinup_mcp.api import SpinupApi
from spinup_mcp.server import build_server

# Nothing listens here: a call that reached the API would fail differently.
API = SpinupApi(base_url="http://127.0.0.1:9")


async def test_every_tool_naming_a_resource_calls_the_argument_resource() -> None:
    async with Client(build_server(API)) as client:
        tools = (await client.list_tools()).tools
    arguments = {tool.name: set(tool.input_schema.get("properties", {})) for tool in tools}
    for name in (
        "get_resource",
        "delete_resource",
        "rotate_credentials",
        "fork_resource",
        "query_database",
        "read_webhook_requests",
    ):
        assert "resource" in arguments[name], name
    for name in ("read_logs", "control_stack"):
        assert "resource" in arguments[name], name
    # One name for one thing, in every tool (new ones included).
    assert not [name for name, taken in arguments.items() if "token" in taken]


async def test_wrong_arguments_name_the_argument_and_what_the_tool_takes() -> None:
    async with Client(build_server(API)) as client:
        result = await client.call_tool("read_webhook_requests", {"token": "spn_x", "limit": 0})
    assert result.is_error
    text = "\n".join(b.text for b in result.content if isinstance(b, TextContent))
    assert text.startswith("Wrong arguments for read_webhook_requests: "), text
    assert "`token` is not an argument of read_webhook_requests" in text
    assert "`resource` is required" in text
    assert "`limit`: it should be greater than or equal to 1" in text
    assert "`resource` (required): The webhook receiver's token" in text
    # Not pydantic's own text, and never the rejected values.
    assert "validation error" not in text
    assert "input_value" not in text
    assert "spn_x" not in text
