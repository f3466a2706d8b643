"""The periodic loops' stop: a cancel that comes out of a driver as its own error still stops."""

from __future__ import annotations

import asyncio

from shared.runtime import repeating


async def test_a_cancel_turned_into_a_drivers_error_still_ends_the_loop() -> None:
    started = asyncio.Event()

    async def query() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            # What asyncpg can raise when its query is cancelled or its connection closed.
            raise ConnectionResetError("connection closed") from None

    async def run() -> None:
        async with repeating(query, interval_s=0.01, failure_event="test.pass.failed"):
            await started.wait()

    # Leaving the block cancels the loop and waits for it: before the fix, for ever.
    ending = asyncio.ensure_future(run())
    done, _ = await asyncio.wait({ending}, timeout=5)
    assert done, "the loop swallowed its cancel and went on"
