"""What every service's ``main`` does the same way: connect with patience, stop on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import structlog

from shared.config import SettingsError

T = TypeVar("T")
log = structlog.get_logger("shared.runtime")


async def connect_with_retry(
    what: str, connect: Callable[[], Awaitable[T]], *, attempts: int = 60, delay: float = 0.5
) -> T:
    """Call ``connect`` until it succeeds; services may start before their servers are ready."""
    for attempt in range(1, attempts + 1):
        try:
            return await connect()
        except Exception as exc:
            if attempt == attempts:
                raise
            log.info(
                "runtime.connect.retrying", target=what, attempt=attempt, error=type(exc).__name__
            )
            await asyncio.sleep(delay)
    raise AssertionError  # unreachable: the loop returns or raises


async def set_within(event: asyncio.Event, timeout_s: float) -> bool:
    """Whether ``event`` is set within ``timeout_s`` seconds.

    Not ``asyncio.wait_for(event.wait(), timeout_s)``: on Python 3.11 that swallows a
    cancellation delivered in the loop turn the event is set in (python/cpython#86296, fixed in
    3.12), and a background loop waiting that way when its process stops runs on, so the stop
    hangs until the process is killed.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run ``work`` as a task while the block runs; at its end, cancel it and wait for it."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def raise_if_cancelled(exc: BaseException) -> None:
    """Raise ``CancelledError`` when the current task is being cancelled.

    A cancel that lands inside a driver's call can come out as the driver's own error (a query
    cancelled, a connection closed). A loop that catches that as an outage and goes on has
    swallowed its stop: whoever awaits the task after cancelling it waits for ever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


@contextlib.asynccontextmanager
async def repeating(
    work: Callable[[], Awaitable[object]], interval_s: float, failure_event: str
) -> AsyncIterator[None]:
    """Run ``work`` every ``interval_s`` while the block runs; a failure waits for the next pass.

    A failure is logged as ``failure_event`` once per outage, not at every pass of it (the
    backend probe reports outages as they happen).
    """

    async def passes() -> None:
        failing = False
        while True:
            try:
                await work()
            except Exception as exc:  # noqa: BLE001  (a server or the log is down: next pass)
                raise_if_cancelled(exc)
                if not failing:
                    log.warning(failure_event, error=repr(exc))
                failing = True
            else:
                failing = False
            await asyncio.sleep(interval_s)

    async with in_background(passes()):
        yield


async def wait_for_shutdown() -> None:
    """Return when SIGINT or SIGTERM arrives."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def settings_or_exit(service: str, read: Callable[[], T]) -> T:
    """Read settings; on a missing or malformed one, say which and exit with status 2."""
    try:
        return read()
    except SettingsError as exc:
        sys.stderr.write(f"{service}: {exc}\n")
        raise SystemExit(2) from None
