"""The asyncpg exceptions that mean "the server cannot be reached now", for every Postgres we use.

The platform's event log and the tenant drivers both translate these into their own
unavailable-errors (503) and may retry once on a fresh connection.
"""

from __future__ import annotations

import asyncpg

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    # A connection the server closed in the middle of a query (a shutdown) can leave asyncpg's
    # protocol half-way and fail the next use with this ("cannot switch to state ..."): seen as
    # a 500 when the platform Postgres was stopped under load (tests/e2e/test_crashes_and_outages).
    asyncpg.InternalClientError,
)
