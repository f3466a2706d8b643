"""``make bench``: start a stack of its own (or reuse one), measure everything, write the results.

    .venv/bin/python -m bench                   # full run, results in bench/results/
    .venv/bin/python -m bench --smoke           # a few calls of everything (what the tests run)
    eval "$(.venv/bin/python -m devstack env)"  # then, to reuse the running `make run` stack:
    .venv/bin/python -m bench --reuse [--url http://127.0.0.1:8080]

The stack the bench starts is ``.spinup/bench``: free ports, wiped at start, plans with caps and
rate limits raised (one client address makes every call), and Postgres with fsync off unless
``--fsync`` (production's setting). A reused stack must allow that many calls from one address
(``make run`` serves the real plans, whose rate limits stop a full run early: errors are counted,
not hidden).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import uvloop

from bench import report
from bench.harness import FULL, SMOKE, Bench, Progress, Results, Target
from devstack.profile import TEST_PERIODS, Profile
from devstack.stack import Stack

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"

#: Service settings of the bench stack beyond the test profile's: the usage sweep at its
#: production interval (every few seconds it would measure thousands of tenants mid-run), and
#: the bench's loopback address trusted as a proxy, so its creates arrive from many client
#: networks (``bench.harness.caller``).
BENCH_OVERRIDES = {
    "SPINUP_REAPER_USAGE_INTERVAL_S": "60",
    # The production interval and grace: the test profile's reconcile every 2 s lists every
    # tenant of each backend and looks their ids up, a cost that grows with the thousands of
    # resources a run makes (it took the platform Postgres from 0.7 to 2-3 ms per create over
    # three rounds of bench.ab).
    "SPINUP_RECONCILE_S": "60",
    "SPINUP_ORPHAN_GRACE_S": "300",
    "SPINUP_TRUSTED_PROXIES": "127.0.0.1/32",
}


def bench_stack(*, durable: bool, name: str = "bench", production_periods: bool = False) -> Stack:
    """The stack ``make bench`` starts: the test profile's, named ``bench``.

    ``durable``: Postgres with fsync on, as in production. Off by default: on a disk other
    stacks write to, a ``DROP DATABASE`` (which forces a checkpoint) took minutes with it on.
    ``production_periods``: the test profile's fast periodic passes (``TEST_PERIODS``) left to
    the services' own defaults, for what a stack spends at rest.
    """
    profile = Profile.test(REPO_ROOT, BENCH_OVERRIDES, name=name)
    overrides = {
        key: value
        for key, value in profile.overrides.items()
        if not (production_periods and key in TEST_PERIODS)
    }
    return Stack(dataclasses.replace(profile, durable=durable, overrides=overrides))


async def measure(
    target: Target, *, smoke: bool, out: Path, quiet: bool = False, profile: bool = False
) -> Results:
    """Run the bench against ``target`` and write its results into ``out``."""
    sizes, mode = (SMOKE, "smoke") if smoke else (FULL, "full")
    bench = Bench(target, sizes, Progress(quiet=quiet), mode, profile=profile)
    try:
        results = await bench.run()
    finally:
        # What was measured before a failure is still worth reading.
        written = report.write(bench.results, out, bench.results.rows)
        if not quiet:
            print("\n".join(f"wrote {path}" for path in written))  # noqa: T201
    return results


def main() -> None:
    """Parse arguments, start or find the stack, measure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few calls of everything")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where results go")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="measure the stack whose SPINUP_* environment is set (python -m devstack env)",
    )
    parser.add_argument("--url", help="with --reuse: the gateway (default SPINUP_PUBLIC_URL)")
    parser.add_argument(
        "--profile", action="store_true", help="also py-spy the gateway on POST /cache/new"
    )
    parser.add_argument(
        "--fsync", action="store_true", help="the bench stack's Postgres with fsync on"
    )
    args = parser.parse_args()
    if args.reuse:
        env = {k: v for k, v in os.environ.items() if k.startswith("SPINUP_")}
        if "SPINUP_NATS_URL" not in env:
            parser.error('--reuse needs the stack\'s environment: eval "$(python -m devstack env)"')
        target = Target(gateway_url=args.url or env["SPINUP_PUBLIC_URL"], env=env)
        uvloop.run(measure(target, smoke=args.smoke, out=args.out, profile=args.profile))
        return
    print("starting the bench stack (.spinup/bench)…", flush=True)  # noqa: T201
    with bench_stack(durable=args.fsync) as stack:
        target = Target(gateway_url=stack.gateway_url, env=stack.env(), stack=stack, clean_up=False)
        uvloop.run(measure(target, smoke=args.smoke, out=args.out, profile=args.profile))


if __name__ == "__main__":
    main()
