"""The gateway's HTTP/1.1 server: kept-alive connections, and the bound on a request's head.

HTTP clients reuse an idle connection until their own idle expiry (httpx's is 5 s). A server
that closes it first races the client's next request, which then fails with nothing answered:
a create lost to the caller although it was valid.

httptools holds a header's bytes until the header ends, with no bound of its own: the gateway
sets one (64 KiB of request line and headers), or one request could fill its memory.
"""

from __future__ import annotations

import asyncio
import json
import time

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


async def _answer_to(stack: Stack, pieces: list[bytes]) -> tuple[bytes, dict[str, object]]:
    """Send ``pieces`` on a fresh connection, one write each; the answer's head and JSON body."""
    url = httpx.URL(stack.gateway_url)
    assert url.host is not None
    assert url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=30)
    except ConnectionResetError:
        # The gateway may close while pieces are still on their way; what it answered is read.
        answer = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, json.loads(body) if body.startswith(b"{") else {}


def _request(
    headers: list[bytes],
    body: bytes = b"",
    method: bytes = b"GET",
    path: bytes = b"/healthz",
    host: bytes = b"spinup",
) -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"host: " + host, *headers]
    if body:
        lines.append(b"content-length: %d" % len(body))
    return b"\r\n".join([*lines, b"connection: close", b"", b""]) + body


async def test_a_head_over_64_kib_is_refused_in_one_piece_or_dripped(stack: Stack) -> None:
    big = _request([b"x-big: " + b"a" * (65 * 1024)])
    many = _request([b"x-h%d: " % n + b"v" * 1000 for n in range(70)])
    for pieces in ([big], [big[i : i + 1024] for i in range(0, len(big), 1024)], [many]):
        head, body = await _answer_to(stack, pieces)
        assert head.startswith(b"HTTP/1.1 431"), head
        assert body["error"] == "request_headers_too_large"
        assert "64 KiB" in str(body["message"])


async def test_a_large_head_and_body_in_one_write_are_served_when_the_head_is_within_64_kib(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    receiver = (await http.post("/webhook/new")).json()
    url = httpx.URL(receiver["credentials"]["receive_url"])
    path, host = url.raw_path, url.netloc  # the content host's name (ADR 0067)
    # 40 KiB of headers and a 60 KiB body (the anonymous plan's bodies go to 64 KiB), together
    # over the head's bound, in one write: the body is not counted as the head.
    headers = [b"x-h%d: " % n + b"v" * 1000 for n in range(40)]
    payload = b"b" * (60 * 1024)
    head, _ = await _answer_to(stack, [_request(headers, payload, b"POST", path, host)])
    assert head.startswith(b"HTTP/1.1 200"), head
    captured = (await http.get(f"/webhook/{receiver['token']}/requests")).json()["requests"]
    assert [len(request["body"]) for request in captured] == [len(payload)]
    assert ["x-h39", "v" * 1000] in captured[0]["headers"]


async def test_a_huge_header_costs_the_gateway_no_more_than_the_bound(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    # 8 MiB of one header, sent as fast as the connection takes it: refused long before its end.
    started = time.monotonic()
    chunk = b"a" * (256 * 1024)
    head, body = await _answer_to(stack, [b"GET /healthz HTTP/1.1\r\nx-big: ", *[chunk] * 32])
    assert head.startswith(b"HTTP/1.1 431"), head
    assert body["error"] == "request_headers_too_large"
    assert time.monotonic() - started < 10
    assert (await http.get("/healthz")).status_code == 200
