"""AclSaver: many changes share one ACL SAVE, a waiter returns only after a save that covers it."""

from __future__ import annotations

import asyncio

import pytest

from redis_provisioner.driver import AclSaver
from shared.contracts.errors import BackendUnavailableError, ErrorCode, SpinupError
from shared.testing.polling import eventually


class Recorder:
    """A save that records when it ran and can be told to fail."""

    def __init__(self, duration: float = 0.0) -> None:
        self.saves = 0
        self.failures_left = 0
        self.duration = duration
        self.saving = asyncio.Event()

    async def __call__(self) -> None:
        self.saving.set()
        await asyncio.sleep(self.duration)
        if self.failures_left:
            self.failures_left -= 1
            raise BackendUnavailableError("down")
        self.saves += 1

    async def has_saved(self) -> bool:
        return self.saves > 0


async def test_a_burst_of_changes_is_saved_once() -> None:
    recorder = Recorder()
    saver = AclSaver(recorder, delay=0.05, max_duty=0.5)
    saver.start()
    for _ in range(100):
        saver.changed()
    # Saved by the background task on its own, not by close; close then finds nothing pending.
    assert await eventually(recorder.has_saved, within=5, interval=0.01)
    await saver.close()
    assert recorder.saves == 1


async def test_waiters_of_one_round_share_a_save_and_return_after_it() -> None:
    recorder = Recorder(duration=0.02)
    saver = AclSaver(recorder, delay=0.01, max_duty=0.5)
    saver.start()
    await asyncio.gather(*(saver.changed_and_saved() for _ in range(20)))
    assert recorder.saves == 1
    await saver.close()


async def test_a_change_during_a_save_gets_a_save_of_its_own() -> None:
    recorder = Recorder(duration=0.05)
    saver = AclSaver(recorder, delay=0.0, max_duty=1.0)
    saver.start()
    first = asyncio.create_task(saver.changed_and_saved())
    await recorder.saving.wait()  # the first save is running now
    await saver.changed_and_saved()
    await first
    assert recorder.saves == 2
    await saver.close()


async def test_a_failed_save_fails_its_waiters_and_is_retried() -> None:
    recorder = Recorder()
    recorder.failures_left = 1
    saver = AclSaver(recorder, delay=0.0, max_duty=1.0)
    saver.start()
    with pytest.raises(SpinupError) as failed:
        await saver.changed_and_saved()
    assert failed.value.code is ErrorCode.BACKEND_UNAVAILABLE
    assert await eventually(recorder.has_saved, within=5, interval=0.01)
    await saver.close()


async def test_saves_rest_so_they_take_at_most_the_duty_share_of_time() -> None:
    recorder = Recorder(duration=0.05)
    saver = AclSaver(recorder, delay=0.0, max_duty=0.25)
    saver.start()
    await saver.changed_and_saved()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await saver.changed_and_saved()
    # 50 ms of saving at a 25 % duty means 150 ms of rest before the next save may start.
    assert loop.time() - began >= 0.15 + 0.05
    await saver.close()


async def test_close_saves_what_is_pending() -> None:
    recorder = Recorder()
    saver = AclSaver(recorder, delay=10.0, max_duty=1.0)
    saver.start()
    saver.changed()
    await saver.close()
    assert recorder.saves == 1


async def test_close_returns_even_when_a_save_swallows_the_cancel() -> None:
    swallowed = asyncio.Event()

    async def save_that_swallows_a_cancel() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            # What a client's timeout handling can make of a cancel: an error, or nothing.
            swallowed.set()

    saver = AclSaver(save_that_swallows_a_cancel, delay=0.0, max_duty=1.0)
    saver.start()
    saver.changed()
    await asyncio.sleep(0.05)  # the save is running
    closing = asyncio.create_task(saver.close())
    done, _ = await asyncio.wait({closing}, timeout=2)
    assert done == {closing}, "close waited for a task that went back to waiting for changes"
    assert swallowed.is_set()
