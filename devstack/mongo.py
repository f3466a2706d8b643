"""The customer MongoDB: SecantusDB, where mongo-provisioner makes one user and database per tenant.

SecantusDB (the ``secantusdb`` wheel) speaks the MongoDB wire protocol with SCRAM-SHA-256 and
roles. Unlike mongod it has no localhost exception: a fresh ``--auth`` server refuses even the
first ``createUser``. So the first ``init`` runs it once WITHOUT ``--auth`` on a throwaway port
(127.0.0.1 only), creates the root user, stops it and leaves a marker; every real start uses
``--auth`` on the tenant address (``devstack.network``). It runs through ``devstack.secantusd``,
which closes the authorisation gaps of 0.7.0b3 (see that module) before starting the unchanged
server.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from devstack.network import tenant_host
from devstack.procs import DevstackError, free_ports, wait_until
from devstack.servers import Server

if TYPE_CHECKING:
    from pymongo import MongoClient

    from devstack.profile import Profile, Secrets

NAME = "mongo"
ROOT_USER = "root"
#: WiredTiger's cache; the default (1G) is far more than a dev box should give it.
CACHE_SIZE = "64M"
#: PBKDF2 iterations of each tenant's SCRAM-SHA-256 verifier: mongod's least, not its default
#: 15,000. The passwords are 192 random bits, which no iteration count makes any harder to
#: guess; each 10,000 iterations cost the server 2.3 ms of CPU per create (docs/adr/0038).
SCRAM_ITERATIONS = 5000
_BOOTSTRAP_TIMEOUT_S = 30.0
_STOP_POKE_INTERVAL_S = 0.05


def secantusdb_installed() -> None:
    """Check this interpreter can import SecantusDB (``devstack.secantusd`` runs it in-process).

    Raises:
        DevstackError: the wheel is not installed in this environment.
    """
    if importlib.util.find_spec("secantus") is None:
        msg = "SecantusDB not installed; run scripts/setup.sh (wheel secantusdb)"
        raise DevstackError(msg)


def _root_client(
    host: str, port: int, password: str | None, timeout_ms: int
) -> MongoClient[dict[str, Any]]:
    """A pymongo client for the server at ``host:port`` (root when a password is given)."""
    import pymongo  # noqa: PLC0415 (devstack is stdlib-only at import time)

    login = "" if password is None else f"{ROOT_USER}:{quote(password, safe='')}@"
    return pymongo.MongoClient(
        f"mongodb://{login}{host}:{port}/?authSource=admin",
        directConnection=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms, 5000),
    )


class SecantusServer(Server):
    """``secantusd-py --auth`` on every interface; the root user is made at first init."""

    label = "mongodb (secantusdb)"

    def __init__(
        self,
        name: str,
        *,
        data_dir: Path,
        run_dir: Path,
        log_path: Path,
        port: int,
        root_password: str,
    ) -> None:
        """Describe the server; ``init`` bootstraps it, ``start`` runs it."""
        super().__init__(name, log_path=log_path, pid_path=run_dir / f"{name}.pid")
        self.data_dir = data_dir
        self.port = port
        self.root_password = root_password
        # Passing --config turns off SecantusDB's search of ./, ~/.secantus and /etc/secantus,
        # so a stray secantusd.toml can never change (or un-secure) this server.
        self.config_path = run_dir / f"{name}.toml"
        self.marker = data_dir / ".spinup-root-created"

    @property
    def storage_path(self) -> Path:
        """WiredTiger's home directory."""
        return self.data_dir / "wt"

    def _argv(self, port: int, *, auth: bool) -> list[str]:
        secantusdb_installed()
        return [
            sys.executable,
            "-m",
            "devstack.secantusd",
            "--config",
            str(self.config_path),
            "--host",
            _listen_host(auth=auth),
            "--port",
            str(port),
            "--storage-path",
            str(self.storage_path),
            "--cache-size",
            CACHE_SIZE,
            "--log-level",
            "INFO",
            "--setParameter",
            f"scramSHA256IterationCount={SCRAM_ITERATIONS}",
            *(["--auth"] if auth else []),
        ]

    def _spawn(self, port: int, *, auth: bool) -> None:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("# Every setting is a flag: see devstack/mongo.py.\n")
        self.spawn(self._argv(port, auth=auth), cwd=self.data_dir)

    def needs_init(self) -> bool:
        """Return whether the root user has not been created yet."""
        return not self.marker.exists()

    def init(self) -> bool:
        """Create the root user on a server without auth, once; True if it ran.

        Raises:
            DevstackError: the bootstrap server did not start or refused the user.
        """
        if self.marker.exists():
            return False
        self.storage_path.mkdir(parents=True, exist_ok=True)
        # A throwaway port: nothing that expects the real one can reach a server without auth.
        bootstrap_port = free_ports(1)[0]
        self._spawn(bootstrap_port, auth=False)
        try:
            self._create_root(bootstrap_port)
        finally:
            self._stop_fast(_listen_host(auth=False), bootstrap_port)
        self.marker.write_text("root user created\n")
        return True

    def _create_root(self, port: int) -> None:
        from pymongo.errors import OperationFailure, PyMongoError  # noqa: PLC0415

        user_exists = 51003  # an earlier bootstrap died after createUser: set the password again
        wait_until(
            lambda: _pings(_listen_host(auth=False), port, None),
            timeout=_BOOTSTRAP_TIMEOUT_S,
            what=f"{self.label} (bootstrap)",
            alive=self.is_running,
            log=self.log_path,
        )
        client = _root_client(_listen_host(auth=False), port, None, 5000)
        try:
            admin = client.admin
            try:
                admin.command(
                    "createUser",
                    ROOT_USER,
                    pwd=self.root_password,
                    roles=[{"role": "root", "db": "admin"}],
                    mechanisms=["SCRAM-SHA-256"],
                )
            except OperationFailure as exc:
                if exc.code != user_exists:
                    raise
                admin.command("updateUser", ROOT_USER, pwd=self.root_password)
        except PyMongoError as exc:
            msg = f"{self.label}: creating the root user failed ({type(exc).__name__})"
            raise DevstackError(msg) from exc
        finally:
            client.close()

    def start(self) -> None:
        """Start the server with ``--auth`` in the foreground."""
        self.reap_stale()
        self._spawn(self.port, auth=True)

    def ready(self) -> bool:
        """Return whether root can authenticate and ``ping``."""
        return _pings(_listen_host(auth=True), self.port, self.root_password)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server in well under a second instead of two.

        On SIGTERM SecantusDB closes its listening socket from the signal handler, but on Linux
        that does not wake the thread blocked in ``accept()``, so it waits 2 s for that thread
        before closing storage. One connection attempt wakes it; it then sees the stop flag.
        """
        self._stop_fast(_listen_host(auth=True), self.port, timeout)

    def _stop_fast(self, host: str, port: int, timeout: float = 15.0) -> None:
        done = threading.Event()
        poker = threading.Thread(target=_poke_until_closed, args=(host, port, done), daemon=True)
        if self.is_running():
            poker.start()
        try:
            super().stop(timeout)
        finally:
            done.set()
            if poker.is_alive():
                poker.join()


def _pings(host: str, port: int, password: str | None) -> bool:
    """Whether the server at ``host:port`` answers ``ping`` (as root when a password is given)."""
    from pymongo.errors import PyMongoError  # noqa: PLC0415

    try:
        with socket.create_connection((host, port), timeout=0.5):
            pass
    except OSError:
        return False
    client = _root_client(host, port, password, 1000)
    try:
        client.admin.command("ping")
    except PyMongoError:
        return False
    finally:
        client.close()
    return True


def _poke_until_closed(host: str, port: int, done: threading.Event) -> None:
    """Connect to ``port`` every few ms until it refuses (the listener is gone) or ``done``."""
    while not done.is_set():
        try:
            with socket.create_connection((host, port), timeout=0.5):
                pass
        except OSError:
            return
        done.wait(_STOP_POKE_INTERVAL_S)


def _listen_host(*, auth: bool) -> str:
    """The tenant address (SecantusDB binds one); loopback for the bootstrap start without auth."""
    return tenant_host() if auth else "127.0.0.1"


def make_server(profile: Profile, secrets: Secrets) -> SecantusServer:
    """The one SecantusDB of a stack, on ``profile.ports.mongo``."""
    return SecantusServer(
        NAME,
        data_dir=profile.data_dir / NAME,
        run_dir=profile.run_dir,
        log_path=profile.logs_dir / f"{NAME}.log",
        port=profile.ports.mongo,
        root_password=secrets.mongo_root,
    )


def worker_env(profile: Profile, secrets: Secrets) -> dict[str, str]:
    """mongo-provisioner's root URL and the address tenants are given."""
    port = profile.ports.mongo
    return {
        "SPINUP_MONGO_ADMIN_URL": (
            f"mongodb://{ROOT_USER}:{secrets.mongo_root}@{tenant_host()}:{port}/?authSource=admin"
        ),
        "SPINUP_MONGO_HOST": tenant_host(),
        "SPINUP_MONGO_PORT": str(port),
    }
