"""Command line: ``python -m devstack run|env|status|clean``."""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.procs import DevstackError, tail
from devstack.profile import SPINUP_DIR
from devstack.stack import REPO_ROOT, Progress, Stack, running_processes

if TYPE_CHECKING:
    from types import FrameType

# A service that keeps dying is restarted this many times (waiting 1, 2, 4, 8, 8 s), then we stop.
_MAX_RESTARTS = 5
_MAX_BACKOFF_S = 8
_WATCH_INTERVAL_S = 0.5


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


class _PrintProgress(Progress):
    def begin(self, action: str) -> None:
        _out(f"{action}… ")

    def end(self, outcome: str) -> None:
        _out(f"{outcome}\n")


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _banner(stack: Stack) -> str:
    url = stack.gateway_url
    logs = _relative(stack.logs_dir)
    # Prometheus targets: the gateway's own port, and one port per worker and the reaper.
    scrape = "\n         ".join(f"{url}  ({name})" for name, url in stack.metrics_urls.items())
    return (
        "\nSpinup is running.\n"
        f"  API    {url}  (OpenAPI: {url}/schema)\n"
        f"  try    curl -s -X POST {url}/db/new   (or /cache /nosql /queue /storage /webhook)\n"
        f"  stacks curl -s -F spinup.yaml=@spinup.yaml -F web.tar=@web.tar {url}/stacks/new\n"
        f"  apps   {stack.content_url}  (stack apps and webhook receivers, ADR 0067)\n"
        f"  logs   {logs}/  (e.g. tail -f {logs}/gateway.log)\n"
        f"  scrape {scrape}\n"
        f'  env    eval "$({_relative(Path(sys.executable))} -m devstack env)"\n'
        "Ctrl-C to stop.\n\n"
    )


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    # Later signals are ignored so a second Ctrl-C cannot cut the orderly stop short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _out(f"\n{signal.Signals(signum).name}: stopping…\n")
    raise KeyboardInterrupt


def _restart(stack: Stack, name: str, restarts: dict[str, int]) -> bool:
    """Restart a dead service after a backoff; False when it has died too often."""
    service = stack.services[name]
    _out(f"\n{name} exited (status {service.returncode()}); last lines of {service.log_path}:\n")
    _out(tail(service.log_path) + "\n\n")
    restarts[name] = restarts.get(name, 0) + 1
    if restarts[name] > _MAX_RESTARTS:
        _out(f"{name} died {_MAX_RESTARTS + 1} times: giving up.\n")
        return False
    delay = min(2 ** (restarts[name] - 1), _MAX_BACKOFF_S)
    _out(f"restarting {name} in {delay} s ({restarts[name]}/{_MAX_RESTARTS})\n")
    time.sleep(delay)
    try:
        stack.start_service(name)
    except DevstackError as exc:
        _out(f"{exc}\n")
    return True


def _watch(stack: Stack) -> int:
    """Keep the stack up until a signal; restart dead services; stop if a server dies."""
    restarts: dict[str, int] = {}
    while True:
        time.sleep(_WATCH_INTERVAL_S)
        for server in stack.servers.values():
            if not server.is_running():
                _out(f"\n{server.label} exited; last lines of {server.log_path}:\n")
                _out(tail(server.log_path) + "\n")
                return 1
        for name, service in stack.services.items():
            if not service.is_running() and not _restart(stack, name, restarts):
                return 1


def run() -> int:
    """Start the dev stack in the foreground until Ctrl-C or SIGTERM."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    stack = Stack.for_dev(progress=_PrintProgress())
    try:
        stack.start()
        _out(_banner(stack))
        return _watch(stack)
    except DevstackError as exc:
        _out(f"\nerror: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()


def env() -> int:
    """Print the dev stack's service environment as ``export K=V`` lines."""
    for key, value in Stack.for_dev().env().items():
        _out(f"export {key}={shlex.quote(value)}\n")
    return 0


def status() -> int:
    """List what is still running; exit 1 if anything is."""
    found = running_processes()
    for line in found:
        _out(f"running: {line}\n")
    if not found:
        _out("nothing running\n")
    return 1 if found else 0


def clean() -> int:
    """Delete ``.spinup`` (all profiles' data, logs, secrets) unless something still runs."""
    found = running_processes()
    if found:
        _out("refusing to clean: still running:\n" + "".join(f"  {line}\n" for line in found))
        return 1
    target = REPO_ROOT / SPINUP_DIR
    if target.exists():
        shutil.rmtree(target)
        _out(f"removed {target}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command."""
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    commands = {"run": run, "env": env, "status": status, "clean": clean}
    parser.add_argument("command", choices=commands, help="what to do")
    args = parser.parse_args(argv)
    return commands[args.command]()


if __name__ == "__main__":
    sys.exit(main())
