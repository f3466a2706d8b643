"""An export's slot is given back when its client hangs up, whatever the export was doing.

Litestar streams a response in an anyio task group and cancels it when the client disconnects.
anyio's cancellation is sticky: every await inside the cancelled scope is cancelled again. A
client that hangs up while the gateway waits for the worker's next piece therefore lands the
export's cleanup in that scope, and the slot's release (a Redis round trip) must still finish:
otherwise the resource answers "already running" for the slot's TTL, an hour. A client that
hangs up while a piece is being sent leaves the body suspended at that piece, never resumed: its
``finally`` waits for garbage collection, and the response's background task gives the slot back
instead. Either way, once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from litestar.response.streaming import ASGIStreamingResponse
from redis.asyncio import Redis

from gateway.resources.export_routes import _ExportStream


@dataclass(frozen=True)
class Slot:
    """A resource's running-exports count at two (this export's and another's), and a context."""

    redis: Redis
    key: str
    #: All the export needs of the gateway's context: a Redis client of its own with no connection
    #: open yet, as when every pooled one is busy, so giving the slot back must first connect.
    ctx: Any


@pytest.fixture
async def slot(env: dict[str, str]) -> AsyncIterator[Slot]:
    redis = Redis.from_url(env["SPINUP_REDIS_URL"])
    key = f"export:running:test-{uuid.uuid4()}"
    await redis.set(key, 2, ex=60)  # the other export must keep its slot
    ctx = SimpleNamespace(redis=Redis.from_url(env["SPINUP_REDIS_URL"]))
    yield Slot(redis, key, ctx)
    await redis.delete(key)
    await redis.aclose()
    await ctx.redis.aclose()


def _asgi(export: _ExportStream) -> ASGIStreamingResponse:
    """What Litestar sends for the export route's response: its body and background task."""
    stream = export.response(media_type="application/octet-stream", headers={})
    iterator: Any = stream.iterator
    return ASGIStreamingResponse(iterator=iterator, background=stream.background)


async def _slot_count(redis: Redis, key: str, *, settled: int) -> int:
    """The count once it is ``settled`` (given back by a task of its own), or after 5 s."""
    for _ in range(500):
        count = int(await redis.get(key) or 0)
        if count == settled:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # a second release, were there one, would land by now
    return int(await redis.get(key) or 0)


async def test_a_hang_up_while_the_next_piece_is_awaited_gives_the_slot_back_once(
    slot: Slot,
) -> None:
    awaiting_the_worker = asyncio.Event()
    worker_stopped = asyncio.Event()

    async def pieces() -> AsyncIterator[bytes]:
        try:
            yield b"second"
            awaiting_the_worker.set()
            await asyncio.Event().wait()  # the worker's next piece, which the hang-up cuts off
            yield b"never"
        finally:
            worker_stopped.set()

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> dict[str, str]:
        await awaiting_the_worker.wait()
        return {"type": "http.disconnect"}

    response = _asgi(_ExportStream(slot.ctx, slot.key, b"first", pieces()))
    await response({"type": "http"}, receive, send)

    assert [m["body"] for m in sent if m["type"] == "http.response.body"] == [b"first", b"second"]
    assert worker_stopped.is_set()
    assert await _slot_count(slot.redis, slot.key, settled=1) == 1, "not given back exactly once"


async def test_a_hang_up_while_a_piece_is_being_sent_gives_the_slot_back_once(
    slot: Slot,
) -> None:
    # A slow client fills its socket: the server's send waits, with the body suspended at the
    # piece it gave. The hang-up cancels the send, and the body is never resumed: its finally
    # would run only when it is garbage-collected. The response's background task runs at once.
    worker_stopped = asyncio.Event()

    async def pieces() -> AsyncIterator[bytes]:
        try:
            yield b"first"
            yield b"second"
        finally:
            worker_stopped.set()

    worker = pieces()
    first = await anext(worker)  # as the route reads it before answering
    sending = asyncio.Event()

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body":
            sending.set()
            await asyncio.Event().wait()  # the client's socket is full

    async def receive() -> dict[str, str]:
        await sending.wait()
        return {"type": "http.disconnect"}

    response = _asgi(_ExportStream(slot.ctx, slot.key, first, worker))
    await response({"type": "http"}, receive, send)

    assert worker_stopped.is_set(), "the worker's stream was left open"
    assert await _slot_count(slot.redis, slot.key, settled=1) == 1, "not given back exactly once"
    body: Any = response.iterator
    await body.aclose()  # as garbage collection would: its finally, a no-op now
    assert await _slot_count(slot.redis, slot.key, settled=1) == 1, "given back twice"
