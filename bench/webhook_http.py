"""Latency of webhook receivers over HTTP: ``POST /webhook/new``, receive, read back, delete.

    .venv/bin/python bench/webhook_http.py [--rounds 100] [--url http://127.0.0.1:8080]

Without ``--url`` it starts a throwaway stack (``.spinup/webhook-bench``, free ports) and stops it
afterwards. Requests are sequential over one keep-alive connection, so the numbers are latency,
not throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx

from devstack.stack import Stack

REPO_ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = b'{"type": "payment_intent.succeeded", "data": {"object": {"amount": 2000}}}'


def summary(label: str, samples_s: list[float]) -> str:
    """One line: how many samples, their median and p99 in milliseconds."""
    ms = sorted(sample * 1000 for sample in samples_s)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return f"{label:<28} n={len(ms):<5} median {statistics.median(ms):7.2f} ms  p99 {p99:7.2f} ms"


async def timed(call: Callable[[], Awaitable[httpx.Response]], expect: int) -> float:
    """Seconds one call took; a wrong status stops the benchmark."""
    began = time.perf_counter()
    response = await call()
    elapsed = time.perf_counter() - began
    if response.status_code != expect:
        msg = f"expected {expect}, got {response.status_code}: {response.text}"
        raise RuntimeError(msg)
    return elapsed


async def measure(url: str, rounds: int) -> None:
    """Run every measurement against the gateway at ``url`` and print the results."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        creates, receivers = [], []
        for _ in range(rounds):
            began = time.perf_counter()
            response = await http.post("/webhook/new")
            creates.append(time.perf_counter() - began)
            if response.status_code != 201:  # noqa: PLR2004
                raise RuntimeError(response.text)
            receivers.append(response.json())
        print(summary("POST /webhook/new", creates))  # noqa: T201

        target = receivers[0]["credentials"]["receive_url"]
        receives = [
            await timed(lambda: http.post(target, content=PAYLOAD), 200) for _ in range(rounds)
        ]
        print(summary("POST <receive_url> (~80 B)", receives))  # noqa: T201
        token = receivers[0]["token"]
        reads = [
            await timed(lambda: http.get(f"/webhook/{token}/requests"), 200) for _ in range(rounds)
        ]
        print(summary(f"GET requests ({rounds} stored)", reads))  # noqa: T201
        deletes = [
            await timed(lambda r=r: http.delete(f"/resources/{r['token']}"), 200) for r in receivers
        ]
        print(summary("DELETE /resources/{token}", deletes))  # noqa: T201


@contextlib.contextmanager
def gateway_url(url: str | None) -> Iterator[str]:
    """The given gateway, or a throwaway stack's."""
    if url:
        yield url
        return
    with Stack.for_tests(REPO_ROOT, name="webhook-bench") as stack:
        yield stack.gateway_url


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--url", help="a running gateway (default: start a throwaway stack)")
    args = parser.parse_args()
    with gateway_url(args.url) as url:
        asyncio.run(measure(url, args.rounds))


if __name__ == "__main__":
    main()
