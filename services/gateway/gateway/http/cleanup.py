"""Cleanup at the end of a streamed response that finishes even when the client hung up.

Litestar streams a response in an anyio task group and cancels the group when the client
disconnects. anyio's cancellation is sticky: inside the cancelled scope every await is cancelled
again, so an ``await`` in a stream generator's ``finally`` can be cut off before it has done
anything (a slot never given back, a pooled connection never returned, a subscription left on
the server). ``finish_shielded`` runs such cleanup as a task of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

#: Cleanups under way, kept until they end (the event loop holds only weak references to tasks).
_FINISHING: set[asyncio.Task[None]] = set()


async def finish_shielded(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run ``cleanup`` to its end, even from a cancelled scope.

    Outside one, this returns when ``cleanup`` has ended, so a response still ends after it.
    Inside one, the await is cancelled and ``cleanup`` goes on alone.
    """
    task = asyncio.create_task(cleanup)
    _FINISHING.add(task)
    task.add_done_callback(_FINISHING.discard)
    await asyncio.shield(task)
