"""``shared.pgpool``: a release ends a transaction left open, and sends nothing else.

asyncpg's default release resets the session in a round trip of its own; Spinup's pools skip it
because none of its code keeps session state on a pooled connection (the module says why). So a
session setting outlives a release, and a transaction left open does not.
"""

from __future__ import annotations

from shared.pgpool import open_pool


async def test_a_release_rolls_back_what_was_left_open_and_keeps_the_session(
    env: dict[str, str],
) -> None:
    pool = await open_pool(env["SPINUP_PLATFORM_DSN"], size=1)
    try:
        async with pool.acquire() as conn:
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("SET application_name = 'pool-release-test'")
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE left_open (x int)")
            assert conn.is_in_transaction()

        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == backend
            assert not conn.is_in_transaction()
            # Rolled back: the table made inside the open transaction is gone.
            assert await conn.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
            # Not reset: no RESET ALL ran on release.
            assert await conn.fetchval("SHOW application_name") == "pool-release-test"
    finally:
        await pool.close()
