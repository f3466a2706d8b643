"""What metrics (and tracing, off) cost each call, against the CPU each bench row's call costs.

    .venv/bin/python -m bench.metrics_cost [--results bench/results/results.json]

An A/B of two whole bench runs cannot see a 3 % change on the shared 2-core VM (the same code
moves 30-40 % between runs, README.md). The CPU the metric updates add to one call can be
measured precisely instead: the exact updates a request makes (``http``: the middleware's; a
command adds the bus's on the gateway and, on the worker, the handler's span and two appends'
histogram), each timed in CPU time, best of several rounds, in a process of its own in each
mode (one process, and the gateway's multiprocess files). Divided by the CPU per call of each
row of a bench run (``cpu_ms_per_call``: every process of the path, the load generator
included), it bounds how much that row's CPU-bound rate (``cores / CPU per call``) drops.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

#: Updates timed per round, and rounds (the best is kept: the machine is shared).
_CALLS = 20_000
_ROUNDS = 7
#: The issue's budget: no rate may drop more than this with metrics on.
BUDGET = 0.03
_RESULTS = Path(__file__).resolve().parent / "results" / "results.json"


def _best_cpu_us(work: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(_ROUNDS):
        began = time.process_time()
        for _ in range(_CALLS):
            work()
        best = min(best, (time.process_time() - began) / _CALLS * 1e6)
    return best


def measure_here() -> dict[str, float]:
    """CPU microseconds per call of each group of updates, in this process's mode."""
    # Imported here: the multiprocess mode is chosen by the environment at import.
    from shared.observability import metrics, tracing  # noqa: PLC0415

    def http() -> None:
        series = metrics.http_series("/resources/{token:str}", "GET", 200)
        series.requests.inc()
        series.duration.observe(0.01)
        with tracing.span("HTTP GET"):
            pass

    def command() -> None:
        in_flight, duration = metrics.nats_series("prov.v1.redis.provision")
        in_flight.inc()
        with tracing.span("nats request"):
            tracing.inject()
        in_flight.dec()
        duration.observe(0.01)
        metrics.record_command("prov.v1.redis.provision", None)

    def worker() -> None:
        tracing.extract(None)
        with tracing.span("nats handle"):
            pass
        metrics.EVENTLOG_APPEND_DURATION.observe(0.001)
        metrics.EVENTLOG_APPEND_DURATION.observe(0.001)

    def capture() -> None:
        metrics.WEBHOOK_CAPTURES.inc()

    return {
        "http": _best_cpu_us(http),
        "command": _best_cpu_us(command),
        "worker": _best_cpu_us(worker),
        "capture": _best_cpu_us(capture),
    }


def _measure_in(env: dict[str, str]) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.metrics_cost", "--measure-here"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    measured: dict[str, float] = json.loads(output)
    return measured


def cost_of_row(row: dict[str, object], costs: dict[str, float]) -> float | None:
    """CPU microseconds the metrics add to one call of ``row`` (None: not through the gateway)."""
    group, name = str(row["group"]), str(row["name"])
    if group in {"floor", "read"} and name.startswith("GET"):
        return costs["http"]
    if group == "webhook capture":
        return costs["http"] + costs["capture"]
    if group.startswith(("end to end", "profile")):
        return costs["http"] + costs["command"] + costs["worker"]
    return None


def report(results: Path) -> list[str]:
    """Lines of the report: each mode's costs, then each row's bound, against the budget."""
    base = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    single = _measure_in(base)
    with tempfile.TemporaryDirectory(prefix="metrics-cost-") as directory:
        shared = _measure_in({**base, "PROMETHEUS_MULTIPROC_DIR": directory})
    lines = [
        "CPU us per call of the metric updates (tracing off):",
        *(
            f"  {group:<8} one process {single[group]:6.2f}   multiprocess {shared[group]:6.2f}"
            for group in single
        ),
        f"Against {results} (CPU ms per call of each row; multiprocess costs, the worse):",
    ]
    rows = json.loads(results.read_text())["rows"]
    worst = 0.0
    for row in rows:
        cost = cost_of_row(row, shared)
        cpu_ms = row.get("cpu_ms_per_call")
        if cost is None or not isinstance(cpu_ms, int | float) or cpu_ms <= 0:
            continue
        share = cost / 1000 / cpu_ms
        worst = max(worst, share)
        lines.append(
            f"  {row['name']:<40} c={row['concurrency']:<3} {cpu_ms:9.3f} ms/call"
            f"  rate drop <= {share:6.2%}"
        )
    verdict = "within" if worst <= BUDGET else "OVER"
    lines.append(f"Worst: {worst:.2%}, {verdict} the {BUDGET:.0%} budget.")
    return lines


def main() -> None:
    """Measure and print (or, with --measure-here, print this process's costs as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=_RESULTS)
    parser.add_argument("--measure-here", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_here:
        sys.stdout.write(json.dumps(measure_here()))
        return
    sys.stdout.write("\n".join(report(args.results)) + "\n")


if __name__ == "__main__":
    main()
