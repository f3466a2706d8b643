"""An export's slot is given back when its client hangs up, whatever the export was doing.

Litestar streams a response in an anyio task group and cancels it when the client disconnects.
anyio's cancellation is sticky: every await inside the cancelled scope is cancelled again. A
client that hangs up while the gateway waits for the worker's next piece therefore lands the
export's cleanup in that scope, and the slot's release (a Redis round trip) must still finish:
otherwise the resource answers "already running" for the slot's TTL, an hour.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from litestar.response.streaming import ASGIStreamingResponse
from redis.asyncio import Redis

from gateway.resources.export_routes import _body


async def test_a_hang_up_while_the_next_piece_is_awaited_gives_the_slot_back(
    env: dict[str, str],
) -> None:
    redis = Redis.from_url(env["SPINUP_REDIS_URL"])
    key = f"export:running:test-{uuid.uuid4()}"
    await redis.set(key, 1, ex=60)  # as _start_running leaves it for one running export
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

    # All _body needs of the gateway's context: a client of its own with no connection open yet,
    # as when every pooled one is busy, so giving the slot back must first connect (an await).
    ctx: Any = SimpleNamespace(redis=Redis.from_url(env["SPINUP_REDIS_URL"]))
    response = ASGIStreamingResponse(iterator=_body(ctx, key, b"first", pieces()))
    try:
        await response.send_body(send, receive)

        assert [m["body"] for m in sent] == [b"first", b"second"]
        assert worker_stopped.is_set()
        # Given back as a task of its own: a moment after the response ends, or never.
        for _ in range(500):
            if int(await redis.get(key) or 0) == 0:
                break
            await asyncio.sleep(0.01)
        assert int(await redis.get(key) or 0) == 0, "the hung-up export still holds its slot"
    finally:
        await redis.delete(key)
        await redis.aclose()
        await ctx.redis.aclose()
