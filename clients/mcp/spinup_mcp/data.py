"""SQL on a Spinup Postgres database, for an agent whose host runs no psql (docs/adr/0034).

It connects with the database's own credentials, as any client of the tenant would: the server's
limits (statement timeout, connections, quota, read-only when over it) apply unchanged, and the
platform is never asked to run anything on the tenant's behalf.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import asyncpg

#: Rows a result returns at most, and by default.
MAX_ROWS: Final = 1000
DEFAULT_ROWS: Final = 100
#: Connecting, and each statement, give up after this long (the server's own timeout may be less).
TIMEOUT_S: Final = 30.0
_SCRIPT = "cannot insert multiple commands into a prepared statement"


def plain(value: Any) -> Any:  # noqa: ANN401  (whatever asyncpg decoded)
    """A column value as JSON can carry it.

    Numbers, text, booleans and null as they are; ``bytea`` as hex after a backslash-x (as psql
    shows it); arrays and JSON as lists and objects of the same; anything else (numeric, times,
    UUIDs, intervals, ranges) as its text.
    """
    shown: Any
    if value is None or isinstance(value, bool | int | float | str):
        shown = value
    elif isinstance(value, bytes | bytearray | memoryview):
        shown = "\\x" + bytes(value).hex()
    elif isinstance(value, dt.date | dt.time):
        shown = value.isoformat()
    elif isinstance(value, list | tuple):
        shown = [plain(item) for item in value]
    elif isinstance(value, dict):
        shown = {str(key): plain(item) for key, item in value.items()}
    else:
        shown = str(value)
    return shown


async def run_sql(connection_url: str, sql: str, *, max_rows: int) -> dict[str, Any]:
    """Run ``sql``; one statement answers its rows (up to ``max_rows``), a script its last status.

    Raises:
        asyncpg.PostgresError: the server refused it (the message, detail, hint and position
            say why).
        OSError, TimeoutError, asyncpg.InterfaceError: the database could not be reached.
    """
    conn = await asyncpg.connect(connection_url, timeout=TIMEOUT_S)
    try:
        try:
            statement = await conn.prepare(sql, timeout=TIMEOUT_S)
        except asyncpg.PostgresSyntaxError as exc:
            if _SCRIPT not in str(exc):
                raise
            # Several statements: the simple protocol runs them in one go, rows not returned.
            status = await conn.execute(sql, timeout=TIMEOUT_S)
            return {"status": status, "columns": [], "rows": [], "row_count": 0, "truncated": False}
        records = await statement.fetch(timeout=TIMEOUT_S)
        columns = [attribute.name for attribute in statement.get_attributes()]
        return {
            "status": statement.get_statusmsg(),
            "columns": columns,
            "rows": [[plain(value) for value in record.values()] for record in records[:max_rows]],
            "row_count": len(records),
            "truncated": len(records) > max_rows,
        }
    finally:
        await conn.close()


def sql_error_body(exc: asyncpg.PostgresError) -> dict[str, Any]:
    """What the server said, as the tool's error: message, and detail, hint, position if any."""
    body: dict[str, Any] = {
        "ok": False,
        "error": "sql_error",
        "sqlstate": exc.sqlstate,
        "message": f"Postgres refused it: {exc}",
    }
    for field in ("detail", "hint", "position"):
        value = getattr(exc, field, None)
        if value:
            body[field] = value
    return body
