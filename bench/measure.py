"""What every benchmark shares: timing calls at a given concurrency, percentiles, a gateway."""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.cpu import CpuMeter, cpu_bound_per_s
from devstack.stack import Stack

REPO_ROOT = Path(__file__).resolve().parents[1]
#: How many error messages a measurement keeps (the count is always exact).
KEPT_ERRORS = 5


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(0, math.ceil(fraction * len(sorted_values)) - 1)
    return sorted_values[rank]


@dataclass(kw_only=True)
class Measurement:
    """The samples of one operation at one concurrency, and what they add up to.

    Attributes:
        name: what was measured, e.g. ``POST /db/new`` or ``postgres create (driver)``.
        concurrency: how many callers ran at once.
        latencies_s: seconds each successful call took.
        errors: how many calls failed (an exception or an unexpected answer).
        error_samples: the first few failures' messages.
        wall_s: seconds from the first call's start to the last call's end.
        cpu_ms_by_process: CPU milliseconds each process spent per call (``bench.cpu``); empty
            when the stack's processes are not known (a reused stack).
    """

    name: str
    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_ms_by_process: dict[str, float] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        """Every call made, failed ones included."""
        return len(self.latencies_s) + self.errors

    def ms(self, fraction: float) -> float:
        """The latency percentile ``fraction`` (0..1) in milliseconds."""
        return 1000 * percentile(sorted(self.latencies_s), fraction)

    @property
    def per_second(self) -> float:
        """Successful calls per second of wall time."""
        return len(self.latencies_s) / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_ms_per_call(self) -> float | None:
        """CPU milliseconds per call, every process of the stack and the load generator."""
        return round(sum(self.cpu_ms_by_process.values()), 3) if self.cpu_ms_by_process else None

    def figures(self) -> dict[str, float | int | None]:
        """The numbers a report shows: p50, p90, p99, max (ms), req/s, calls and errors.

        With the CPU counted, also the CPU per call and the rate it allows on this machine.
        """
        ordered = sorted(self.latencies_s)
        cpu = self.cpu_ms_per_call
        return {
            "calls": self.calls,
            "errors": self.errors,
            "p50_ms": round(1000 * percentile(ordered, 0.50), 3),
            "p90_ms": round(1000 * percentile(ordered, 0.90), 3),
            "p99_ms": round(1000 * percentile(ordered, 0.99), 3),
            "max_ms": round(1000 * ordered[-1], 3) if ordered else math.nan,
            "per_s": round(self.per_second, 1),
            "cpu_ms_per_call": cpu,
            "cpu_bound_per_s": cpu_bound_per_s(cpu) if cpu is not None else None,
        }

    def line(self, width: int = 44) -> str:
        """One line for a terminal: name, concurrency and the figures."""
        f = self.figures()
        cpu = f["cpu_ms_per_call"]
        return (
            f"{self.name:<{width}} c={self.concurrency:<3} n={f['calls']:<5} "
            f"p50 {f['p50_ms']:8.2f}  p90 {f['p90_ms']:8.2f}  p99 {f['p99_ms']:8.2f}  "
            f"max {f['max_ms']:8.2f} ms  {f['per_s']:8.1f}/s  errors {f['errors']}"
            + (f"  cpu {cpu:6.2f} ms/call" if cpu is not None else "")
        )


async def measure(
    name: str,
    call: Callable[[int], Awaitable[object]],
    *,
    calls: int,
    concurrency: int,
    max_seconds: float = math.inf,
    progress: Callable[[int], None] | None = None,
    processes: Mapping[str, int] | None = None,
) -> Measurement:
    """Make ``calls`` calls of ``call(i)``, ``concurrency`` at a time, timing each one.

    A call fails by raising; failures are counted, never retried. No new call starts after
    ``max_seconds`` (the ones running finish), so a slow backend bounds the run, not the count.
    ``progress`` is told how many calls have finished, now and then. With ``processes`` (name to
    pid), the CPU each of them and this process spent is counted too.
    """
    result = Measurement(name=name, concurrency=concurrency)
    meter = CpuMeter(processes) if processes else None
    if meter is not None:
        meter.start()
    next_index = 0
    began = time.perf_counter()
    deadline = began + max_seconds

    async def caller() -> None:
        nonlocal next_index
        while next_index < calls and time.perf_counter() < deadline:
            index = next_index
            next_index += 1
            started = time.perf_counter()
            try:
                await call(index)
            except Exception as exc:  # noqa: BLE001 (every failure is counted, whatever it is)
                result.errors += 1
                if len(result.error_samples) < KEPT_ERRORS:
                    result.error_samples.append(f"{type(exc).__name__}: {exc}"[:300])
            else:
                result.latencies_s.append(time.perf_counter() - started)
            if progress is not None and result.calls % 10 == 0:
                progress(result.calls)

    await asyncio.gather(*(caller() for _ in range(min(concurrency, calls))))
    result.wall_s = time.perf_counter() - began
    if meter is not None:
        result.cpu_ms_by_process = meter.per_call(result.calls)
    return result


def summary(label: str, samples_s: list[float], *, width: int = 40, digits: int = 2) -> str:
    """One line: how many samples, their median and p99 in milliseconds."""
    ms = sorted(sample * 1000 for sample in samples_s)
    median = statistics.median(ms)
    return (
        f"{label:<{width}} n={len(ms):<5} median {median:7.{digits}f} ms  "
        f"p99 {percentile(ms, 0.99):7.{digits}f} ms"
    )


async def timed_http(call: Callable[[], Awaitable[httpx.Response]], expect: int) -> float:
    """Seconds one HTTP call took; a status other than ``expect`` stops the benchmark."""
    began = time.perf_counter()
    response = await call()
    elapsed = time.perf_counter() - began
    if response.status_code != expect:
        msg = f"expected {expect}, got {response.status_code}: {response.text}"
        raise RuntimeError(msg)
    return elapsed


@contextlib.contextmanager
def gateway_url(url: str | None, *, stack_name: str) -> Iterator[str]:
    """The given gateway, or that of a throwaway stack (``.spinup/<stack_name>``, free ports)."""
    if url:
        yield url
        return
    with Stack.for_tests(REPO_ROOT, name=stack_name) as stack:
        yield stack.gateway_url
