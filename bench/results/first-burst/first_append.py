"""A connection's first append, rehearsed at start or not (2026-12-06, 18:57-19:10 UTC).

    SPINUP_TEST_STACK's stack "s1" (started if it is not running):
    .venv/bin/python bench/results/first-burst/first_append.py

Each round opens a pool of 8 platform connections, warms them (``WARM_CONNECTION``), rehearses
the appends (``rehearse_resource_appends``) or not, then times 8 keyed-caps appends at once (each
connection's first), 8 more, and 5 x 8 after; p50 of each. Eight rounds, the arms interleaved.
"""
import asyncio, sys, time, uuid, statistics
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from devstack.stack import Stack
from shared.contracts.kinds import Caps
from shared.eventlog.projections import ResourceProjection, caps_precondition, rehearse_resource_appends
from shared.eventlog.schema import WARM_CONNECTION
from shared.eventlog.store import EventStore
from shared.naming import resource_stream
from shared.pgpool import open_pool, warm_pool
from shared.testing.factories import provision_command, provision_requested

async def one_round(dsn, prepared):
    pool = await open_pool(dsn, size=8)
    try:
        await warm_pool(pool, WARM_CONNECTION)
        store = EventStore(pool, [ResourceProjection()])
        if prepared:
            await rehearse_resource_appends(store)
        times = []
        # one append per connection, 8 at once (a burst), then 8 more
        async def append():
            command = provision_command(new_ids=True, fingerprint=f"fa-{uuid.uuid4().hex}", caps=Caps(active_per_kind=5, provisions_per_day=50))
            rid = command.resource_id
            t = time.perf_counter()
            await store.append(resource_stream(rid), 0, [provision_requested(rid)], command_id=command.command_id,
                               correlation_id="fa", precondition=caps_precondition(command, command.caps))
            return (time.perf_counter() - t) * 1000
        first = await asyncio.gather(*(append() for _ in range(8)))
        second = await asyncio.gather(*(append() for _ in range(8)))
        later = []
        for _ in range(5):
            later += await asyncio.gather(*(append() for _ in range(8)))
        return statistics.median(first), statistics.median(second), statistics.median(later)
    finally:
        await pool.close()

async def main():
    with Stack.for_tests(Path(__file__).resolve().parents[3], name="s1") as stack:
        dsn = stack.env()["SPINUP_PLATFORM_DSN"]
        res = {True: [], False: []}
        for r in range(8):
            for prepared in ((True, False) if r % 2 == 0 else (False, True)):
                got = await one_round(dsn, prepared)
                res[prepared].append(got)
                print(r, "rehearsed" if prepared else "cold", [round(x, 2) for x in got], flush=True)
        for k, rows in res.items():
            print("rehearsed" if k else "cold", "medians first/second/later:", [round(statistics.median(r[i] for r in rows), 2) for i in range(3)])
asyncio.run(main())
