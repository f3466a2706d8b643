"""Event log administration: ``python -m shared.eventlog migrate|rebuild``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from shared.config import Env
from shared.eventlog.projections import rebuild_resources
from shared.eventlog.schema import migrate
from shared.postgres.pool import open_pool


async def _main(action: str) -> int:
    dsn = Env(os.environ).string("SPINUP_PLATFORM_DSN")
    pool = await open_pool(dsn, size=2)
    try:
        await migrate(pool)
        if action == "rebuild":
            written = await rebuild_resources(pool)
            sys.stdout.write(f"rebuilt resources projection: {written} rows\n")
    finally:
        await pool.close()
    return 0


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m shared.eventlog")
    parser.add_argument("action", choices=["migrate", "rebuild"])
    return asyncio.run(_main(parser.parse_args().action))


if __name__ == "__main__":
    raise SystemExit(main())
