"""The whole local stack: the real servers and the Spinup services, started and stopped in order.

    with Stack.for_tests(root) as stack:        # fresh data, free ports
        httpx.post(f"{stack.gateway_url}/db/new")

Start order: platform Postgres, Redis, NATS, then each backend's server (``devstack.backends``),
then each backend's worker, the reaper and the gateway; each must pass its readiness check before
the next starts. Stop is the reverse order, and a stop always ends every process group it started.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

from devstack import seaweed
from devstack.backends import BACKENDS
from devstack.engine import ensure_engine
from devstack.procs import (
    DevstackError,
    ManagedProcess,
    free_ports,
    pidfile_alive,
    port_open,
)
from devstack.profile import ROOMY_FACTOR, SPINUP_DIR, Ports, Profile, Secrets
from devstack.servers import (
    AppDatabase,
    NatsServer,
    PostgresCluster,
    RedisServer,
    Server,
)
from devstack.services import SERVICES, ServiceProcess, ServiceSpec

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from types import TracebackType

_log = logging.getLogger("devstack")

#: The repository this package lives in.
REPO_ROOT = Path(__file__).resolve().parent.parent

_NATS_USER = "spinup"
_PLATFORM_ROLE = "spinup"
_PLATFORM_DB = "spinup"
#: The platform cluster's connection budget (Postgres' default is 100), shared with compose.
PLATFORM_MAX_CONNECTIONS = 300


class Progress:
    """Receives start/stop steps. This default logs each finished step; the CLI prints them."""

    _action = ""

    def begin(self, action: str) -> None:
        """Note that a step starts, e.g. ``starting platform postgres``."""
        self._action = action

    def end(self, outcome: str) -> None:
        """Report how the step ended, e.g. ``ok (0.9 s)`` or ``failed``."""
        _log.info("%s… %s", self._action, outcome)


class Stack:
    """Servers and services of one profile (``dev`` for ``make run``, ``test`` for pytest).

    Attributes:
        profile: directory, ports and settings of this stack.
        secrets: generated passwords and keys (``<profile>/secrets.json``).
        servers: ``platform-pg``, ``redis``, ``nats``, then the backends' servers, in start order.
        services: the backends' workers, then ``reaper`` and ``gateway``, in start order.
        service_env_overrides: added to every service environment from the next service start.
        extra_gateways: gateways started by ``start_extra_gateway``, by name.
        extra_workers: worker replicas started by ``start_extra_worker``, by log name.
    """

    def __init__(
        self,
        profile: Profile,
        *,
        progress: Progress | None = None,
        python: str | None = None,
    ) -> None:
        """Describe the stack; nothing starts until ``start`` (or ``with``).

        ``python`` runs the services (default: the interpreter running this code).
        """
        self.profile = profile
        self.progress = progress or Progress()
        self.python = python or sys.executable
        secrets_path = profile.directory / "secrets.json"
        self.secrets = Secrets() if profile.wipe else Secrets.load_or_create(secrets_path)
        self.service_env_overrides: dict[str, str] = dict(profile.overrides)
        self.extra_gateways: dict[str, ServiceProcess] = {}
        self.extra_workers: dict[str, ServiceProcess] = {}
        self._lock: IO[str] | None = None
        self._wiped = False
        self.servers: dict[str, Server] = self._make_servers()
        specs = {backend.worker: backend.worker_spec for backend in BACKENDS} | SERVICES
        metrics_ports = _metrics_ports(profile, [name for name in specs if name != "gateway"])
        self.services: dict[str, ServiceProcess] = {
            name: self._make_service(
                name,
                spec,
                http_port=profile.ports.gateway if name == "gateway" else None,
                metrics_port=metrics_ports.get(name),
            )
            for name, spec in specs.items()
        }

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def for_dev(cls, root: Path | None = None, *, progress: Progress | None = None) -> Stack:
        """Return the ``make run`` stack: ``.spinup/dev``, fixed ports, data kept between runs."""
        return cls(Profile.dev(root or REPO_ROOT), progress=progress)

    @classmethod
    def for_tests(
        cls,
        root: Path | None = None,
        *,
        overrides: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        name: str = "test",
    ) -> Stack:
        """Return a throwaway stack: ``.spinup/<name>`` wiped at start, free ports, fast reaper.

        Give concurrent sessions (two checkouts' worth of pytest, xdist workers) distinct names.
        """
        return cls(Profile.test(root or REPO_ROOT, overrides, name), progress=progress)

    def _make_servers(self) -> dict[str, Server]:
        profile, ports, secrets = self.profile, self.profile.ports, self.secrets
        logs, run, data = profile.logs_dir, profile.run_dir, profile.data_dir
        speed = {} if profile.durable else {"fsync": "off", "full_page_writes": "off"}
        # Every service opens its pools whole at start (shared/postgres/pool.py): about 90
        # connections for one replica of each, and the tests' and bench's replicas and pools
        # beside them.
        budget = {"max_connections": str(PLATFORM_MAX_CONNECTIONS)}
        platform = PostgresCluster(
            "platform-pg",
            label="platform postgres",
            data_dir=data / "platform-pg",
            run_dir=run,
            log_path=logs / "platform-pg.log",
            port=ports.platform_pg,
            superuser_password=secrets.platform_pg_superuser,
            hba=[
                "local all postgres peer",
                "host all all 127.0.0.1/32 scram-sha-256",
            ],
            settings=speed | budget,
            durable=profile.durable,
            apps=(
                AppDatabase(
                    role=_PLATFORM_ROLE,
                    password=secrets.platform_pg_spinup,
                    database=_PLATFORM_DB,
                ),
                # SeaweedFS's credential store (tenant S3 keys): on the platform cluster, which
                # tenants never reach, in a database and role of its own (ADR 0019).
                seaweed.credential_database(secrets),
            ),
        )
        redis = RedisServer(
            "redis",
            data_dir=data / "redis",
            run_dir=run,
            log_path=logs / "redis.log",
            port=ports.redis,
            password=secrets.redis,
        )
        nats = NatsServer(
            "nats",
            data_dir=data / "nats",
            run_dir=run,
            log_path=logs / "nats.log",
            port=ports.nats,
            monitor_port=ports.nats_monitor,
            user=_NATS_USER,
            password=secrets.nats,
        )
        servers: list[Server] = [platform, redis, nats]
        servers += [backend.make_server(profile, secrets) for backend in BACKENDS]
        return {server.name: server for server in servers}

    def _make_service(
        self,
        name: str,
        spec: ServiceSpec,
        *,
        http_port: int | None,
        metrics_port: int | None = None,
    ) -> ServiceProcess:
        return ServiceProcess(
            name,
            spec=spec,
            python=self.python,
            root=self.profile.root,
            log_path=self.profile.logs_dir / f"{name}.log",
            pid_path=self.profile.run_dir / f"{name}.pid",
            nats_monitor_url=f"http://127.0.0.1:{self.profile.ports.nats_monitor}",
            http_url=f"http://127.0.0.1:{http_port}" if http_port is not None else None,
            metrics_port=metrics_port,
        )

    # --- read-only facts ---------------------------------------------------------------------

    @property
    def ports(self) -> dict[str, int]:
        """The stack's ports by name (gateway, platform_pg, customer_pg, redis, nats, ...)."""
        return self.profile.ports.as_dict()

    @property
    def gateway_url(self) -> str:
        """Base URL of the gateway, e.g. ``http://127.0.0.1:8080``."""
        return f"http://127.0.0.1:{self.profile.ports.gateway}"

    @property
    def content_url(self) -> str:
        """Where the gateway serves stack apps and webhook receivers (ADR 0067).

        The same gateway under another host name: cookies are kept per host, so the console's
        (on ``127.0.0.1``) are never sent to tenant content (on ``localhost``).
        """
        return f"http://localhost:{self.profile.ports.gateway}"

    @property
    def metrics_urls(self) -> dict[str, str]:
        """Where Prometheus scrapes each service (``GET /metrics``), by service name."""
        return {
            name: url
            for name, service in {**self.services, **self.extra_workers}.items()
            if (url := service.metrics_url) is not None
        }

    @property
    def logs_dir(self) -> Path:
        """Where every server and service writes its log (``<name>.log``)."""
        return self.profile.logs_dir

    def env(self) -> dict[str, str]:
        """Return the service environment (the contract with the services), overrides included."""
        ports, secrets = self.profile.ports, self.secrets
        return {
            "SPINUP_NATS_URL": f"nats://{_NATS_USER}:{secrets.nats}@127.0.0.1:{ports.nats}",
            "SPINUP_PLATFORM_DSN": (
                f"postgresql://{_PLATFORM_ROLE}:{secrets.platform_pg_spinup}"
                f"@127.0.0.1:{ports.platform_pg}/{_PLATFORM_DB}"
            ),
            "SPINUP_REDIS_URL": f"redis://:{secrets.redis}@127.0.0.1:{ports.redis}/0",
            "SPINUP_SEAL_KEYS": secrets.seal_keys,
            "SPINUP_TOKEN_KEY": secrets.token_key,
            "SPINUP_JWT_KEY": secrets.jwt_key,
            "SPINUP_HTTP_HOST": "127.0.0.1",
            "SPINUP_HTTP_PORT": str(ports.gateway),
            # Two gateway processes on the one port, as two replicas behind a load balancer: the
            # HTTP path is CPU, and one process uses one core (bench/README.md).
            "SPINUP_HTTP_PROCESSES": "2",
            "SPINUP_PUBLIC_URL": self.gateway_url,
            "SPINUP_CONTENT_URL": self.content_url,
            "SPINUP_PLANS_FILE": str(self._plans_file),
            "SPINUP_LOG_FORMAT": "json",
            **self._workers_env(),
            **self.service_env_overrides,
        }

    def _workers_env(self, only: str | None = None) -> dict[str, str]:
        """Every backend worker's private settings, or only those of the worker ``only``."""
        env: dict[str, str] = {}
        for backend in BACKENDS:
            if only is None or backend.worker == only:
                env.update(backend.worker_env(self.profile, self.secrets))
        return env

    def process_env(self, service: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Return a service's environment: the common settings plus its own backend's only.

        Admin credentials of one backend never reach another worker or the gateway; stray
        SPINUP_* variables of the caller are dropped.
        """
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SPINUP_")}
        private = set(self._workers_env()) - set(self.service_env_overrides)
        common = {k: v for k, v in self.env().items() if k not in private}
        return {
            **inherited,
            "PYTHONUNBUFFERED": "1",
            **common,
            **self._workers_env(only=service),
            **self._metrics_env(service),
            **(extra or {}),
        }

    def _metrics_env(self, service: str) -> dict[str, str]:
        """Where ``service`` serves its metrics: its own port, or the gateway's HTTP port.

        A gateway of several processes keeps their shared metrics files under the run dir.
        """
        if service == "gateway":
            return {"SPINUP_METRICS_DIR": str(self.profile.run_dir / "metrics")}
        port = self.services[service].metrics_port
        if port is None:
            return {}
        return {"SPINUP_METRICS_HOST": "127.0.0.1", "SPINUP_METRICS_PORT": str(port)}

    # --- steps -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _step(self, action: str) -> Iterator[None]:
        """Report ``action``, then ``ok (<seconds>)`` or ``failed``."""
        self.progress.begin(action)
        began = time.monotonic()
        try:
            yield
        except BaseException:
            self.progress.end("failed")
            raise
        self.progress.end(f"ok ({time.monotonic() - began:.1f} s)")

    def _acquire(self) -> None:
        """Take the profile's lock (one supervisor per profile) and clear a crashed run's leftovers.

        Raises:
            DevstackError: another process runs this profile.
        """
        if self._lock is not None:
            return
        lock_path = self.profile.root / SPINUP_DIR / f"{self.profile.name}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            msg = f"the {self.profile.name} stack is already running (supervisor pid {holder})"
            raise DevstackError(msg) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle
        for process in self._all_processes():
            process.reap_stale()
        if self.profile.wipe and not self._wiped:
            if self.profile.directory.exists():
                shutil.rmtree(self.profile.directory)
            self._wiped = True
        for path in (
            self.profile.logs_dir,
            self.profile.run_dir,
            self.profile.data_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)
        for path in (
            self.profile.directory,
            self.profile.data_dir,
            self.profile.run_dir,
        ):
            path.chmod(0o755)  # Postgres runs as its own user and must traverse these.
        self.secrets.save(self.profile.directory / "secrets.json")
        if self.profile.roomy_plans:
            _write_roomy_plans(self.profile.root / "plans.yaml", self._plans_file)

    @property
    def _plans_file(self) -> Path:
        """The plans the services read: the shipped file, or its roomy copy in the run dir."""
        if self.profile.roomy_plans:
            return self.profile.run_dir / "plans.yaml"
        return self.profile.root / "plans.yaml"

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _all_processes(self) -> list[ManagedProcess]:
        return [
            *self.servers.values(),
            *self.services.values(),
            *self.extra_gateways.values(),
            *self.extra_workers.values(),
        ]

    # --- start and stop ----------------------------------------------------------------------

    def start(self, *, services: bool = True) -> None:
        """Start every server, then (unless ``services=False``) every service; all or nothing.

        Raises:
            DevstackError: something did not become ready; everything started is stopped again.
        """
        try:
            self.start_servers()
            if services:
                self.start_services()
        except BaseException:
            self.stop()
            raise

    def start_servers(self) -> None:
        """Initialise (first run only) and start the servers in order, each checked ready.

        The engine comes first: the customer servers listen on its bridge (``devstack.network``).
        """
        self._acquire()
        with self._step("checking the container engine"):
            ensure_engine(self.profile.root)
        fresh = [server for server in self.servers.values() if server.needs_init()]
        if fresh:
            # initdb is the slow part of a first start (about 1.5 s per cluster): run them together.
            labels = ", ".join(server.label for server in fresh)
            with self._step(f"creating data for {labels}"), ThreadPoolExecutor(len(fresh)) as pool:
                for future in [pool.submit(server.init) for server in fresh]:
                    future.result()
        for name in self.servers:
            if not self.servers[name].is_running():
                self.start_server(name)

    def start_services(self) -> None:
        """Start the services in order, each checked ready (the servers must be running)."""
        for name in self.services:
            if not self.services[name].is_running():
                self.start_service(name)

    def stop(self) -> None:
        """Stop gateways and workers, then servers, in reverse start order. Safe to repeat."""
        for name in reversed(self.extra_gateways):
            self._stop(self.extra_gateways[name], name)
        for name in reversed(self.extra_workers):
            self._stop(self.extra_workers[name], name)
        for name in reversed(self.services):
            self._stop(self.services[name], name)
        for name in reversed(self.servers):
            self._stop(self.servers[name], self.servers[name].label)
        self._release()

    def _stop(self, process: ManagedProcess, label: str) -> None:
        if process.is_running():
            with self._step(f"stopping {label}"):
                process.stop()
        else:
            process.stop()  # reap an exited child and its group, remove the pid file

    def __enter__(self) -> Self:
        """Start everything (``with Stack.for_tests(root) as stack``)."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop everything; a throwaway stack's data goes too, its logs stay to be read.

        A few bench runs of thousands of tenants each had left 54 GB behind and the disk 96 %
        full.
        """
        self.stop()
        if self.profile.wipe:
            shutil.rmtree(self.profile.data_dir, ignore_errors=True)

    # --- one server or service at a time (fault injection) -----------------------------------

    def start_server(self, name: str, timeout: float = 60.0) -> None:
        """Start one server (``platform-pg``, ``customer-pg``, ``redis``, ``nats``...) and wait.

        Raises:
            DevstackError: its port is taken or it did not become ready.
        """
        self._acquire()
        server = self.servers[name]
        with self._step(f"starting {server.label}"):
            if port_open(server.port):
                msg = f"{server.label}: port {server.port} is already in use"
                raise DevstackError(msg)
            server.init()
            server.start()
            server.wait_ready(timeout)
            server.after_ready()

    def stop_server(self, name: str) -> None:
        """Stop one server cleanly (its data stays)."""
        server = self.servers[name]
        self._stop(server, server.label)

    def start_service(self, name: str, timeout: float = 30.0) -> None:
        """Start one service (``gateway``, ``pg-provisioner``, ``reaper``) with ``env()``."""
        service = self.services[name]
        with self._step(f"starting {name}"):
            service.start(self.process_env(name))
            service.wait_ready(timeout)

    def stop_service(self, name: str) -> None:
        """Stop one service: SIGTERM, then SIGKILL of its group after a timeout."""
        self._stop(self.services[name], name)

    def kill_service(self, name: str) -> None:
        """SIGKILL one service's whole process group, as a crash would."""
        self.services[name].kill()

    def start_extra_gateway(
        self,
        port: int,
        extra_env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> ServiceProcess:
        """Start another gateway on ``port`` (e.g. with another ``SPINUP_PLANS_FILE``).

        The handle has ``url``, ``stop()``, ``kill()`` and ``is_running()``; ``stop`` of the
        stack stops it too.
        """
        name = f"gateway-{port}"
        gateway = self._make_service(name, SERVICES["gateway"], http_port=port)
        self.extra_gateways[name] = gateway
        # Same SPINUP_PUBLIC_URL as the stack's gateway: replicas sit behind one public address,
        # and any replica may answer a webhook command for a request another one received.
        env = {"SPINUP_HTTP_PORT": str(port), **(extra_env or {})}
        with self._step(f"starting {name}"):
            gateway.start(self.process_env("gateway", env))
            gateway.wait_ready(timeout)
        return gateway

    @contextlib.contextmanager
    def gateway_with_plans(
        self,
        directory: Path,
        edit: Callable[[dict[str, Any]], None],
        extra_env: Mapping[str, str] | None = None,
    ) -> Iterator[ServiceProcess]:
        """Another gateway serving the stack's plans as changed by ``edit`` (in place).

        The changed plans are written to ``directory``; the gateway stops when the block ends.
        """
        # Imported here: `make clean` runs devstack on the system Python, which may lack PyYAML.
        import yaml  # noqa: PLC0415

        plans = yaml.safe_load(Path(self.env()["SPINUP_PLANS_FILE"]).read_text())
        edit(plans)
        path = directory / "plans.yaml"
        path.write_text(yaml.safe_dump(plans))
        env = {"SPINUP_PLANS_FILE": str(path), **(extra_env or {})}
        gateway = self.start_extra_gateway(free_ports(1)[0], env)
        try:
            yield gateway
        finally:
            gateway.stop()

    def _ports_in_use(self) -> set[int]:
        """Every port this stack's servers and services listen on, or will."""
        processes = [*self.services.values(), *self.extra_workers.values()]
        return _promised(self.profile) | {
            process.metrics_port for process in processes if process.metrics_port is not None
        }

    def start_extra_worker(self, name: str, timeout: float = 30.0) -> ServiceProcess:
        """Start another replica of the worker ``name`` (``pg-provisioner``...) in its queue group.

        It has the worker's NATS name and environment, and a log and pid file of its own
        (``<name>-2.log``...). The handle has ``stop()``, ``kill()`` and ``is_running()``;
        ``stop`` of the stack stops it too.
        """
        spec = self.services[name].spec
        replica = 2 + sum(1 for key in self.extra_workers if key.rsplit("-", 1)[0] == name)
        label = f"{name}-{replica}"
        # Named like the worker itself: the readiness check looks for that NATS client name.
        worker = ServiceProcess(
            name,
            spec=spec,
            python=self.python,
            root=self.profile.root,
            log_path=self.profile.logs_dir / f"{label}.log",
            pid_path=self.profile.run_dir / f"{label}.pid",
            nats_monitor_url=f"http://127.0.0.1:{self.profile.ports.nats_monitor}",
            metrics_port=free_ports(1, avoid=self._ports_in_use())[0],
        )
        self.extra_workers[label] = worker
        with self._step(f"starting {label}"):
            worker.start(self.process_env(name, {"SPINUP_METRICS_PORT": str(worker.metrics_port)}))
            worker.wait_ready(timeout)
        return worker


#: ``make run``'s metrics ports, one per service without an HTTP port, in start order.
DEV_METRICS_PORT_BASE = 59101


def _metrics_ports(profile: Profile, services: list[str]) -> dict[str, int]:
    """A metrics port for each of ``services``: fixed for ``make run``, free ones otherwise."""
    if profile.ports == Ports.dev():
        return {name: DEV_METRICS_PORT_BASE + index for index, name in enumerate(services)}
    return dict(zip(services, free_ports(len(services), avoid=_promised(profile)), strict=True))


def _promised(profile: Profile) -> set[int]:
    """The profile's ports, and SeaweedFS's gRPC ports beside its own (port + 10000)."""
    ports = set(profile.ports.as_dict().values())
    return ports | {
        port + 10000 for name, port in profile.ports.as_dict().items() if "seaweed" in name
    }


def _write_roomy_plans(source: Path, target: Path) -> None:
    """``source`` with every cap and rate limit multiplied by ``ROOMY_FACTOR``, into ``target``."""
    # Imported here: `make clean` runs devstack on the system Python, which may lack PyYAML.
    import yaml  # noqa: PLC0415

    plans = yaml.safe_load(source.read_text())
    for tier in plans["tiers"].values():
        for section in ("caps", "rate_limit"):
            tier[section] = {key: value * ROOMY_FACTOR for key, value in tier[section].items()}
    target.write_text(yaml.safe_dump(plans))


def running_processes(root: Path | None = None) -> list[str]:
    """Describe every supervisor or server/service of any profile under ``.spinup`` still alive."""
    base = (root or REPO_ROOT) / SPINUP_DIR
    found: list[str] = []
    for lock_path in sorted(base.glob("*.lock")):
        with lock_path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                found.append(f"{lock_path.stem} stack supervisor")
    for pid_path in sorted(base.glob("*/run/*.pid")):
        pid = pidfile_alive(pid_path)
        if pid is not None:
            found.append(f"{pid_path.parent.parent.name}/{pid_path.stem} (pid {pid})")
    return found
