"""What every benchmark script shares: timing a call, printing medians, finding a gateway."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx

from devstack.stack import Stack

REPO_ROOT = Path(__file__).resolve().parents[1]


def summary(label: str, samples_s: list[float], *, width: int = 40, digits: int = 2) -> str:
    """One line: how many samples, their median and p99 in milliseconds."""
    ms = sorted(sample * 1000 for sample in samples_s)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    median = statistics.median(ms)
    return (
        f"{label:<{width}} n={len(ms):<5} median {median:7.{digits}f} ms  p99 {p99:7.{digits}f} ms"
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
