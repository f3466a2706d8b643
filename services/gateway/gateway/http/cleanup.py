"""Cleanup at the end of a streamed response that runs once, however the response ends.

A stream that holds something from the handler on (an export's slot, a live feed's Redis
connection) must give it back when the response ends. Two ways of ending skip a plain
``finally`` in the body's generator:

- Litestar streams a response in an anyio task group and cancels the group when the client
  disconnects. anyio's cancellation is sticky: inside the cancelled scope every await is
  cancelled again, so an ``await`` in the generator's ``finally`` can be cut off before it has
  done anything. ``finish_shielded`` runs the cleanup as a task of its own.
- A client that hangs up while a piece is being sent (its socket full, the server's send
  waiting) leaves the generator suspended at that piece, never resumed: its ``finally`` runs only
  when it is garbage-collected. ``StreamEnd`` is also the response's background task, which
  Litestar runs after the body however the body ended, in the request's own task, outside the
  cancelled scope.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from litestar.background_tasks import BackgroundTask

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


class StreamEnd:
    """A streamed response's cleanup, run once: by its body's ``finally`` or by the response.

    The body's generator awaits ``run`` in its ``finally`` (it ends there when it fails, and
    Litestar then skips the background task); the response carries ``background``. Whichever
    comes first runs the cleanup, shielded; the other does nothing, so a slot counted once is
    given back once.
    """

    def __init__(self, cleanup: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """``cleanup``: makes the coroutine that gives back what the stream holds."""
        self._cleanup = cleanup
        self._ran = False

    async def run(self) -> None:
        """Run the cleanup unless it ran already."""
        if self._ran:
            return
        self._ran = True
        await finish_shielded(self._cleanup())

    @property
    def background(self) -> BackgroundTask:
        """The response's background task: the cleanup, after the body however it ended."""
        return BackgroundTask(self.run)
