"""What one message between two processes costs this machine: a loopback ping-pong.

    .venv/bin/python -m bench.pingpong [same|apart|free] [--count N]

One byte goes back and forth over loopback TCP between this process and a child, ``count``
times: the wall time and each side's CPU per round trip. ``same`` pins both to core 0,
``apart`` puts them on cores 0 and 1, ``free`` (the default) leaves them to the scheduler, as
the stack's processes are. On the bench's VM a round trip to a process that sleeps on the
other core cost about three times the CPU of one on the same core (bench/README.md, "What one
message costs"), and every create sends a dozen messages, so each run records the ``free``
figure with its machine (``bench.machine``): a host slower at it makes every row slower.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from typing import Any

from devstack.procs import stat_fields

COUNT = 5_000
_WARM = 500
#: Where each side runs, by placement: (client cores, server cores); None leaves it as it is.
_PLACEMENTS: dict[str, tuple[set[int] | None, set[int] | None]] = {
    "same": ({0}, {0}),
    "apart": ({0}, {1}),
    "free": (None, None),
}


def _cpu_s(pid: int) -> float:
    """User and system CPU seconds ``pid`` has used."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(placement: str = "free", count: int = COUNT) -> dict[str, Any]:
    """Round trips between this process and a forked echo server, timed; microseconds each."""
    client_cores, server_cores = _PLACEMENTS[placement]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    server = os.fork()
    if server == 0:  # the echo side: answers every byte until the client closes
        if server_cores is not None:
            os.sched_setaffinity(0, server_cores)
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := conn.recv(64):
            conn.sendall(data)
        os._exit(0)
    listener_port = listener.getsockname()[1]
    listener.close()
    if client_cores is not None:
        os.sched_setaffinity(0, client_cores)
    client = socket.create_connection(("127.0.0.1", listener_port))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for _ in range(_WARM):
            client.sendall(b"x")
            client.recv(64)
        mine, theirs = resource.getrusage(resource.RUSAGE_SELF), _cpu_s(server)
        began = time.perf_counter()
        for _ in range(count):
            client.sendall(b"x")
            client.recv(64)
        wall = time.perf_counter() - began
        mine_after, theirs_after = resource.getrusage(resource.RUSAGE_SELF), _cpu_s(server)
    finally:
        client.close()
        os.waitpid(server, 0)
    client_cpu = (mine_after.ru_utime - mine.ru_utime) + (mine_after.ru_stime - mine.ru_stime)
    server_cpu = theirs_after - theirs
    return {
        "placement": placement,
        "round_trip_us": round(wall * 1e6 / count, 1),
        "cpu_us": round((client_cpu + server_cpu) * 1e6 / count, 1),
    }


def measure_in_a_process(timeout_s: float = 30.0) -> dict[str, Any]:
    """``measure()`` in a process of its own: it forks, which a process running threads must not."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.pingpong", "--json"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> None:
    """Measure one placement and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("placement", nargs="?", default="free", choices=sorted(_PLACEMENTS))
    parser.add_argument("--count", type=int, default=COUNT)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    result = measure(args.placement, args.count)
    if args.json:
        print(json.dumps(result))  # noqa: T201
    else:
        print(  # noqa: T201
            f"{result['placement']:5}  round trip {result['round_trip_us']:6.1f} us wall,"
            f" {result['cpu_us']:5.1f} us of CPU for both sides"
        )


if __name__ == "__main__":
    main()
