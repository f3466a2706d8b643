"""The gateway's HTTP transport: a loop turn's writes leave together, at the end of the turn.

Over a real connected socket pair and a real event loop.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from gateway.http.protocol import CoalescingTransport


class _Peer(asyncio.Protocol):
    pass


@pytest.fixture
async def wrapped() -> AsyncIterator[tuple[CoalescingTransport, socket.socket]]:
    ours, theirs = socket.socketpair()
    theirs.settimeout(0)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(_Peer, ours)
    try:
        yield CoalescingTransport(transport, loop), theirs  # type: ignore[arg-type]
    finally:
        transport.close()
        theirs.close()


def _received(peer: socket.socket) -> bytes:
    try:
        return peer.recv(65536)
    except BlockingIOError:
        return b""


async def test_writes_of_one_turn_leave_together_when_the_turn_ends(
    wrapped: tuple[CoalescingTransport, socket.socket],
) -> None:
    transport, peer = wrapped
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"")
    transport.write(b"{}")
    assert _received(peer) == b"", "nothing is sent before the turn ends"
    await asyncio.sleep(0)
    assert _received(peer) == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"


async def test_a_later_turn_sends_its_own_writes(
    wrapped: tuple[CoalescingTransport, socket.socket],
) -> None:
    transport, peer = wrapped
    transport.write(b"first")
    await asyncio.sleep(0)
    transport.write(b"second")
    await asyncio.sleep(0)
    assert _received(peer) == b"firstsecond"
    transport.write(b"third")
    await asyncio.sleep(0)
    assert _received(peer) == b"third"


async def test_close_sends_what_is_held_first(
    wrapped: tuple[CoalescingTransport, socket.socket],
) -> None:
    transport, peer = wrapped
    transport.write(b"last words")
    transport.close()
    assert transport.is_closing()
    await asyncio.sleep(0.01)
    peer.settimeout(1)
    received = b""
    while chunk := peer.recv(65536):
        received += chunk
    assert received == b"last words"


async def test_everything_else_is_the_wrapped_transports(
    wrapped: tuple[CoalescingTransport, socket.socket],
) -> None:
    transport, _ = wrapped
    assert transport.get_extra_info("socket") is not None
    assert not transport.is_closing()
    transport.pause_reading()
    transport.resume_reading()
