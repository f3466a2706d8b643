"""Which database failures become a 503 (``platform_unavailable``) instead of a 500."""

from __future__ import annotations

import asyncpg
import pytest

from shared.contracts.errors import PlatformUnavailableError
from shared.eventlog.errors import platform_errors


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "refused"),
        asyncpg.CannotConnectNowError("the database system is shutting down"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        # Left by a connection the server closed mid-query during a shutdown.
        asyncpg.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        ),
    ],
    ids=type,
)
async def test_an_unreachable_platform_database_is_a_platform_unavailable_error(
    error: BaseException,
) -> None:
    with pytest.raises(PlatformUnavailableError):
        async with platform_errors():
            raise error


async def test_other_database_errors_are_not_hidden_as_unavailable() -> None:
    with pytest.raises(asyncpg.UniqueViolationError):
        async with platform_errors():
            raise asyncpg.UniqueViolationError("duplicate key")
