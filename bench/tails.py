"""The two rows of ``make bench`` that swing from run to run, measured several times over.

    .venv/bin/python -m bench.tails [--runs 3] [--json PATH]

Cold ``POST /db/new`` against the raw ``CREATE ROLE`` + ``CREATE DATABASE`` (target: p50 at most
1.15x), and ``POST /db/new``'s p99 while the reaper deletes 1,000 expired databases against its
idle p99 (target: at most 2x), each measured by the harness's own code, ``runs`` times in a row on
one stack (``.spinup/tails``, configured as ``make bench``'s). Between two full runs of the same
code both ratios moved 2-3x (bench/README.md), so one run cannot say whether a target is met:
this prints every run's ratios, then their median and range.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import uvloop

from bench.__main__ import bench_stack
from bench.harness import FULL, Bench, Progress, Sizes, Target
from shared.contracts.kinds import ResourceKind

#: ``make bench``'s sizes at c = 1 and 16 (c = 64 adds minutes and no second opinion).
TAILS = dataclasses.replace(FULL, levels=(1, 16), calls={1: 50, 16: 200})


async def one_run(target: Target, sizes: Sizes, progress: Progress) -> dict[str, Any]:
    """The raw Postgres floor, the cold ``POST /db/new`` and the reaper's effect, once."""
    stack = target.stack
    if stack is None:  # pragma: no cover  (main starts one)
        msg = "bench.tails restarts pg-provisioner and starts a short-TTL gateway: it needs a stack"
        raise RuntimeError(msg)
    bench = Bench(target, sizes, progress, "tails")
    await bench.wait_for_drops()  # the run before left deletes to the drop queue
    await bench.raw(ResourceKind.POSTGRES)
    await bench.cold_db_new(stack)
    await bench.reaper_effect()
    rows = [row.as_dict() for row in bench.results.rows]
    cold = {
        row["concurrency"]: row["p50_ratio"] for row in rows if row["group"] == "end to end (cold)"
    }
    reaper = bench.results.reaper
    return {
        "cold_p50_ratio": cold,
        "reaper_p99_ratio": reaper.get("p99_ratio"),
        "reaper_idle_p50_ms": reaper.get("idle_p50_ms"),
        "reaper_busy_p50_ms": reaper.get("busy_p50_ms"),
        "reaper_idle_p99_ms": reaper.get("idle_p99_ms"),
        "reaper_busy_p99_ms": reaper.get("busy_p99_ms"),
        "reaper_deleted": reaper.get("deleted"),
        "reaper_idle_cold": reaper.get("idle_cold"),
        "reaper_busy_cold": reaper.get("busy_cold"),
        "reaper_busy_over_target": reaper.get("busy_over_target"),
        "reaper_busy_over_target_cold": reaper.get("busy_over_target_cold"),
        "notes": bench.results.notes,
        "rows": rows,
    }


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"median {statistics.median(values):.2f}x (range {min(values):.2f}-{max(values):.2f}x)"


def report(runs: list[dict[str, Any]], sizes: Sizes) -> list[str]:
    """One line per run, then each ratio's median and range."""
    lines = []
    for number, run in enumerate(runs, start=1):
        cold = ", ".join(f"c={level} {ratio}x" for level, ratio in run["cold_p50_ratio"].items())
        lines.append(
            f"run {number}: cold /db/new p50 / raw: {cold}; reaper p99 busy / idle:"
            f" {run['reaper_p99_ratio']}x ({run['reaper_busy_p99_ms']} /"
            f" {run['reaper_idle_p99_ms']} ms; p50 {run['reaper_busy_p50_ms']} /"
            f" {run['reaper_idle_p50_ms']} ms; {run['reaper_deleted']} deleted; cold creates"
            f" {run['reaper_idle_cold']} idle, {run['reaper_busy_cold']} busy, of them"
            f" {run['reaper_busy_over_target_cold']} of the {run['reaper_busy_over_target']}"
            " busy probes over 2x the idle p99)"
        )
    for level in sizes.levels:
        ratios = [r["cold_p50_ratio"][level] for r in runs if r["cold_p50_ratio"].get(level)]
        lines.append(f"cold /db/new c={level}, p50 / raw (target <= 1.15x): {_spread(ratios)}")
    reaper = [r["reaper_p99_ratio"] for r in runs if r["reaper_p99_ratio"] is not None]
    lines.append(f"reaper, /db/new p99 busy / idle (target <= 2x): {_spread(reaper)}")
    return lines


def main() -> None:
    """Start a stack of its own, run, print (and write the JSON when asked)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="how many times to measure both")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    args = parser.parse_args()
    with bench_stack(durable=False, name="tails") as stack:
        target = Target(gateway_url=stack.gateway_url, env=stack.env(), stack=stack, clean_up=False)
        progress = Progress()
        results: list[dict[str, Any]] = []

        async def run_all() -> None:
            for _ in range(args.runs):
                # One at a time, kept as they end: a failed run still reports the ones before.
                results.append(await one_run(target, TAILS, progress))  # noqa: PERF401

        try:
            uvloop.run(run_all())
        finally:
            if args.json:
                args.json.write_text(json.dumps(results, indent=2, default=str))
            print("\n".join(report(results, TAILS)))  # noqa: T201


if __name__ == "__main__":
    main()
