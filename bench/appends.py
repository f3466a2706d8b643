"""What one create's intent append costs the machine: the append alone, timed and its CPU counted.

    .venv/bin/python -m bench.appends [--calls 2000]

On one throwaway stack (``.spinup/appends``), this process appends the first event of fresh
resource streams (``ResourceProvisionRequested``, as a worker's intent) through the workers'
``EventStore`` (the ``resources`` row folded in the same statement), one at a time and 16 at once,
and reads the CPU the platform Postgres and this process spent per append. That is what the
intent append costs a create in the two places it is paid; the relay and the reaper add theirs
for one more event (ADR 0031 measured it; ``bench.ab``).
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path

import uvloop

from bench.__main__ import bench_stack
from bench.cpu import LOAD_GENERATOR
from bench.measure import measure
from shared.eventlog.projections import ResourceProjection
from shared.eventlog.store import EventStore
from shared.naming import resource_stream
from shared.plans import load_plans
from shared.postgres.pool import open_pool
from shared.testing.factories import provision_requested


async def _appends(env: dict[str, str], platform_pid: int, calls: int) -> list[str]:
    load_plans(Path(env["SPINUP_PLANS_FILE"]))  # the stack's plans load: it is configured
    pool = await open_pool(env["SPINUP_PLATFORM_DSN"], size=16)
    store = EventStore(pool, [ResourceProjection()])
    lines = []
    try:

        async def intent(_: int) -> None:
            resource_id = uuid.uuid4()
            await store.append(
                resource_stream(resource_id),
                0,
                [provision_requested(resource_id)],
                command_id=uuid.uuid4(),
                correlation_id="bench-appends",
            )

        for level, count in ((1, max(calls // 4, 50)), (16, calls)):
            measured = await measure(
                "intent append",
                intent,
                calls=count,
                concurrency=level,
                processes={"platform-pg": platform_pid},
            )
            cpu = measured.cpu_ms_by_process
            lines.append(
                f"intent append c={level}: p50 {measured.ms(0.5):.2f} ms,"
                f" {measured.per_second:.0f}/s, platform Postgres"
                f" {cpu.get('platform-pg', 0):.3f} ms + the appender"
                f" {cpu.get(LOAD_GENERATOR, 0):.3f} ms of CPU per append"
            )
    finally:
        await pool.close()
    return lines


def main() -> None:
    """Start a throwaway stack, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="appends at c=16")
    args = parser.parse_args()
    with bench_stack(durable=False, name="appends") as stack:
        platform = stack.servers["platform-pg"].pid
        if platform is None:  # pragma: no cover
            msg = "the stack's platform Postgres has no pid"
            raise RuntimeError(msg)
        lines = uvloop.run(_appends(stack.env(), platform, args.calls))
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
