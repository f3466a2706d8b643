"""Database errors translated, in one place, into the platform's own."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from shared.contracts.errors import PlatformUnavailableError
from shared.postgres.errors import CONNECTION_ERRORS

#: What the schema's ``refuse_append`` raises: an append's precondition said no.
REFUSED_SQLSTATE = "SP001"


class ConcurrencyConflictError(Exception):
    """Someone else appended to the stream first: reload and decide again."""


class AppendRefusedError(Exception):
    """The append's precondition refused it: nothing was written.

    ``detail`` is what the precondition said when it refused (``refuse_append(detail)``).
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@contextlib.asynccontextmanager
async def platform_errors() -> AsyncIterator[None]:
    """Translate what a platform query raises into the platform's own errors.

    "The platform database is unreachable" becomes ``PlatformUnavailableError``; an append's
    refused precondition (``refuse_append``) becomes ``AppendRefusedError``.
    """
    try:
        yield
    except CONNECTION_ERRORS as exc:
        msg = "The platform database is unreachable; try again shortly."
        raise PlatformUnavailableError(msg) from exc
    except asyncpg.PostgresError as exc:
        if exc.sqlstate != REFUSED_SQLSTATE:
            raise
        raise AppendRefusedError(str(exc.detail or "")) from exc
