"""The gateway's HTTP transport: a loop turn's writes leave together, at the end of the turn.

Over a real connected socket pair, on asyncio's own event loop and on uvloop's (the gateway's).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from gateway.http.protocol import CoalescingTransport

Check = Callable[[CoalescingTransport, socket.socket], Awaitable[None]]


class _Peer(asyncio.Protocol):
    pass


def _received(peer: socket.socket) -> bytes:
    try:
        return peer.recv(65536)
    except BlockingIOError:
        return b""


async def _over_a_socket_pair(check: Check) -> None:
    ours, theirs = socket.socketpair()
    theirs.settimeout(0)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(_Peer, ours)
    try:
        await check(CoalescingTransport(transport, loop), theirs)  # type: ignore[arg-type]
    finally:
        transport.close()
        theirs.close()


async def _one_turn(transport: CoalescingTransport, peer: socket.socket) -> None:
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"")
    transport.write(b"{}")
    assert _received(peer) == b"", "nothing is sent before the turn ends"
    await asyncio.sleep(0)
    assert _received(peer) == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"


async def _later_turns(transport: CoalescingTransport, peer: socket.socket) -> None:
    transport.write(b"first")
    await asyncio.sleep(0)
    transport.write(b"second")
    await asyncio.sleep(0)
    assert _received(peer) == b"firstsecond"
    transport.write(b"third")
    await asyncio.sleep(0)
    assert _received(peer) == b"third"


async def _close_first_sends(transport: CoalescingTransport, peer: socket.socket) -> None:
    transport.write(b"last words")
    transport.close()
    assert transport.is_closing()
    await asyncio.sleep(0.01)
    peer.settimeout(1)
    received = b""
    while chunk := peer.recv(65536):
        received += chunk
    assert received == b"last words"


async def _the_rest_is_wrapped(transport: CoalescingTransport, _peer: socket.socket) -> None:
    assert transport.get_extra_info("socket") is not None
    assert not transport.is_closing()
    transport.pause_reading()
    transport.resume_reading()


LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    "check",
    [_one_turn, _later_turns, _close_first_sends, _the_rest_is_wrapped],
    ids=[
        "writes_of_one_turn_leave_together_when_it_ends",
        "a_later_turn_sends_its_own_writes",
        "close_sends_what_is_held_first",
        "everything_else_is_the_wrapped_transports",
    ],
)
def test_coalescing_transport(loop: str, check: Check) -> None:
    LOOPS[loop](_over_a_socket_pair(check))
