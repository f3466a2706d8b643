"""Where the time of one ``POST /cache/new`` goes: each layer of the path timed on its own.

    .venv/bin/python -m bench.breakdown [--calls 200]

On one throwaway stack (``.spinup/breakdown``, configured as ``make bench``'s: the usage sweep at
its production interval), one call at a time, from the
inside out: the Redis driver's ``create`` (the backend floor), the worker's whole ``provision``
run in this process (two event-log appends around the driver), the same command sent over NATS
to the running redis-provisioner, and the HTTP call through the gateway, beside
``GET /healthz``. Each line's median minus the one before it is what that layer adds. Every
create is a real resource in the log (the driver's own are deleted again): nothing is appended
that the platform would not append itself.

Then where the CPU goes: the same ``POST /cache/new`` one at a time, with the CPU time every
process of the stack (with its children: Postgres backends) spent meanwhile, per create. The
machine's cores over their sum is the rate at that cost; under load some of it is shared
(flushes, batches, group commits), so the stack does somewhat better at c = 64.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import httpx
import uvloop

from bench.__main__ import bench_stack
from bench.drivers import connected
from bench.measure import summary
from redis_provisioner.driver import RedisDriver
from shared.bus import Bus
from shared.contracts.commands import ProvisionResource
from shared.contracts.kinds import RedisLimits, ResourceKind
from shared.contracts.subjects import ENDPOINTS
from shared.crypto.sealing import Keyring
from shared.eventlog.connection import create_platform_pool
from shared.eventlog.projections import ResourceProjection, ResourceReadModel
from shared.eventlog.store import EventStore
from shared.lifecycle import ResourceLifecycle
from shared.plans import load_plans


async def _timed(calls: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    samples = []
    for _ in range(calls):
        began = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - began)
    return samples


async def breakdown(url: str, env: dict[str, str], calls: int) -> list[str]:
    """One summary line per layer, inside out."""
    plans = load_plans(Path(env["SPINUP_PLANS_FILE"]))
    tier_name = plans.anonymous_tier
    limits = plans.tiers[tier_name].limits(ResourceKind.REDIS)
    if not isinstance(limits, RedisLimits):  # pragma: no cover
        msg = "the plans gave a Redis resource limits of another kind"
        raise TypeError(msg)
    keyring = Keyring.from_setting(env["SPINUP_SEAL_KEYS"])

    def command() -> ProvisionResource:
        return ProvisionResource(
            command_id=uuid.uuid4(),
            correlation_id="bench-breakdown",
            deadline=time.time() + 10,
            resource_id=uuid.uuid4(),
            kind=ResourceKind.REDIS,
            tier=tier_name,
            limits=limits,
            token_hash=uuid.uuid4().hex,
            fingerprint="bench-breakdown",
        )

    lines = []
    platform = await create_platform_pool(env["SPINUP_PLATFORM_DSN"], min_size=1, max_size=8)
    bus = await Bus.connect(env["SPINUP_NATS_URL"], name="bench-breakdown")
    try:
        store = EventStore(platform, keyring, [ResourceProjection()])
        async with connected(ResourceKind.REDIS, env) as driver:
            if not isinstance(driver, RedisDriver):  # pragma: no cover
                msg = "bench.drivers connected Redis with another driver"
                raise TypeError(msg)
            lifecycle = ResourceLifecycle(
                store,
                keyring,
                driver,
                resources=ResourceReadModel(platform),
                create_concurrency=8,
                delete_concurrency=4,
            )
            made: list[uuid.UUID] = []

            async def raw_create() -> None:
                made.append(uuid.uuid4())
                await driver.create(made[-1], limits)

            lines.append(summary("redis driver create", await _timed(calls, raw_create)))
            for tenant in made:  # the log knows nothing of these: leave no orphan behind
                await driver.delete(tenant)
            lines.append(
                summary(
                    "provision in-process (2 appends + driver)",
                    await _timed(calls, lambda: lifecycle.provision(command())),
                )
            )
        endpoint = ENDPOINTS[ResourceKind.REDIS].provision
        lines.append(
            summary(
                "+ NATS to redis-provisioner",
                await _timed(calls, lambda: bus.request(endpoint, command())),
            )
        )
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            lines.append(summary("GET /healthz", await _timed(calls, lambda: http.get("/healthz"))))
            lines.append(
                summary(
                    "+ HTTP, admission: POST /cache/new",
                    await _timed(calls, lambda: http.post("/cache/new")),
                )
            )
    finally:
        await bus.close()
        await platform.close()
    return lines


def _cpu_seconds_by_tree(roots: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each root process and its descendants have used so far.

    Descendants that ended count through their parent's ``cutime``/``cstime`` once reaped.
    """
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = sum(int(f) for f in fields[11:15]) / tick
    totals = {}
    for name, root in roots.items():
        tree, frontier = {root}, [root]
        while frontier:
            parent = frontier.pop()
            children = [pid for pid, ppid in parents.items() if ppid == parent]
            tree.update(children)
            frontier.extend(children)
        totals[name] = sum(used.get(pid, 0.0) for pid in tree)
    return totals


async def cpu_per_create(url: str, processes: Mapping[str, int], calls: int) -> list[str]:
    """CPU milliseconds each process spent per ``POST /cache/new``, made one at a time."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        before = _cpu_seconds_by_tree(processes)
        for _ in range(calls):
            (await http.post("/cache/new")).raise_for_status()
        after = _cpu_seconds_by_tree(processes)
    spent = {name: (after[name] - before[name]) * 1000 / calls for name in processes}
    total = sum(spent.values())
    cores = os.cpu_count() or 1
    lines = [
        f"  {name:<24} {ms:6.2f} ms"
        for name, ms in sorted(spent.items(), key=lambda item: -item[1])
        if ms >= 0.05  # noqa: PLR2004  (below a twentieth of a millisecond: idle)
    ]
    lines.append(f"  {'all of the stack':<24} {total:6.2f} ms")
    rate = cores * 1000 / total if total else float("inf")
    lines.append(f"  at this cost {cores} cores make {rate:.0f} creates/s (load shares some of it)")
    return [f"CPU per POST /cache/new (n={calls}, one at a time):", *lines]


def main() -> None:
    """Start a throwaway stack, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per layer")
    args = parser.parse_args()
    with bench_stack(durable=False, name="breakdown") as stack:
        processes = {
            name: process.pid
            for name, process in {**stack.servers, **stack.services}.items()
            if process.pid is not None
        }
        lines = uvloop.run(breakdown(stack.gateway_url, stack.env(), args.calls))
        lines += uvloop.run(cpu_per_create(stack.gateway_url, processes, args.calls))
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
