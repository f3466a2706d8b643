"""An export's slot is given back when its client hangs up, whatever the export was doing.

Litestar streams a response in an anyio task group and cancels it when the client disconnects.
anyio's cancellation is sticky: every await inside the cancelled scope is cancelled again. A
client that hangs up while the gateway waits for the worker's next piece therefore lands the
export's cleanup in that scope, and the slot's release (a Redis round trip) must still finish:
otherwise the resource answers "already running" for the slot's TTL, an hour. A client that
hangs up before the first piece leaves the body's generator unstarted, with no ``finally`` to
run: the response's background task gives the slot back then. Either way, once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from litestar.response.streaming import ASGIStreamingResponse
from redis.asyncio import Redis

from gateway.resources.export_routes import _ExportStream


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
    env: dict[str, str],
) -> None:
    redis = Redis.from_url(env["SPINUP_REDIS_URL"])
    key = f"export:running:test-{uuid.uuid4()}"
    # Two running exports: this one's and another's, which must keep its slot.
    await redis.set(key, 2, ex=60)
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

    # All the export needs of the gateway's context: a client of its own with no connection open
    # yet, as when every pooled one is busy, so giving the slot back must first connect (an await).
    ctx: Any = SimpleNamespace(redis=Redis.from_url(env["SPINUP_REDIS_URL"]))
    response = _asgi(_ExportStream(ctx, key, b"first", pieces()))
    try:
        await response({"type": "http"}, receive, send)

        assert [m["body"] for m in sent if m["type"] == "http.response.body"] == [
            b"first",
            b"second",
        ]
        assert worker_stopped.is_set()
        assert await _slot_count(redis, key, settled=1) == 1, "not given back exactly once"
    finally:
        await redis.delete(key)
        await redis.aclose()
        await ctx.redis.aclose()


async def test_a_hang_up_while_a_piece_is_being_sent_gives_the_slot_back_once(
    env: dict[str, str],
) -> None:
    # A slow client fills its socket: the server's send waits, with the body suspended at the
    # piece it gave. The hang-up cancels the send, and the body is never resumed: its finally
    # would run only when it is garbage-collected. The response's background task runs at once.
    redis = Redis.from_url(env["SPINUP_REDIS_URL"])
    key = f"export:running:test-{uuid.uuid4()}"
    await redis.set(key, 2, ex=60)
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

    ctx: Any = SimpleNamespace(redis=Redis.from_url(env["SPINUP_REDIS_URL"]))
    response = _asgi(_ExportStream(ctx, key, first, worker))
    body = response.iterator
    try:
        await response({"type": "http"}, receive, send)

        assert worker_stopped.is_set(), "the worker's stream was left open"
        assert await _slot_count(redis, key, settled=1) == 1, "not given back exactly once"
        await body.aclose()  # type: ignore[attr-defined]  # as garbage collection would: a no-op
        assert await _slot_count(redis, key, settled=1) == 1, "given back twice"
    finally:
        await redis.delete(key)
        await redis.aclose()
        await ctx.redis.aclose()
