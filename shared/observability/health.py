"""Health of a service as a container engine or Kubernetes asks it: one check for every service.

Workers have no HTTP port, so a worker proves it is alive with a heartbeat file that its own event
loop rewrites every few seconds: a stale file means a dead or stuck loop (liveness); the file's
word says whether its NATS connection is up right now (readiness). The gateway is asked over HTTP.

    python -m shared.observability.health          # $SPINUP_HEARTBEAT_FILE fresh and ready
    python -m shared.observability.health --live   # fresh, whatever the NATS connection (liveness)
    python -m shared.observability.health --url http://127.0.0.1:8080/readyz

Exit status 0 when healthy, 1 otherwise, with the reason on stderr (Docker keeps it in
``docker inspect``'s health log).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from shared.config import Env
from shared.runtime import in_background

#: The setting that turns heartbeats on and names the file (the images set it; devstack does not).
HEARTBEAT_SETTING = "SPINUP_HEARTBEAT_FILE"
#: How often the loop rewrites the file, and how old it may be before the service counts as dead.
BEAT_INTERVAL_S = 5.0
MAX_AGE_S = 30.0

_READY = "ready"
_NOT_CONNECTED = "not-connected"


def heartbeat_file(env: Env) -> Path | None:
    """The heartbeat file a service's settings name, or None when heartbeats are off."""
    raw = env.string(HEARTBEAT_SETTING, "")
    return Path(raw) if raw else None


# A few bytes on a local file: a blocking call here costs microseconds, not worth a thread.
def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _write(path: Path, word: str) -> None:
    # Replaced whole, so a check never reads a half-written word.
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(f"{word}\n")
    partial.replace(path)


@contextlib.asynccontextmanager
async def heartbeat(path: Path | None, connected: Callable[[], bool]) -> AsyncIterator[None]:
    """Rewrite ``path`` every few seconds while the block runs (nothing when ``path`` is None).

    ``connected`` is asked at each beat; its answer is the word a readiness check looks for.
    """
    if path is None:
        yield
        return

    async def beat() -> None:
        while True:
            _write(path, _READY if connected() else _NOT_CONNECTED)
            await asyncio.sleep(BEAT_INTERVAL_S)

    try:
        async with in_background(beat()):
            yield
    finally:
        # A stopped service must not look alive to a check that runs before the container ends.
        _remove(path)


def heartbeat_problem(path: Path, *, need_ready: bool, max_age_s: float = MAX_AGE_S) -> str | None:
    """Why the heartbeat at ``path`` is not healthy, or None when it is."""
    try:
        age = time.time() - path.stat().st_mtime
        word = path.read_text().strip()
    except FileNotFoundError:
        return f"no heartbeat at {path} yet (still starting, or the service has stopped)"
    if age > max_age_s:
        return f"heartbeat at {path} is {age:.0f} s old: the service's event loop is stuck or dead"
    if need_ready and word != _READY:
        return f"the service is alive but not ready ({word}): its NATS connection is down"
    return None


def http_problem(url: str, timeout_s: float = 3.0) -> str | None:
    """Why ``url`` does not answer 200, or None when it does."""
    if not url.startswith(("http://", "https://")):
        return f"not an http url: {url}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (checked)
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} does not answer: {exc}"
    return None if status == 200 else f"{url} answered {status}"  # noqa: PLR2004


def main(argv: list[str] | None = None) -> int:
    """Check one service's health; exit status 0 when healthy."""
    parser = argparse.ArgumentParser(
        prog="python -m shared.observability.health", description=__doc__
    )
    parser.add_argument("--url", help="check this URL answers 200 instead of a heartbeat")
    parser.add_argument(
        "--live", action="store_true", help="only that the loop beats (liveness), not readiness"
    )
    parser.add_argument("--file", help=f"heartbeat file (default: ${HEARTBEAT_SETTING})")
    args = parser.parse_args(argv)
    if args.url:
        problem = http_problem(args.url)
    else:
        file = args.file or os.environ.get(HEARTBEAT_SETTING, "")
        if not file:
            sys.stderr.write(f"no heartbeat file: set {HEARTBEAT_SETTING} or pass --file\n")
            return 1
        problem = heartbeat_problem(Path(file), need_ready=not args.live)
    if problem is not None:
        sys.stderr.write(f"unhealthy: {problem}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
