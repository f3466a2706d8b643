"""Child processes that run in their own process group, log to a file and never outlive a stop.

Each process is started in a new session, so a Ctrl-C in the terminal reaches only the
supervisor, which then stops the children in order, and a stop can signal the whole group
(Postgres backends, anything a service forked). A pid file beside the data lets the next run
find and end what a crashed supervisor left behind, by pid, only if it is still the same program.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence


_POLL_INTERVAL_S = 0.05
# The line ``spawn`` writes into a log before each start, so a tail can show only the last run.
_START_MARKER = "--- devstack:"
# Index of starttime among the /proc/<pid>/stat fields that follow the command name.
_STARTTIME = 19


class DevstackError(RuntimeError):
    """A server or service could not be set up, started or stopped."""


def tail(path: Path, lines: int = 20, width: int = 400) -> str:
    """Return the last ``lines`` lines of a log since its last start, each cut to ``width``."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    marker = text.rfind(_START_MARKER)
    last = text[max(marker, 0) :].splitlines()[-lines:]
    return "\n".join(line if len(line) <= width else line[:width] + " …" for line in last)


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    alive: Callable[[], bool] | None = None,
    log: Path | None = None,
) -> None:
    """Poll ``check`` until it is true; fail early if ``alive`` turns false.

    Raises:
        DevstackError: the timeout passed or the process died; the message has the log's tail.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if alive is not None and not alive():
            msg = f"{what} exited during start-up"
            break
        if time.monotonic() > deadline:
            msg = f"{what} not ready after {timeout:.0f} s"
            break
        time.sleep(_POLL_INTERVAL_S)
    if log is not None:
        msg += f"; last lines of {log}:\n{tail(log)}"
    raise DevstackError(msg)


#: How far above its port a paired server opens its second listener (SeaweedFS's gRPC).
PAIR_OFFSET = 10000


def free_port_pairs(count: int, *, offset: int = PAIR_OFFSET, below: int = 55536) -> list[int]:
    """Return ``count`` ports ``p`` under ``below`` with both ``p`` and ``p + offset`` free.

    For servers that open a second listener at a fixed offset (SeaweedFS: gRPC at port + 10000).
    Both stay below the kernel's ephemeral range when there is room: between this choice and the
    server's start, the other servers' clients open connections whose local ports come from that
    range, and one took a gRPC port that was free when it was chosen.
    """
    below = min(below, max(_ephemeral_start(), 20000 + offset + 2000))
    chosen: list[int] = []
    candidate = random.randrange(20000, below - offset - 1000)  # noqa: S311 (not security)
    while len(chosen) < count:
        candidate += 1
        if candidate >= below - offset:
            candidate = 20000
        if candidate in chosen or candidate + offset in chosen:
            continue
        if _bindable(candidate) and _bindable(candidate + offset):
            chosen.append(candidate)
    return chosen


def free_ports(count: int, *, avoid: Collection[int] = ()) -> list[int]:
    """Return ``count`` TCP ports free on 127.0.0.1 now, below the kernel's ephemeral range.

    Below it, because a listener starts some time after the choice, and meanwhile clients open
    connections whose local ports come from that range: one took customer NATS's port on the
    engine bridge before it bound it, and a stack's metrics ports the same way. ``avoid``: ports
    already promised to servers that have not bound them yet.
    """
    below = max(_ephemeral_start(), 21000)
    chosen: list[int] = []
    candidate = random.randrange(20000, below - 1)  # noqa: S311 (not security)
    while len(chosen) < count:
        candidate += 1
        if candidate >= below:
            candidate = 20000
        if candidate in chosen or candidate in avoid:
            continue
        if _bindable(candidate):
            chosen.append(candidate)
    return chosen


def _ephemeral_start() -> int:
    """The first local port the kernel gives outgoing connections (Linux default: 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Return whether something accepts TCP connections on ``host:port``."""
    with (
        contextlib.suppress(OSError),
        socket.create_connection((host, port), timeout=0.5),
    ):
        return True
    return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """Return whether a GET of ``url`` answers 200."""
    if not url.startswith(("http://", "https://")):
        msg = f"not an http url: {url}"
        raise ValueError(msg)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http only)
            return int(response.status) == HTTPStatus.OK
    except (urllib.error.URLError, OSError, ValueError):
        return False


def stat_fields(pid: int) -> list[str]:
    """Return the fields of /proc/<pid>/stat after the command name ([] if no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat.rpartition(")")[2].split()


#: ``/proc/net/tcp`` states (``include/net/tcp_states.h``).
TCP_ESTABLISHED = "01"
TCP_LISTEN = "0A"
_SOCKET_LINK = re.compile(r"socket:\[(\d+)\]")


def tcp_sockets(state: str) -> dict[int, list[tuple[str, int]]]:
    """Socket inode -> its local (address, port), for every TCP socket in ``state`` here."""
    found: dict[int, list[tuple[str, int]]] = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != state:
                continue
            raw, port = fields[1].split(":")
            found.setdefault(int(fields[9]), []).append((_address(raw, width), int(port, 16)))
    return found


def _address(raw: str, width: int) -> str:
    if width == 8:  # noqa: PLR2004  (an IPv4 address: 8 hex digits, little-endian)
        return ".".join(str(int(raw[i : i + 2], 16)) for i in range(6, -1, -2))
    return f"[{raw}]"  # IPv6, shown raw


def socket_inodes(pids: list[int]) -> set[int]:
    """The inodes of every socket the processes ``pids`` hold open now."""
    inodes = set()
    for pid in pids:
        try:
            links = [link.readlink() for link in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue  # ended while we looked
        inodes |= {int(m.group(1)) for link in links if (m := _SOCKET_LINK.match(str(link)))}
    return inodes


def _identity(pid: int) -> str | None:
    """Return ``pid``'s start time (clock ticks since boot): with the pid, a unique identity."""
    fields = stat_fields(pid)
    # After ")": state is field 3 of stat(5), starttime field 22.
    if len(fields) <= _STARTTIME or fields[0] == "Z":
        return None
    return fields[_STARTTIME]


def process_alive(pid: int) -> bool:
    """Return whether ``pid`` exists and is no zombie (also for processes not our children)."""
    fields = stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def pidfile_alive(pid_path: Path) -> int | None:
    """Return the pid recorded in ``pid_path`` if that very process still runs, else None.

    The file holds the pid and the process' start time, so a reused pid never matches.
    """
    try:
        pid_text, started = pid_path.read_text().split()[:2]
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if _identity(pid) == started else None


class ManagedProcess:
    """One long-running child process in its own process group, logging to ``log_path``."""

    #: The signal that asks the program to shut down cleanly.
    stop_signal: signal.Signals = signal.SIGTERM

    def __init__(self, name: str, *, log_path: Path, pid_path: Path) -> None:
        """Describe the process; nothing runs until ``spawn``."""
        self.name = name
        self.log_path = log_path
        self.pid_path = pid_path
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The pid of the running process (also its process-group id), else None."""
        return self._popen.pid if self._popen is not None else None

    def is_running(self) -> bool:
        """Return whether the process was started and has not exited."""
        return self._popen is not None and self._popen.poll() is None

    def returncode(self) -> int | None:
        """Return the exit status once exited (negative: killed by that signal), else None."""
        return self._popen.poll() if self._popen is not None else None

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> None:
        """Start ``argv`` in a new session with stdout and stderr appended to the log.

        Raises:
            DevstackError: the process is already running.
        """
        if self.is_running():
            msg = f"{self.name} is already running (pid {self.pid})"
            raise DevstackError(msg)
        self.reap_stale()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"--- devstack: {stamp} starting {self.name}: {' '.join(argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                user=user,
                group=user,
                extra_groups=[] if user is not None else None,
            )
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        started = _identity(self._popen.pid) or "?"
        self.pid_path.write_text(f"{self._popen.pid} {started}\n")

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the process to exit, wait up to ``timeout``, then kill its whole process group."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(self.stop_signal)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(popen.pid, signal.SIGKILL)
                popen.wait()
        # Anything the program forked and left behind in its group.
        _signal_group(popen.pid, signal.SIGKILL)
        self.pid_path.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, for fault-injection tests)."""
        popen = self._popen
        if popen is None:
            return
        _signal_group(popen.pid, signal.SIGKILL)
        popen.wait()
        self.pid_path.unlink(missing_ok=True)

    def reap_stale(self, timeout: float = 15.0) -> None:
        """End a process a previous, crashed supervisor left behind (found by its pid file)."""
        pid = pidfile_alive(self.pid_path)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, self.stop_signal)
            deadline = time.monotonic() + timeout
            while process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            _signal_group(pid, signal.SIGKILL)
        self.pid_path.unlink(missing_ok=True)
