"""The CPU floor of issue 21's targets: each step a call cannot do without, alone, by process.

    .venv/bin/python -m bench.floor [--calls 1600] [--rounds 3]

A rate on two cores is bound by the CPU the whole path spends per call (``bench.cpu``). This
asks how low that CPU could go without changing the design: on one throwaway stack
(``.spinup/floor``, configured as ``make bench``'s), every step the path cannot skip is made
alone, at the target's concurrency (16 for creates, 64 for reads and capture), with the client
the service uses, and the CPU every process spent on it is read from ``/proc``:

- ``GET /healthz``: the gateway's HTTP floor (uvicorn, the middleware, Litestar, no I/O);
- admission: the rate limit (one ``EVALSHA``); the caps are counted by the provision's append;
- a NATS request-reply to another process (``bench.echo``), as the gateway asks a worker;
- the worker's ``provision`` of a create with new ids, in this process: the driver's create on
  the real backend, the credentials sealed, one append of the intent and the outcome that
  counts the caps (docs/adr/0040), and the relay nudged (the stack's gateway relays the
  events to JetStream, as it does for a create);
- for reads, the read model's lookup by token hash; for capture, the webhook driver's
  ``receive`` of a 1 KB request (one Lua call to the platform Redis).

In every step but ``GET /healthz`` this process stands in for a service (the gateway or the
worker), so its CPU counts, less what the harness spends on a call that does nothing (measured
first, as ``harness``). In ``GET /healthz`` it is the HTTP client, which the creates' figures
leave out too. Each path's floor is the sum of its steps; beside it, the path itself measured
in the same round. A floor above a target's CPU budget (the cores over the rate) shows the
target cannot be met by this design on this machine, whatever each layer's own overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import asyncpg
import nats
import uvloop
from redis.asyncio import Redis

import gateway.settings
from bench.__main__ import bench_stack
from bench.cpu import LOAD_GENERATOR, cores, cpu_bound_per_s, stack_processes, until_quiet
from bench.drivers import connected
from bench.harness import NEW_PATH, WEBHOOK_BODY, caller, echo_responder, gateway_connector
from bench.measure import Measurement, measure
from gateway.admission.ratelimit import RateLimiter
from gateway.webhooks.driver import StoredRequest, WebhookDriver, encode_body, receive_key_of_url
from shared.bus import Bus
from shared.contracts.commands import ProvisionResource
from shared.contracts.kinds import ResourceKind
from shared.crypto.sealing import Keyring
from shared.crypto.tokens import hash_token
from shared.eventlog.projections import ResourceProjection, ResourceReadModel
from shared.eventlog.store import EventStore
from shared.lifecycle import ResourceDriver, ResourceLifecycle
from shared.plans import Plans, load_plans
from shared.postgres.pool import open_pool

#: The creates the floor is taken of, and whether the gateway reaches their worker over NATS
#: (a webhook's worker is the gateway itself: ADR 0036).
CREATES = {
    ResourceKind.REDIS: True,
    ResourceKind.NATS: True,
    ResourceKind.WEBHOOK: False,
    ResourceKind.MONGO: True,
}
CREATE_CONCURRENCY = 16
PATH_CONCURRENCY = 64
#: Caches whose tokens the reads use, and receivers the capture posts to.
TARGETS = 200
_QUIET_CORES = 0.15
_SETTLE_S = 60.0

Step = Callable[[int], Awaitable[object]]


#: Besides the CPU of each process: the calls a second at the target's concurrency, and the
#: median of the same call made one at a time (a path's c=1 floor is the sum of its steps').
RATE = "rate /s"
ALONE_P50 = "c=1 p50 ms"
_NOT_CPU = (RATE, ALONE_P50)


async def _cpu_of(
    name: str,
    call: Step,
    processes: Mapping[str, int],
    calls: int,
    concurrency: int,
    *,
    settle_s: float,
) -> tuple[Measurement, float]:
    """``call`` under load (its CPU by process), then one at a time (its median, ms)."""
    await until_quiet(processes, below_cores=_QUIET_CORES, within_s=settle_s)
    measured = await measure(name, call, calls=calls, concurrency=concurrency, processes=processes)
    alone = await measure(name, call, calls=max(calls // 8, 8), concurrency=1)
    for each in (measured, alone):
        if each.errors:
            msg = f"{name}: {each.errors} calls failed, e.g. {each.error_samples[:2]}"
            raise RuntimeError(msg)
    return measured, alone.ms(0.5)


def _figures(measured: tuple[Measurement, float], spent: dict[str, float]) -> dict[str, float]:
    load, alone_p50 = measured
    return spent | {RATE: round(load.per_second, 1), ALONE_P50: round(alone_p50, 3)}


def _service_side(measured: tuple[Measurement, float], harness_ms: float) -> dict[str, float]:
    """CPU by process with this process counted as the service it stands in for."""
    spent = dict(measured[0].cpu_ms_by_process)
    spent[LOAD_GENERATOR] = max(spent.get(LOAD_GENERATOR, 0.0) - harness_ms, 0.0)
    return _figures(measured, spent)


def _server_side(measured: tuple[Measurement, float]) -> dict[str, float]:
    """CPU by process without this process: it was the HTTP client."""
    spent = {k: v for k, v in measured[0].cpu_ms_by_process.items() if k != LOAD_GENERATOR}
    return _figures(measured, spent)


@contextlib.asynccontextmanager
async def _worker(
    kind: ResourceKind, env: Mapping[str, str], plans: Plans, bus: Bus, platform: asyncpg.Pool
) -> AsyncIterator[Callable[[int], Awaitable[object]]]:
    """``kind``'s ``provision`` of a create with new ids, as its worker runs it."""
    tier = plans.anonymous_tier
    limits = plans.tiers[tier].limits(kind)
    keyring = Keyring.from_setting(env["SPINUP_SEAL_KEYS"])
    async with connected(kind, env) as driver:
        lifecycle = ResourceLifecycle(
            EventStore(platform, [ResourceProjection()], nudge=bus.nudge_relay),
            keyring,
            cast("ResourceDriver[Any]", driver),
            resources=ResourceReadModel(platform),
            create_concurrency=CREATE_CONCURRENCY,
            delete_concurrency=4,
        )

        async def provision(_: int) -> None:
            await lifecycle.provision(
                ProvisionResource(
                    command_id=uuid.uuid4(),
                    correlation_id="bench-floor",
                    deadline=time.time() + 30,
                    resource_id=uuid.uuid4(),
                    kind=kind,
                    tier=tier,
                    limits=limits,
                    token_hash=uuid.uuid4().hex,
                    # Each from a network of its own, as in the harness: the caps count stays
                    # one holder's few rows.
                    fingerprint=uuid.uuid4().hex,
                    new_ids=True,
                    caps=plans.tiers[tier].caps,
                )
            )

        yield provision


@contextlib.asynccontextmanager
async def _capture_store(
    env: Mapping[str, str], receive_urls: list[str]
) -> AsyncIterator[Callable[[int], Awaitable[object]]]:
    """The webhook driver's store of a 1 KB request, spread over ``receive_urls``' receivers."""
    token_key = gateway.settings.Settings.from_env(env).token_key
    keys = [receive_key_of_url(token_key, receive_url) for receive_url in receive_urls]
    known = [key for key in keys if key is not None]
    if len(known) != len(keys):  # pragma: no cover  (the gateway made these URLs)
        msg = "a receive URL whose key does not parse"
        raise RuntimeError(msg)
    async with connected(ResourceKind.WEBHOOK, env) as webhooks:
        if not isinstance(webhooks, WebhookDriver):  # pragma: no cover
            msg = "bench.drivers connected webhooks with another driver"
            raise TypeError(msg)

        async def receive(i: int) -> None:
            await webhooks.receive(known[i % len(known)], _stored_request())

        yield receive


async def _targets(http: aiohttp.ClientSession, count: int) -> tuple[list[str], list[str]]:
    """Tokens of ``count`` new caches, and the receive URLs of as many receivers."""
    made: dict[ResourceKind, list[dict[str, Any]]] = {
        ResourceKind.REDIS: [],
        ResourceKind.WEBHOOK: [],
    }
    numbers = itertools.count(5_000_000)
    for kind, answers in made.items():

        async def new(
            _: int, kind: ResourceKind = kind, answers: list[dict[str, Any]] = answers
        ) -> None:
            async with http.post(NEW_PATH[kind], headers=caller(next(numbers))) as response:
                response.raise_for_status()
                answers.append(await response.json())

        await measure(f"{kind.value} targets", new, calls=count, concurrency=16)
    return (
        [answer["token"] for answer in made[ResourceKind.REDIS]],
        [answer["credentials"]["receive_url"] for answer in made[ResourceKind.WEBHOOK]],
    )


async def one_round(  # noqa: PLR0915  (one measurement after another, each a few lines)
    url: str,
    env: Mapping[str, str],
    processes: Mapping[str, int],
    calls: int,
    *,
    targets: int = TARGETS,
    settle_s: float = _SETTLE_S,
) -> dict[str, dict[str, dict[str, float]]]:
    """Every step and every path once: ``{"steps" | "paths": {name: {process: ms per call}}}``.

    Each measurement first waits up to ``settle_s`` for the stack to be quiet.
    """
    plans = load_plans(Path(env["SPINUP_PLANS_FILE"]))
    platform = await open_pool(env["SPINUP_PLATFORM_DSN"], size=16)
    bus = await Bus.connect(env["SPINUP_NATS_URL"], name="bench-floor")
    redis = Redis.from_url(env["SPINUP_REDIS_URL"])
    connector = gateway_connector(PATH_CONCURRENCY)
    # The paths are a few times faster than a create: as many calls would be over in a moment.
    path_calls = 4 * calls
    steps: dict[str, dict[str, float]] = {}
    paths: dict[str, dict[str, float]] = {}
    try:
        async with aiohttp.ClientSession(url, connector=connector) as http:
            tokens, receive_urls = await _targets(http, targets)

            async def nothing(_: int) -> None:
                await asyncio.sleep(0)

            harness = await _cpu_of(
                "harness", nothing, processes, calls, CREATE_CONCURRENCY, settle_s=settle_s
            )
            harness_ms = harness[0].cpu_ms_by_process.get(LOAD_GENERATOR, 0.0)

            async def healthz(_: int) -> None:
                async with http.get("/healthz") as response:
                    response.raise_for_status()

            for level, count in ((CREATE_CONCURRENCY, calls), (PATH_CONCURRENCY, path_calls)):
                measured = await _cpu_of(
                    "healthz", healthz, processes, count, level, settle_s=settle_s
                )
                steps[f"GET /healthz c={level}"] = _server_side(measured)

            limiter = RateLimiter(redis)
            holders = itertools.count()
            measured = await _cpu_of(
                "rate limit",
                lambda _: limiter.spend(f"bench-floor:{next(holders)}", 1_000_000),
                processes,
                calls,
                CREATE_CONCURRENCY,
                settle_s=settle_s,
            )
            steps["rate limit (EVALSHA)"] = _service_side(measured, harness_ms)

            async with echo_responder(env["SPINUP_NATS_URL"]) as (subject, pid):
                client = await nats.connect(env["SPINUP_NATS_URL"], name="bench-floor")
                try:
                    measured = await _cpu_of(
                        "request-reply",
                        lambda _: client.request(subject, b"x" * 600, timeout=10),
                        {**processes, "worker (echo)": pid},
                        calls,
                        CREATE_CONCURRENCY,
                        settle_s=settle_s,
                    )
                finally:
                    await client.close()
            steps["NATS request-reply"] = _service_side(measured, harness_ms)

            for kind in CREATES:
                async with _worker(kind, env, plans, bus, platform) as provision:
                    count = calls if kind is not ResourceKind.MONGO else calls // 2
                    measured = await _cpu_of(
                        f"provision {kind.value}",
                        provision,
                        processes,
                        count,
                        CREATE_CONCURRENCY,
                        settle_s=settle_s,
                    )
                steps[f"provision {kind.value}"] = _service_side(measured, harness_ms)
                numbers = itertools.count(6_000_000 + 100_000 * len(paths))

                async def create(
                    _: int, kind: ResourceKind = kind, numbers: Iterator[int] = numbers
                ) -> None:
                    async with http.post(NEW_PATH[kind], headers=caller(next(numbers))) as answer:
                        answer.raise_for_status()

                measured = await _cpu_of(
                    NEW_PATH[kind], create, processes, count, CREATE_CONCURRENCY, settle_s=settle_s
                )
                paths[f"POST {NEW_PATH[kind]}"] = _server_side(measured)

            hashes = [hash_token(token) for token in tokens]
            resources = ResourceReadModel(platform)
            measured = await _cpu_of(
                "read lookup",
                lambda i: resources.by_token_hash(hashes[i % len(hashes)]),
                processes,
                path_calls,
                PATH_CONCURRENCY,
                settle_s=settle_s,
            )
            steps["read lookup (by token hash)"] = _service_side(measured, harness_ms)

            async def read(i: int) -> None:
                async with http.get(f"/resources/{tokens[i % len(tokens)]}") as response:
                    response.raise_for_status()

            measured = await _cpu_of(
                "read", read, processes, path_calls, PATH_CONCURRENCY, settle_s=settle_s
            )
            paths["GET /resources/{token}"] = _server_side(measured)

            async with _capture_store(env, receive_urls) as receive:
                measured = await _cpu_of(
                    "capture store",
                    receive,
                    processes,
                    path_calls,
                    PATH_CONCURRENCY,
                    settle_s=settle_s,
                )
            steps["capture store (one Lua call)"] = _service_side(measured, harness_ms)

            async def capture(i: int) -> None:
                receive_url = receive_urls[i % len(receive_urls)]
                async with http.post(receive_url, data=WEBHOOK_BODY) as response:
                    response.raise_for_status()

            measured = await _cpu_of(
                "capture", capture, processes, path_calls, PATH_CONCURRENCY, settle_s=settle_s
            )
            paths["POST {receive_url} 1 KB"] = _server_side(measured)
    finally:
        await redis.aclose()
        await bus.close()
        await platform.close()
    return {"steps": steps, "paths": paths}


def _stored_request() -> StoredRequest:
    """A 1 KB ``POST`` as the gateway's receive route stores it."""
    body, encoding = encode_body(WEBHOOK_BODY)
    return StoredRequest(
        id=uuid.uuid4().hex,
        method="POST",
        path="/",
        query="",
        query_params={},
        headers=[("content-length", str(len(WEBHOOK_BODY)))],
        body=body,
        body_encoding=encoding,
        size=len(WEBHOOK_BODY),
        received_at=datetime.now(UTC),
        client_ip="203.0.113.7",
    )


#: Each path's steps: what it cannot do without (the step names of ``one_round``).
FLOORS = {
    f"POST {NEW_PATH[kind]}": [
        f"GET /healthz c={CREATE_CONCURRENCY}",
        "rate limit (EVALSHA)",
        *(["NATS request-reply"] if over_nats else []),
        f"provision {kind.value}",
    ]
    for kind, over_nats in CREATES.items()
} | {
    "GET /resources/{token}": [f"GET /healthz c={PATH_CONCURRENCY}", "read lookup (by token hash)"],
    "POST {receive_url} 1 KB": [
        f"GET /healthz c={PATH_CONCURRENCY}",
        "capture store (one Lua call)",
    ],
}


def medians(rounds: list[dict[str, dict[str, dict[str, float]]]]) -> dict[str, Any]:
    """Each figure's median over the rounds."""
    out: dict[str, Any] = {}
    for part in ("steps", "paths"):
        out[part] = {}
        for name in rounds[0][part]:
            keys = {key for r in rounds for key in r[part][name]}
            out[part][name] = {
                key: round(statistics.median(r[part][name].get(key, 0.0) for r in rounds), 3)
                for key in sorted(keys)
            }
    return out


def _total(figures: Mapping[str, float]) -> float:
    return sum(ms for process, ms in figures.items() if process not in _NOT_CPU)


def _allows(cpu_ms: float) -> str:
    """What ``cpu_ms`` per call allows a second on this machine's cores.

    "-" when it is zero: no CPU tick fell inside the few calls of a short run (the kernel counts
    in 10 ms ticks).
    """
    allowed = cpu_bound_per_s(cpu_ms)
    return "    -" if allowed is None else f"{allowed:5.0f}"


def table(result: Mapping[str, Any]) -> list[str]:
    """The steps, then each path's floors beside the path as measured."""
    steps, paths = result["steps"], result["paths"]
    lines = ["each step: ms of CPU per call (by process), and its c=1 p50 (medians of the rounds):"]
    for name, figures in steps.items():
        split = ", ".join(
            f"{process} {ms:.2f}"
            for process, ms in sorted(figures.items(), key=lambda item: -item[1])
            if process not in _NOT_CPU and ms >= 0.02  # noqa: PLR2004  (idle)
        )
        lines.append(
            f"  {name:<30} {_total(figures):5.2f} ms  p50 {figures[ALONE_P50]:5.2f} ms  ({split})"
        )
    lines.append("")
    lines.append(f"each path: its floors (the sums of its steps) and itself, on {cores()} cores:")
    for path, parts in FLOORS.items():
        floor = sum(_total(steps[step]) for step in parts)
        floor_p50 = sum(steps[step][ALONE_P50] for step in parts)
        measured = paths[path]
        whole = _total(measured)
        lines.append(
            f"  {path:<24} CPU floor {floor:4.2f} ms (allows {_allows(floor)}/s),"
            f" measured {whole:4.2f} ms at {measured[RATE]:6.1f}/s;"
            f" c=1 p50 floor {floor_p50:4.2f} ms, measured {measured[ALONE_P50]:5.2f} ms"
        )
    return lines


async def _run(url: str, env: Mapping[str, str], processes: Mapping[str, int], args: Any) -> Any:  # noqa: ANN401
    rounds = []
    for number in range(args.rounds):
        measured = await one_round(url, env, processes, args.calls)
        rounds.append(measured)
        print(f"[floor] round {number + 1}: {json.dumps(measured)}", file=sys.stderr)  # noqa: T201
    return {"rounds": rounds, **medians(rounds)}


def main() -> None:
    """Start a throwaway stack, measure every step and path, print the floors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1600, help="calls per step")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args()
    with bench_stack(durable=False, name="floor") as stack:
        result = uvloop.run(_run(stack.gateway_url, stack.env(), stack_processes(stack), args))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    print("\n".join(table(result)))  # noqa: T201


if __name__ == "__main__":
    main()
