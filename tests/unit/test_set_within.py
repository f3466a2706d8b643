"""``shared.runtime.set_within``: an event or a timeout, and never a lost cancellation.

Background loops (the relay, the warm pool's refills, an export's window) wait this way between
passes; a cancellation they lose is a process whose stop hangs.
"""

from __future__ import annotations

import asyncio

import pytest

from shared.runtime import set_within


async def test_it_says_whether_the_event_was_set_in_time() -> None:
    event = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await set_within(event, 5.0)
    event.clear()
    assert not await set_within(event, 0.01)


async def _wait_then_run_on(event: asyncio.Event) -> str:
    await set_within(event, 10.0)
    return "ran on"


async def test_a_cancel_in_the_turn_the_event_is_set_is_not_lost() -> None:
    # asyncio.wait_for(event.wait(), ...) returns True here on Python 3.11 and the loop that
    # called it runs on (python/cpython#86296).
    for turns_before in range(4):
        event = asyncio.Event()

        waiting = asyncio.create_task(_wait_then_run_on(event))
        for _ in range(turns_before + 1):
            await asyncio.sleep(0)
        event.set()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
