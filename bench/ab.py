"""A/B of the fast creates on one stack: the same code with a setting off and on, interleaved.

    .venv/bin/python -m bench.ab --set SPINUP_X=1 --restart gateway [--rounds 3] [--profile 10]

On one throwaway stack (``.spinup/ab``, configured as ``make bench``'s), each round measures
``POST /cache/new``, ``/queue/new`` and ``/webhook/new`` at c = 1 (p50) and c = 16 (rate, and the
CPU every process of the stack spent per create), once as the stack runs (A) and once with the
``--set`` settings in the services' environment (B), restarting the ``--restart`` services
between the two and alternating which goes first. On a machine shared with other work, only such
interleaved pairs say what a change bought; the medians over the rounds and their ratio B / A
are printed, and the whole of it written as JSON with ``--out``. Without ``--set`` it measures
A alone (the per-process table of ``bench/README.md``).

``--profile N``: py-spy records the gateway's processes (or ``--profiled``'s) for N seconds of
creates of the first ``--kinds`` at c = 16 in the first round's A (``bench.profile``).
``--paths``: instead of the creates, ``GET /healthz`` (the HTTP floor), ``GET /resources/{token}``
over 200 caches and 1 KB ``POST``s to 200 webhook receivers, each at c = 64 (rate, p50 and CPU
per request by process; ``--profile`` then samples the reads, or ``--profiled-path``).
``--kinds`` picks the creates (``cache,queue,webhook`` by default); ``db`` is ``POST /db/new``
from pg-provisioner's warm pool (``POOL_SIZE`` members, full before each level, and drained once
after each restart, since a member adopted by a restarted worker costs its take a password the
fresh ones were made with).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import uvloop

from bench import profile
from bench.__main__ import bench_stack
from bench.cpu import LOAD_GENERATOR, stack_processes, until_quiet
from bench.harness import (
    NEW_PATH,
    PG_POOL_SETTING,
    POOL_FILL_TIMEOUT_S,
    caller,
    gateway_connector,
    restart_with,
    tmp_dir,
)
from bench.measure import Measurement, measure
from bench.pg_pool import wait_for_pool
from shared.contracts.kinds import ResourceKind

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from devstack.stack import Stack

FAST_KINDS = (ResourceKind.REDIS, ResourceKind.NATS, ResourceKind.WEBHOOK)
#: ``--kinds db``: pg-provisioner's warm pool; a level makes at most this many creates.
POOL_SIZE = 200
#: The stack counts as quiet below this many cores (as ``make bench`` waits).
_QUIET_CORES = 0.15
_SETTLE_S = 60.0


async def _measure_kind(
    url: str,
    kind: ResourceKind,
    processes: dict[str, int],
    calls: int,
    seconds: float,
    *,
    before_level: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """c=1 p50, then c=16 rate and CPU per create by process."""
    path = NEW_PATH[kind]
    figures: dict[str, Any] = {}
    for level, count in ((1, max(calls // 4, 20)), (16, calls)):
        if before_level is not None:
            await before_level()
        connector = gateway_connector(level)
        async with aiohttp.ClientSession(url, connector=connector) as http:
            offset = 0 if level == 1 else 1_000_000

            async def new(
                index: int, http: aiohttp.ClientSession = http, offset: int = offset
            ) -> None:
                async with http.post(path, headers=caller(index + offset)) as response:
                    await response.read()
                    if response.status != 201:  # noqa: PLR2004
                        msg = f"{path}: {response.status}"
                        raise RuntimeError(msg)

            measured: Measurement = await measure(
                f"POST {path}",
                new,
                calls=count,
                concurrency=level,
                max_seconds=seconds,
                processes=processes if level == 16 else None,  # noqa: PLR2004
            )
        figures[f"c{level}_p50_ms"] = round(measured.ms(0.5), 2)
        figures[f"c{level}_per_s"] = round(measured.per_second, 1)
        figures[f"c{level}_errors"] = measured.errors
        if level == 16:  # noqa: PLR2004
            by_process = dict(measured.cpu_ms_by_process)
            figures["load_generator_cpu_ms"] = by_process.pop(LOAD_GENERATOR, 0.0)
            figures["cpu_ms_by_process"] = by_process
            figures["cpu_ms"] = round(sum(by_process.values()), 3)
    return figures


#: ``--paths``: the request paths measured instead of the creates, all at c = 64, and how many
#: caches (read) and webhook receivers (posted to) they spread over.
PATHS = ("healthz", "read", "capture")
_PATH_CONCURRENCY = 64
_PATH_TARGETS = 200
_CAPTURE_BODY = b'{"event": "bench"}'.ljust(1024)


@dataclass(frozen=True)
class PathTargets:
    """What ``--paths`` reads and posts to: made once, used by every round."""

    tokens: list[str]
    receive_urls: list[str]


async def _path_targets(url: str) -> PathTargets:
    """``_PATH_TARGETS`` new caches and as many webhook receivers."""
    made: dict[ResourceKind, list[dict[str, Any]]] = {
        ResourceKind.REDIS: [],
        ResourceKind.WEBHOOK: [],
    }
    async with aiohttp.ClientSession(url, connector=gateway_connector(16)) as http:
        for kind, answers in made.items():

            async def new(
                index: int, kind: ResourceKind = kind, answers: list[dict[str, Any]] = answers
            ) -> None:
                async with http.post(NEW_PATH[kind], headers=caller(3_000_000 + index)) as response:
                    if response.status != 201:  # noqa: PLR2004
                        msg = f"{NEW_PATH[kind]}: {response.status}"
                        raise RuntimeError(msg)
                    answers.append(await response.json())

            await measure(f"{kind.value} targets", new, calls=_PATH_TARGETS, concurrency=16)
    return PathTargets(
        tokens=[answer["token"] for answer in made[ResourceKind.REDIS]],
        receive_urls=[
            answer["credentials"]["receive_url"] for answer in made[ResourceKind.WEBHOOK]
        ],
    )


async def _measure_path(
    url: str,
    path: str,
    targets: PathTargets,
    *,
    processes: dict[str, int] | None,
    calls: int,
    seconds: float,
) -> dict[str, Any]:
    """One of ``PATHS`` at c=64: rate, p50 and CPU per request by process."""
    connector = gateway_connector(_PATH_CONCURRENCY)
    async with aiohttp.ClientSession(url, connector=connector) as http:

        def request(index: int) -> Any:  # noqa: ANN401  (aiohttp's request context manager)
            if path == "healthz":
                return http.get("/healthz")
            if path == "read":
                return http.get(f"/resources/{targets.tokens[index % len(targets.tokens)]}")
            receive_url = targets.receive_urls[index % len(targets.receive_urls)]
            return http.post(receive_url, data=_CAPTURE_BODY)

        async def call(index: int) -> None:
            async with request(index) as response:
                await response.read()
                if response.status != 200:  # noqa: PLR2004
                    msg = f"{path}: {response.status}"
                    raise RuntimeError(msg)

        measured = await measure(
            path,
            call,
            calls=calls,
            concurrency=_PATH_CONCURRENCY,
            max_seconds=seconds,
            processes=processes,
        )
    if processes is None:
        return {}
    by_process = dict(measured.cpu_ms_by_process)
    load_generator = by_process.pop(LOAD_GENERATOR, 0.0)
    return {
        "c64_p50_ms": round(measured.ms(0.5), 2),
        "c64_per_s": round(measured.per_second, 1),
        "c64_errors": measured.errors,
        # On the same cores as the stack: what a rate on this machine has to leave it.
        "load_generator_cpu_ms": load_generator,
        "cpu_ms_by_process": by_process,
        "cpu_ms": round(sum(by_process.values()), 3),
    }


async def _measure_pooled(
    stack: Stack, processes: dict[str, int], calls: int, seconds: float, *, drain: bool
) -> dict[str, Any]:
    """``POST /db/new`` from a full warm pool; with ``drain``, one pool of creates first."""
    platform = await asyncpg.create_pool(stack.env()["SPINUP_PLATFORM_DSN"], min_size=1, max_size=2)
    try:

        async def fill() -> None:
            await wait_for_pool(platform, POOL_SIZE, within_s=POOL_FILL_TIMEOUT_S)
            await until_quiet(processes, below_cores=_QUIET_CORES, within_s=_SETTLE_S)

        if drain:
            await fill()
            async with aiohttp.ClientSession(
                stack.gateway_url, connector=gateway_connector(16)
            ) as http:

                async def new(index: int) -> None:
                    async with http.post(
                        NEW_PATH[ResourceKind.POSTGRES], headers=caller(4_000_000 + index)
                    ) as response:
                        await response.read()

                await measure("drain", new, calls=POOL_SIZE, concurrency=16)
        return await _measure_kind(
            stack.gateway_url,
            ResourceKind.POSTGRES,
            processes,
            min(calls, POOL_SIZE),
            seconds,
            before_level=fill,
        )
    finally:
        await platform.close()


async def _profile(
    url: str,
    pid: int,
    seconds: float,
    *,
    keep: Path | None,
    targets: PathTargets | None,
    path: str,
    kind: ResourceKind,
) -> list[str]:
    with tmp_dir() as directory:
        raw = directory / "profile.txt"
        recording = asyncio.create_task(profile.record(pid, seconds, raw, subprocesses=True))
        if targets is not None:
            await _measure_path(
                url, path, targets, processes=None, calls=10**9, seconds=seconds + 1
            )
        else:
            connector = gateway_connector(16)
            async with aiohttp.ClientSession(url, connector=connector) as http:

                async def new(index: int) -> None:
                    headers = caller(2_000_000 + index)
                    async with http.post(NEW_PATH[kind], headers=headers) as response:
                        await response.read()

                await measure("profile", new, calls=10**9, concurrency=16, max_seconds=seconds + 1)
        await recording
        if keep is not None:
            await asyncio.to_thread(shutil.copyfile, raw, keep)
        return profile.summarise(raw)


#: The figures the table shows, in its order, with their labels: a create's, then a path's.
_LABELS = {
    "c1_p50_ms": "c=1 p50 ms",
    "c16_per_s": "c=16 /s",
    "c64_p50_ms": "c=64 p50 ms",
    "c64_per_s": "c=64 /s",
    "cpu_ms": "CPU ms/call",
    "load_generator_cpu_ms": "load gen. ms/call",
}


def _medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kind (or path), the median of each figure over the rounds (CPU by process too)."""
    out: dict[str, Any] = {}
    for measured in rounds[0] if rounds else {}:
        runs = [r[measured] for r in rounds]
        figures: dict[str, Any] = {
            key: round(statistics.median(r[key] for r in runs), 3)
            for key in runs[0]
            if key != "cpu_ms_by_process"
        }
        processes = {process for r in runs for process in r["cpu_ms_by_process"]}
        figures["cpu_ms_by_process"] = {
            process: round(
                statistics.median(r["cpu_ms_by_process"].get(process, 0.0) for r in runs), 3
            )
            for process in sorted(processes)
        }
        out[measured] = figures
    return out


def _table(result: dict[str, Any]) -> list[str]:
    lines = []
    variants = result["medians"]
    for measured, figures in variants["A"].items():
        lines.append(
            f"{measured}:" if measured in PATHS else f"{NEW_PATH[ResourceKind(measured)]}:"
        )
        for key, label in _LABELS.items():
            if key not in figures:
                continue
            values = {v: variants[v][measured][key] for v in variants}
            ratio = (
                f"  B/A {values['B'] / values['A']:.2f}" if "B" in values and values["A"] else ""
            )
            shown = "  ".join(f"{v} {x:8.2f}" for v, x in values.items())
            lines.append(f"  {label:<20} {shown}{ratio}")
        for variant, medians in variants.items():
            by_process = medians[measured]["cpu_ms_by_process"].items()
            split = ", ".join(
                f"{process} {ms:.2f}"
                for process, ms in sorted(by_process, key=lambda item: -item[1])
                if ms >= 0.05  # noqa: PLR2004
            )
            lines.append(f"  {variant} CPU by process: {split}")
    return lines


async def _run(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    settings = dict(item.split("=", 1) for item in args.set)
    services = [s for s in args.restart.split(",") if s]
    variants = ["A", "B"] if settings else ["A"]
    rounds: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    result: dict[str, Any] = {"set": settings, "restart": services, "rounds": rounds}
    targets = await _path_targets(stack.gateway_url) if args.paths else None
    by_path = {path.strip("/").removesuffix("/new"): kind for kind, path in NEW_PATH.items()}
    kinds = [by_path[name] for name in args.kinds.split(",") if name]
    if ResourceKind.POSTGRES in kinds:
        stack.service_env_overrides[PG_POOL_SETTING] = str(POOL_SIZE)
        await asyncio.to_thread(restart_with, stack, ["pg-provisioner"], {}, on=True)
    for number in range(args.rounds):
        order = variants if number % 2 == 0 else variants[::-1]
        for variant in order:
            if settings:
                await asyncio.to_thread(restart_with, stack, services, settings, on=variant == "B")
            processes = stack_processes(stack)
            if args.profile and number == 0 and variant == "A":
                await until_quiet(processes, below_cores=_QUIET_CORES, within_s=_SETTLE_S)
                result["profile"] = await _profile(
                    stack.gateway_url,
                    processes[args.profiled],
                    args.profile,
                    keep=args.keep_profile,
                    targets=targets,
                    path=args.profiled_path,
                    kind=kinds[0],
                )
            measured: dict[str, Any] = {}
            if targets is not None:
                for path in PATHS:
                    await until_quiet(processes, below_cores=_QUIET_CORES, within_s=_SETTLE_S)
                    measured[path] = await _measure_path(
                        stack.gateway_url,
                        path,
                        targets,
                        processes=processes,
                        calls=args.calls,
                        seconds=args.seconds,
                    )
            else:
                for kind in kinds:
                    await until_quiet(processes, below_cores=_QUIET_CORES, within_s=_SETTLE_S)
                    if kind is ResourceKind.POSTGRES:
                        # Restarted (or just started): its members are adopted ones until drained.
                        drain = number == 0 or "pg-provisioner" in services
                        measured[kind.value] = await _measure_pooled(
                            stack, processes, args.calls, args.seconds, drain=drain
                        )
                        continue
                    measured[kind.value] = await _measure_kind(
                        stack.gateway_url, kind, processes, args.calls, args.seconds
                    )
            rounds[variant].append(measured)
            print(f"[ab] round {number + 1} {variant}: {json.dumps(measured)}", file=sys.stderr)  # noqa: T201
    result["medians"] = {v: _medians(r) for v, r in rounds.items()}
    return result


def main() -> None:
    """Start a throwaway stack, measure A (and B), print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], help="NAME=value for B")
    parser.add_argument("--restart", default="gateway", help="services to restart between A and B")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=800, help="creates per kind at c=16")
    parser.add_argument("--seconds", type=float, default=8.0, help="at most, per level")
    parser.add_argument("--profile", type=float, default=0.0, help="py-spy the gateway N s")
    parser.add_argument("--profiled", default="gateway", help="the service --profile samples")
    parser.add_argument("--keep-profile", type=Path, help="py-spy's raw stacks, kept here")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    parser.add_argument("--paths", action="store_true", help="healthz, reads, capture at c=64")
    parser.add_argument("--profiled-path", default="read", choices=PATHS, help="with --paths")
    parser.add_argument(
        "--kinds", default="cache,queue,webhook", help="the creates measured; db: from the pool"
    )
    args = parser.parse_args()
    with bench_stack(durable=False, name="ab") as stack:
        result = uvloop.run(_run(stack, args))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    print("\n".join(_table(result)))  # noqa: T201
    if "profile" in result:
        print("\n".join(result["profile"]))  # noqa: T201


if __name__ == "__main__":
    main()
