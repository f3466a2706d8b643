"""Waiting in tests for something the system does asynchronously (the reaper, the relay)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T]], *, within: float = 20.0, interval: float = 0.2
) -> T:
    """Call ``check`` until it returns something truthy or ``within`` seconds pass.

    Returns the last result, so the caller's assertion shows what it saw.
    """
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval)
