"""Soak: a bounded mixed workload against a throwaway stack, watched over time.

    make soak                                   # SOAK_SECONDS (default 300)
    .venv/bin/python -m bench.soak --seconds 60 --concurrency 6 --window 30

Clients create every kind, read, delete, and send and read webhook traffic, for the duration.
Every window it prints the request count, error rate (5xx or an unexpected status) and latency
percentiles, and the resident memory (``/proc/<pid>/status`` VmRSS) of the gateway and of each
worker. At the end it waits for the reaper and compares each backend with the event log
(``bench.inventory``): the run fails (exit 1) on any server error, any orphan or anything
missing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from bench.inventory import settled_agreement
from devstack.stack import Stack

REPO_ROOT = Path(__file__).resolve().parents[1]
CREATE_PATHS = ["db", "cache", "nosql", "queue", "storage", "webhook"]
#: Resources each client holds at most; past it, it deletes one before creating.
HELD_PER_CLIENT = 6
#: Operations and their weights: mostly reads and webhook traffic, as real use would be.
OPERATIONS = {"create": 3, "read": 4, "delete": 2, "webhook_send": 4, "webhook_read": 2}


@dataclass(slots=True)
class Sample:
    """One request: when it ended (monotonic), which operation, its status and latency."""

    at: float
    operation: str
    status: int
    latency_s: float


@dataclass(slots=True)
class Recorder:
    """Every sample of the run, and the memory readings."""

    samples: list[Sample] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def add(self, operation: str, response: httpx.Response, began: float, expect: set[int]) -> None:
        """Record one answer; a status outside ``expect`` counts as an error."""
        now = time.monotonic()
        self.samples.append(Sample(now, operation, response.status_code, now - began))
        if response.status_code not in expect:
            self.unexpected.append(f"{operation} {response.status_code} {response.text[:200]}")


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process in MiB, from /proc (None if it is gone)."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def client_loop(
    http: httpx.AsyncClient, recorder: Recorder, until: float, rng: random.Random
) -> list[dict[str, object]]:
    """One client's mixed workload until ``until``; returns what it still holds."""
    held: list[dict[str, object]] = []
    operations, weights = list(OPERATIONS), list(OPERATIONS.values())
    while time.monotonic() < until:
        operation = rng.choices(operations, weights)[0]
        webhooks = [item for item in held if item["kind"] == "webhook"]
        if operation == "create" or not held:
            if len(held) >= HELD_PER_CLIENT:
                operation = "delete"
            else:
                path = rng.choice(CREATE_PATHS)
                began = time.monotonic()
                response = await http.post(f"/{path}/new")
                recorder.add(f"create {path}", response, began, {201})
                if response.status_code == 201:  # noqa: PLR2004
                    held.append(response.json())
                continue
        if operation.startswith("webhook") and not webhooks:
            operation = "read"
        began = time.monotonic()
        if operation == "read":
            target = rng.choice(held)
            response = await http.get(f"/resources/{target['token']}")
            recorder.add(operation, response, began, {200})
        elif operation == "delete":
            target = held.pop(rng.randrange(len(held)))
            response = await http.delete(f"/resources/{target['token']}")
            recorder.add(operation, response, began, {200})
        elif operation == "webhook_send":
            target = rng.choice(webhooks)
            receive_url = str(target["credentials"]["receive_url"])  # type: ignore[index]
            response = await http.post(receive_url, json={"event": "soak", "n": rng.random()})
            recorder.add(operation, response, began, {200})
        else:
            target = rng.choice(webhooks)
            response = await http.get(f"/webhook/{target['token']}/requests")
            recorder.add(operation, response, began, {200})
    return held


def window_line(samples: list[Sample], start: float, end: float, memory: dict[str, float]) -> str:
    """One report line for the samples that ended in [start, end)."""
    inside = [sample for sample in samples if start <= sample.at < end]
    if not inside:
        return f"{start:6.0f}-{end:4.0f} s  no requests"
    errors = sum(1 for sample in inside if sample.status >= 500)  # noqa: PLR2004
    ms = [sample.latency_s * 1000 for sample in inside]
    mem = "  ".join(f"{name} {value:.1f}" for name, value in memory.items())
    return (
        f"{start:6.0f}-{end:4.0f} s  n={len(inside):<5} 5xx {errors / len(inside):6.2%}"
        f"  p50 {statistics.median(ms):6.1f}  p95 {percentile(ms, 0.95):6.1f}"
        f"  p99 {percentile(ms, 0.99):7.1f} ms  RSS MiB: {mem}"
    )


async def soak(stack: Stack, seconds: float, concurrency: int, window: float, seed: int) -> int:
    """Run the workload, print a line per window, compare backends with the log; exit status."""
    processes = {name: service for name, service in stack.services.items() if name != "reaper"}
    recorder = Recorder()
    began = time.monotonic()
    until = began + seconds
    rng = random.Random(seed)  # noqa: S311  (a repeatable workload, not a secret)
    memory_over_time: list[dict[str, float]] = []
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as http:
        clients = [
            asyncio.create_task(client_loop(http, recorder, until, random.Random(rng.random())))  # noqa: S311
            for _ in range(concurrency)
        ]
        print(f"soak: {seconds:g} s, {concurrency} clients, windows of {window:g} s")  # noqa: T201
        edge = began
        while edge < until:
            await asyncio.sleep(min(window, until - edge))
            memory = {
                name: value
                for name, service in processes.items()
                if (value := rss_mb(service.pid)) is not None
            }
            memory_over_time.append(memory)
            shifted = [
                Sample(s.at - began, s.operation, s.status, s.latency_s) for s in recorder.samples
            ]
            print(window_line(shifted, edge - began, edge - began + window, memory))  # noqa: T201
            edge += window
        await asyncio.gather(*clients)

    total = len(recorder.samples)
    server_errors = sum(1 for sample in recorder.samples if sample.status >= 500)  # noqa: PLR2004
    ms = [sample.latency_s * 1000 for sample in recorder.samples]
    print(  # noqa: T201
        f"total: {total} requests, {server_errors} 5xx, {len(recorder.unexpected)} unexpected;"
        f" p50 {statistics.median(ms):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms"
    )
    by_operation: dict[str, list[float]] = {}
    for sample in recorder.samples:
        by_operation.setdefault(sample.operation, []).append(sample.latency_s * 1000)
    for operation, values in sorted(by_operation.items()):
        print(  # noqa: T201
            f"  {operation:<16} n={len(values):<5} p50 {statistics.median(values):7.1f}"
            f"  p99 {percentile(values, 0.99):7.1f} ms"
        )
    if len(memory_over_time) >= 2:  # noqa: PLR2004
        first, last = memory_over_time[0], memory_over_time[-1]
        growth = "  ".join(
            f"{name} {first[name]:.1f}->{last[name]:.1f}" for name in last if name in first
        )
        print(f"RSS MiB first window -> last: {growth}")  # noqa: T201
    for line in recorder.unexpected[:10]:
        print(f"  unexpected: {line}")  # noqa: T201

    env = stack.env()
    pool = await asyncpg.create_pool(env["SPINUP_PLATFORM_DSN"], min_size=1, max_size=2)
    try:
        agreements = await settled_agreement(env, pool, within=90)
    finally:
        await pool.close()
    for agreement in agreements:
        print(f"backend vs log: {agreement}")  # noqa: T201
    exact = all(agreement.exact for agreement in agreements)
    return 0 if exact and not server_errors and not recorder.unexpected else 1


def main() -> int:
    """Parse the arguments, start a throwaway stack, soak it, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "300"))
    )
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    with Stack.for_tests(REPO_ROOT, name="soak") as stack:
        return asyncio.run(soak(stack, args.seconds, args.concurrency, args.window, args.seed))


if __name__ == "__main__":
    raise SystemExit(main())
