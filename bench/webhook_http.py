"""Latency of webhook receivers over HTTP: ``POST /webhook/new``, receive, read back, delete.

    .venv/bin/python bench/webhook_http.py [--rounds 100] [--url http://127.0.0.1:8080]

Without ``--url`` it starts a throwaway stack (``.spinup/webhook-bench``, free ports) and stops it
afterwards. Requests are sequential over one keep-alive connection, so the numbers are latency,
not throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from functools import partial
from pathlib import Path

import httpx

from bench.measure import gateway_url, summary, timed_http

REPO_ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = b'{"type": "payment_intent.succeeded", "data": {"object": {"amount": 2000}}}'


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
            await timed_http(lambda: http.post(target, content=PAYLOAD), 200) for _ in range(rounds)
        ]
        print(summary("POST <receive_url> (~80 B)", receives))  # noqa: T201
        token = receivers[0]["token"]
        reads = [
            await timed_http(lambda: http.get(f"/webhook/{token}/requests"), 200)
            for _ in range(rounds)
        ]
        print(summary(f"GET requests ({rounds} stored)", reads))  # noqa: T201
        deletes = [
            await timed_http(partial(http.delete, f"/resources/{r['token']}"), 200)
            for r in receivers
        ]
        print(summary("DELETE /resources/{token}", deletes))  # noqa: T201


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--url", help="a running gateway (default: start a throwaway stack)")
    args = parser.parse_args()
    with gateway_url(args.url, stack_name="webhook-bench") as url:
        asyncio.run(measure(url, args.rounds))


if __name__ == "__main__":
    main()
