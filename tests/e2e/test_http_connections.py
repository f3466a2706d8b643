"""A client's kept-alive connection to the gateway.

HTTP clients reuse an idle connection until their own idle expiry (httpx's is 5 s). A server
that closes it first races the client's next request, which then fails with nothing answered:
a create lost to the caller although it was valid.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from devstack.stack import Stack

pytestmark = pytest.mark.e2e


async def _status_of_healthz(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Ask ``GET /healthz`` on the connection and read the whole answer; its status line."""
    writer.write(b"GET /healthz HTTP/1.1\r\nhost: spinup\r\n\r\n")
    status = await asyncio.wait_for(reader.readline(), timeout=10)
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def test_a_connection_idle_past_the_clients_expiry_is_still_served(stack: Stack) -> None:
    url = httpx.URL(stack.gateway_url)
    assert url.host is not None
    assert url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        assert (await _status_of_healthz(reader, writer)).startswith(b"HTTP/1.1 200")
        # Idle for longer than httpx keeps a connection for reuse.
        await asyncio.sleep(6)
        assert (await _status_of_healthz(reader, writer)).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
