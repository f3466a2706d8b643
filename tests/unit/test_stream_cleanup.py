"""``finish_shielded`` and ``StreamEnd``: a stream's cleanup that a hang-up cannot cut off.

Litestar cancels a streamed response's anyio task group when the client disconnects, and anyio
cancels every await inside that scope again; this is that scope, without the HTTP around it.
"""

from __future__ import annotations

import asyncio

import anyio

from gateway.http.cleanup import StreamEnd, finish_shielded


async def _cleanup(steps: list[str]) -> None:
    steps.append("begun")
    await asyncio.sleep(0.01)  # a round trip: where an unshielded cleanup is cancelled
    steps.append("ended")


async def _run_in_a_cancelled_scope(steps: list[str], *, shielded: bool) -> None:
    started = asyncio.Event()

    async def stream() -> None:
        try:
            started.set()
            await asyncio.Event().wait()  # the next piece, which the hang-up cuts off
        finally:
            if shielded:
                await finish_shielded(_cleanup(steps))
            else:
                await _cleanup(steps)

    async with anyio.create_task_group() as group:
        group.start_soon(stream)
        await started.wait()
        group.cancel_scope.cancel()
    await asyncio.sleep(0.05)


async def test_a_cleanup_finishes_when_its_scope_was_cancelled() -> None:
    steps: list[str] = []
    await _run_in_a_cancelled_scope(steps, shielded=True)
    assert steps == ["begun", "ended"]


async def test_unshielded_the_same_cleanup_is_cut_off() -> None:
    # What the helper is for: without it, the cleanup stops at its first await.
    steps: list[str] = []
    await _run_in_a_cancelled_scope(steps, shielded=False)
    assert steps == ["begun"]


async def test_outside_a_cancelled_scope_it_returns_when_the_cleanup_has_ended() -> None:
    steps: list[str] = []
    await finish_shielded(_cleanup(steps))
    assert steps == ["begun", "ended"]


async def test_a_stream_end_runs_its_cleanup_once_whoever_runs_it() -> None:
    # The body's finally and the response's background task both run it.
    steps: list[str] = []
    end = StreamEnd(lambda: _cleanup(steps))
    await end.run()
    await end.background()
    await end.run()
    assert steps == ["begun", "ended"]


async def test_a_stream_end_as_background_runs_the_cleanup_to_its_end() -> None:
    steps: list[str] = []
    await StreamEnd(lambda: _cleanup(steps)).background()
    assert steps == ["begun", "ended"]
