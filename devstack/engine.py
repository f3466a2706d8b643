"""The container engine stacks run on: Debian's ``dockerd``, and base images made from Debian.

The engine belongs to the machine, not to one profile: ``make run``, ``make test`` and every test
stack share it, as they would share a system service. ``ensure_engine`` starts ``dockerd`` only
when nothing answers on the engine socket, detached, logging under ``.spinup/engine/``; it keeps
running after a stack stops, like the image cache it holds (``python -m devstack engine-stop``
ends it). Each profile labels what it makes with ``scope_label(profile)``, so a profile's stop
removes its own containers and nothing of anyone else's.

Before it starts ``dockerd`` it installs the stack deployer's deny-by-default egress chains
(``stack_deployer.firewall``), so no stack container the engine restarts can reach anything
before its deployer is back; and it starts ``dockerd`` with user-namespace remapping, so root in
a container is an unprivileged user on the host (docs/adr/0018-containment.md).

No registry is reachable, so no image is pulled: ``ensure_base_image`` builds
``spinup/base:<digest>`` with ``debootstrap`` from the machine's configured Debian mirror (about
45 s the first time, then cached in the engine) and tags it ``spinup/base:bookworm``, the tag the
examples and the service Dockerfiles start ``FROM``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.procs import DevstackError, tail, wait_until
from devstack.servers import Server

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devstack.profile import Profile, Secrets

#: The engine's API socket when ``DOCKER_HOST`` does not name another.
DEFAULT_SOCKET = "/var/run/docker.sock"

#: The tag every Dockerfile of this repository and of ``examples/`` builds ``FROM``.
BASE_IMAGE = "spinup/base:bookworm"
#: Debian release and packages of the base image: Python with the drivers the examples use.
BASE_SUITE = "bookworm"
BASE_PACKAGES = (
    "ca-certificates",
    "python3",
    "python3-venv",
    "python3-psycopg2",
    "python3-redis",
    # pg_dump and pg_restore: pg-provisioner's fork (ADR 0028); psql for tenants' builds too.
    "postgresql-client",
)
#: Label on every container, network and image a profile's stack deployer makes.
SCOPE_LABEL = "io.spinup.scope"

_START_TIMEOUT_S = 60.0


@contextlib.contextmanager
def _machine_lock(name: str) -> Iterator[None]:
    """Held by one process of the machine at a time, whichever checkout it runs from.

    The engine and its images are the machine's: two stacks starting at once (make test's two
    groups, two checkouts) must start one ``dockerd`` and build the base image once.
    """
    with (Path(tempfile.gettempdir()) / f"spinup-{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# `deb <uri> <suite>...`: a sources.list line names at least a URI and a suite.
_DEB_LINE_WORDS = 3


def socket_path() -> str:
    """The engine's unix socket: ``DOCKER_HOST`` when it names one, otherwise the default."""
    host = os.environ.get("DOCKER_HOST", "")
    return host.removeprefix("unix://") if host.startswith("unix://") else DEFAULT_SOCKET


def docker_host() -> str:
    """``DOCKER_HOST`` for the services and the docker CLI."""
    return f"unix://{socket_path()}"


def engine_answers(path: str | None = None) -> bool:
    """True when an engine answers ``GET /_ping`` on its socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2.0)
            conn.connect(path or socket_path())
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status_line = conn.recv(64).split(b"\r\n", 1)[0]
    except OSError:
        return False
    return b" 200 " in status_line + b" "


def engine_dir(root: Path) -> Path:
    """Where the engine's log and pid file live (``.spinup/engine``)."""
    return root / ".spinup" / "engine"


def ensure_engine(root: Path) -> None:
    """Make sure an engine answers, starting ``dockerd`` when none does.

    Raises:
        DevstackError: ``dockerd`` is not installed, this is not root, or it did not come up.
    """
    if engine_answers():
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        msg = "no container engine: install Debian's docker.io (make setup does) and retry"
        raise DevstackError(msg)
    if os.geteuid() != 0:
        msg = (
            f"no container engine answers on {socket_path()} and dockerd needs root: "
            "run `sudo systemctl start docker` (or `sudo dockerd &`) and retry"
        )
        raise DevstackError(msg)
    with _machine_lock("engine-start"):
        if not engine_answers():
            _start_dockerd(dockerd, engine_dir(root))


def _start_dockerd(dockerd: str, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "dockerd.log"
    install_egress_rules()
    argv = [
        dockerd,
        "--host",
        docker_host(),
        "--pidfile",
        str(directory / "dockerd.pid"),
        # Root in a container is an unprivileged user of the host (the deployer requires it).
        "--userns-remap=default",
    ]
    with log_path.open("ab") as log:
        # `setsid --fork` detaches dockerd and returns at once: the engine outlives the supervisor
        # that started it, like a system service, and no child of ours is left unwaited.
        subprocess.run(
            ["setsid", "--fork", *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            check=True,
        )
    try:
        wait_until(engine_answers, timeout=_START_TIMEOUT_S, what="dockerd to answer")
    except DevstackError as exc:
        msg = f"dockerd did not start; last lines of {log_path}:\n{tail(log_path)}"
        raise DevstackError(msg) from exc


def install_egress_rules() -> None:
    """The stack deployer's deny-by-default egress chains, before any stack container can start.

    Raises:
        DevstackError: the rules could not be installed (iptables missing, not root).
    """
    done = subprocess.run(
        [sys.executable, "-m", "stack_deployer.firewall"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        msg = f"stack egress rules not installed: {done.stderr.strip() or done.stdout.strip()}"
        raise DevstackError(msg)


def _started_engine(root: Path) -> int | None:
    """The pid of the ``dockerd`` an ``ensure_engine`` started on this socket, from any checkout.

    The engine belongs to the machine: another checkout's ``make run`` may have started the one
    this checkout uses. One that devstack did not start (a system service) is never named.
    """
    try:
        recorded = int((engine_dir(root) / "dockerd.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        recorded = None
    # A pidfile outlives its engine (a machine restart, a kill): trust it only while it names one.
    if recorded is not None and _is_our_engine(Path(f"/proc/{recorded}/cmdline")):
        return recorded
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        if _is_our_engine(entry):
            return int(entry.parent.name)
    return None


def _is_our_engine(cmdline: Path) -> bool:
    """Whether ``/proc/<pid>/cmdline`` is of a ``dockerd`` some checkout's devstack started."""
    try:
        argv = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    words = [word.decode(errors="replace") for word in argv if word]
    ours = engine_dir(Path()).as_posix() + "/dockerd.pid"
    return bool(
        words
        and Path(words[0]).name == "dockerd"
        and docker_host() in words
        and any(word.endswith(ours) for word in words)
    )


def stop_engine(root: Path) -> bool:
    """Stop a ``dockerd`` that ``ensure_engine`` started (True if there was one)."""
    pid = _started_engine(root)
    if pid is None:
        return False
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    return True


def docker_cli(*args: str, stdin: bytes | None = None) -> str:
    """Run the docker CLI against the engine; its standard output.

    Raises:
        DevstackError: the command failed (its stderr is the message).
    """
    completed = subprocess.run(
        ["docker", *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, "DOCKER_HOST": docker_host()},
        check=False,
    )
    if completed.returncode != 0:
        msg = f"docker {' '.join(args)}: {completed.stderr.decode(errors='replace').strip()}"
        raise DevstackError(msg)
    return completed.stdout.decode()


def _image_exists(tag: str) -> bool:
    try:
        docker_cli("image", "inspect", "--format", "{{.Id}}", tag)
    except DevstackError:
        return False
    return True


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (the only place packages come from)."""
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    listing = Path("/etc/apt/sources.list")
    if listing.exists():
        for line in listing.read_text().splitlines():
            words = line.split()
            if len(words) >= _DEB_LINE_WORDS and words[0] == "deb" and "security" not in words[1]:
                return words[1]
    return "http://deb.debian.org/debian"


def base_image_digest() -> str:
    """Names the base image's content: a change of suite or packages makes a new image."""
    recipe = " ".join((BASE_SUITE, *BASE_PACKAGES))
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def ensure_base_image(root: Path) -> str:
    """Build ``BASE_IMAGE`` from Debian packages unless the engine has it already; its tag.

    Raises:
        DevstackError: ``debootstrap`` failed (its log is named) or the engine refused the import.
    """
    versioned = f"spinup/base:{base_image_digest()}"
    with _machine_lock("base-image"):
        if not _image_exists(versioned):
            _build_base_image(engine_dir(root), versioned)
    if not _image_exists(BASE_IMAGE):
        docker_cli("tag", versioned, BASE_IMAGE)
    return BASE_IMAGE


def _build_base_image(directory: Path, versioned: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "debootstrap.log"
    with tempfile.TemporaryDirectory(dir=directory, prefix="rootfs-") as rootfs:
        argv = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            BASE_SUITE,
            rootfs,
            debian_mirror(),
        ]
        with log_path.open("wb") as log:
            done = subprocess.run(argv, stdout=log, stderr=log, check=False)
        if done.returncode != 0:
            msg = f"debootstrap failed; last lines of {log_path}:\n{tail(log_path)}"
            raise DevstackError(msg)
        # The apt lists and caches are of no use in an image that never runs apt offline.
        for cache in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for entry in (Path(rootfs) / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        archive = subprocess.run(
            ["tar", "-C", rootfs, "-c", "."],
            capture_output=True,
            check=True,
        ).stdout
    docker_cli(
        "import",
        "--change",
        'CMD ["/bin/sh"]',
        "--change",
        f"LABEL io.spinup.base={base_image_digest()}",
        "-",
        versioned,
        stdin=archive,
    )


def scope_label(profile: Profile) -> str:
    """The value of ``SCOPE_LABEL`` for one profile: its directory, hashed to a short name."""
    return hashlib.sha256(str(profile.directory.resolve()).encode()).hexdigest()[:16]


def remove_scope(scope: str, *, keep_images: bool = False) -> None:
    """Remove every container and network (and image, unless kept) labelled with ``scope``."""
    if not engine_answers():
        return
    selector = f"label={SCOPE_LABEL}={scope}"
    containers = docker_cli("ps", "-aq", "--filter", selector).split()
    if containers:
        docker_cli("rm", "-f", "-v", *containers)
    networks = docker_cli("network", "ls", "-q", "--filter", selector).split()
    if networks:
        docker_cli("network", "rm", *networks)
    if not keep_images:
        images = docker_cli("images", "-q", "--filter", selector).split()
        if images:
            docker_cli("rmi", "-f", *sorted(set(images)))


def stop_scope(scope: str) -> None:
    """Stop (keep) every container labelled with ``scope``: ``make run``'s Ctrl-C."""
    if not engine_answers():
        return
    running = docker_cli("ps", "-q", "--filter", f"label={SCOPE_LABEL}={scope}").split()
    if running:
        docker_cli("stop", "--time", "5", *running)


# --- the engine as the stack deployer's backend ----------------------------------------------

NAME = "container-engine"


class ContainerEngine(Server):
    """The machine's engine seen from one profile: "started" once the base image is there.

    Stopping it never stops ``dockerd``: ``make run``'s Ctrl-C stops the profile's containers
    (they start again with the next run), a throwaway profile removes its containers, networks
    and images, and so does the next start of a profile whose supervisor crashed.
    """

    label = "container engine"

    def __init__(self, profile: Profile) -> None:
        """Describe the engine for ``profile``; nothing runs until ``start``."""
        super().__init__(
            NAME,
            log_path=engine_dir(profile.root) / "dockerd.log",
            pid_path=profile.run_dir / f"{NAME}.pid",
        )
        self.port = 0
        self._root = profile.root
        self._scope = scope_label(profile)
        self._throwaway = profile.wipe
        self._started = False

    def start(self) -> None:
        """Start ``dockerd`` if nothing answers, then build the base image if it is missing."""
        ensure_engine(self._root)
        ensure_base_image(self._root)
        self._started = True

    def ready(self) -> bool:
        """True when the engine answers."""
        return engine_answers()

    def is_running(self) -> bool:
        """True once this profile has started it (the engine itself may serve others)."""
        return self._started and engine_answers()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """``start`` returns only once the engine answers."""
        wait_until(self.ready, timeout=timeout, what=self.label)

    def stop(self, timeout: float = 15.0) -> None:  # noqa: ARG002 - same signature as Server
        """Stop (``make run``) or remove (throwaway profiles) this profile's containers."""
        if self._throwaway:
            remove_scope(self._scope)
        else:
            stop_scope(self._scope)
        self._started = False

    def kill(self) -> None:
        """As ``stop``: the engine is not this profile's to kill."""
        self.stop()

    def reap_stale(self, timeout: float = 15.0) -> None:  # noqa: ARG002
        """A crashed throwaway run's containers go before a new one starts."""
        if self._throwaway:
            remove_scope(self._scope)


def make_server(profile: Profile, secrets: Secrets) -> Server:  # noqa: ARG001 - module protocol
    """The engine, for ``devstack.backends``."""
    return ContainerEngine(profile)


def worker_env(profile: Profile, secrets: Secrets) -> dict[str, str]:  # noqa: ARG001
    """The stack deployer's settings: where the engine is, and the label of this profile."""
    return {
        "DOCKER_HOST": docker_host(),
        "SPINUP_STACK_SCOPE": scope_label(profile),
        "SPINUP_STACK_BASE_IMAGE": BASE_IMAGE,
        # The customer servers listen on this machine: containers reach it by this name.
        "SPINUP_STACK_LOOPBACK_ALIAS": "host.docker.internal",
    }
