"""One byte back and forth between two processes over loopback TCP: wall time and each side's CPU.

    python3 bench/results/wakeups/pingpong.py same|apart|free

``same``: both processes pinned to core 0; ``apart``: client on core 0, server on core 1;
``free``: where the scheduler puts them. A record of how README.md's figures were taken.
"""

import os
import resource
import socket
import sys
import time

N = 20_000
WARM = 1_000


def cpu_us(pid: int) -> tuple[float, float]:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) * 1e6 / tick, int(fields[12]) * 1e6 / tick


def main() -> None:
    mode = sys.argv[1]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    server = os.fork()
    if server == 0:
        if mode == "same":
            os.sched_setaffinity(0, {0})
        elif mode == "apart":
            os.sched_setaffinity(0, {1})
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := conn.recv(64):
            conn.sendall(data)
        os._exit(0)
    if mode in ("same", "apart"):
        os.sched_setaffinity(0, {0})
    client = socket.create_connection(("127.0.0.1", port))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(WARM):
        client.sendall(b"x")
        client.recv(64)
    mine, theirs = resource.getrusage(resource.RUSAGE_SELF), cpu_us(server)
    began = time.perf_counter()
    for _ in range(N):
        client.sendall(b"x")
        client.recv(64)
    wall = time.perf_counter() - began
    mine_after, theirs_after = resource.getrusage(resource.RUSAGE_SELF), cpu_us(server)
    client.close()
    os.waitpid(server, 0)
    print(
        f"{mode:5}  round trip {wall * 1e6 / N:6.1f} us wall;"
        f" client user {(mine_after.ru_utime - mine.ru_utime) * 1e6 / N:5.1f}"
        f" sys {(mine_after.ru_stime - mine.ru_stime) * 1e6 / N:5.1f} us;"
        f" server user {(theirs_after[0] - theirs[0]) / N:5.1f}"
        f" sys {(theirs_after[1] - theirs[1]) / N:5.1f} us"
    )


main()
