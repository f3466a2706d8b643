"""What the rate limit adds to every provision: one Redis round trip, or nothing when Redis is down.

    .venv/bin/python bench/admission.py [--rounds 2000]

Starts its own platform-style ``redis-server`` (devstack config, ``.spinup/admission-bench``),
measures the gateway's rate-limit step (``gateway.admission.ratelimit.RateLimiter.spend``, the
sliding-log Lua script) sequentially and under concurrency, then stops Redis and measures the
fail-open path: the first request that finds Redis gone (it warns) and the ones after it (quiet).
The caps' Postgres count is not included: it is the read model's query, not admission's.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time
from pathlib import Path

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from bench.measure import summary
from devstack.procs import free_ports
from devstack.profile import Profile, Secrets
from devstack.servers import RedisServer
from gateway.admission.ratelimit import RateLimiter

REPO_ROOT = Path(__file__).resolve().parents[1]
PER_MINUTE = 10**9  # never refuse: the bench measures the admitted path


async def timed(limiter: RateLimiter, holder: str) -> float:
    """Seconds one rate-limit step took."""
    began = time.perf_counter()
    await limiter.spend(holder, PER_MINUTE)
    return time.perf_counter() - began


async def measure(url: str, server: RedisServer, rounds: int) -> None:
    """Every measurement against the server at ``url``; stops the server halfway."""
    # Configured as the gateway configures its client (gateway.main).
    redis = Redis.from_url(
        url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
    )
    limiter = RateLimiter(redis)
    try:
        await timed(limiter, "client:warm-up")  # loads the script, opens the connection
        one = [await timed(limiter, "client:one") for _ in range(rounds)]
        print(summary("one holder, sequential", one, digits=3))  # noqa: T201
        many = [await timed(limiter, f"client:{i}") for i in range(rounds)]
        print(summary("a new holder each time, sequential", many, digits=3))  # noqa: T201
        for at_once in (16, 64, 256):
            crowd: list[float] = []
            began = time.perf_counter()
            for _ in range(max(1, rounds // at_once)):  # at least one crowd, however few rounds
                crowd += await asyncio.gather(
                    *(timed(limiter, f"client:{i}") for i in range(at_once))
                )
            per_s = len(crowd) / (time.perf_counter() - began)
            print(f"{summary(f'{at_once} at once', crowd, digits=3)}  {per_s:6.0f}/s")  # noqa: T201

        server.stop()
        first = await timed(limiter, "client:one")
        print(f"{'Redis stopped: first request':<40} {1000 * first:.3f} ms (fails open, warns)")  # noqa: T201
        after = [await timed(limiter, "client:one") for _ in range(rounds)]
        print(summary("Redis stopped: the requests after", after, digits=3))  # noqa: T201
    finally:
        await redis.aclose()


def main() -> None:
    """Start a throwaway Redis, measure, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    profile = Profile.test(REPO_ROOT, name="admission-bench")
    shutil.rmtree(profile.directory, ignore_errors=True)
    for path in (profile.logs_dir, profile.run_dir, profile.data_dir):
        path.mkdir(parents=True, exist_ok=True)
    secrets = Secrets()
    port = free_ports(1)[0]
    server = RedisServer(
        "redis",
        data_dir=profile.data_dir / "redis",
        run_dir=profile.run_dir,
        log_path=profile.logs_dir / "redis.log",
        port=port,
        password=secrets.redis,
    )
    server.init()
    server.start()
    try:
        server.wait_ready()
        asyncio.run(measure(f"redis://:{secrets.redis}@127.0.0.1:{port}/0", server, args.rounds))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
