"""What every provisioner does the same way, so its ``main`` only connects its own backend.

A worker is a driver and its handlers plus this: settings common to every worker, the platform
Postgres (event log, migrated at start), the lifecycle around the driver, and the handlers served
in the worker's queue group until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar
from uuid import UUID

import structlog
import uvloop

from shared.bus import Bus
from shared.config import Env, SettingsError
from shared.contracts.kinds import ResourceKind
from shared.contracts.subjects import ENDPOINTS
from shared.crypto.sealing import Keyring
from shared.eventlog.projections import (
    ResourceProjection,
    ResourceReadModel,
    rehearse_resource_appends,
)
from shared.eventlog.schema import WARM_CONNECTION, migrate
from shared.eventlog.store import EventStore
from shared.lifecycle import (
    USAGE_SWEEP_DUTY,
    ResourceDriver,
    ResourceLifecycle,
    SharedServer,
)
from shared.observability import metrics, tracing
from shared.observability.health import heartbeat, heartbeat_file
from shared.observability.logging import configure_logging
from shared.postgres.pool import open_pool, warm_pool
from shared.runtime import (
    connect_with_retry,
    in_background,
    repeating,
    settings_or_exit,
    wait_for_shutdown,
)

log = structlog.get_logger("shared.worker")

#: How often a worker checks its backend for ``spinup_backend_up``, and how long it waits.
BACKEND_PROBE_INTERVAL_S = 10.0
BACKEND_PROBE_TIMEOUT_S = 5.0
#: How often a worker asks whether its backend's server restarted (and forgot credentials,
#: ``ResourceLifecycle.restore_after_restart``): tenants' logins fail until the next ask.
RESTART_CHECK_INTERVAL_S = 1.0
#: Exports one replica streams at once; past it an export is refused (retryable), not queued.
EXPORTS_IN_FLIGHT = 4
# No resource has the nil id: the probe looks for something that is never there.
_PROBE_ID = UUID(int=0)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """The settings every provisioner reads; its own ``Settings`` holds these as ``worker``."""

    nats_url: str
    platform_dsn: str
    seal_keys: str
    create_concurrency: int
    delete_concurrency: int
    log_format: str
    log_level: str
    heartbeat_file: Path | None
    metrics_host: str
    metrics_port: int
    #: How often the worker looks for objects no resource owns (``ResourceLifecycle.reconcile``).
    reconcile_s: float = 60.0
    #: How long one stays unowned before it is deleted (at least twice the create's timeout).
    orphan_grace_s: float = 300.0
    #: The share of a usage sweep's time spent measuring (docs/adr/0044).
    usage_sweep_duty: float = USAGE_SWEEP_DUTY

    @classmethod
    def from_env(
        cls, env: Env, *, prefix: str, create_concurrency: int, delete_concurrency: int
    ) -> WorkerSettings:
        """Read them; the backend chooses its concurrency defaults.

        ``SPINUP_<prefix>_CREATE_CONCURRENCY`` and ``SPINUP_<prefix>_DELETE_CONCURRENCY``
        override them.

        Raises:
            SettingsError: naming the missing or malformed variable.
        """
        duty = env.number("SPINUP_USAGE_SWEEP_DUTY", USAGE_SWEEP_DUTY)
        if not 0 < duty <= 1:
            msg = f"SPINUP_USAGE_SWEEP_DUTY must be above 0 and at most 1, got {duty}"
            raise SettingsError(msg)
        return cls(
            nats_url=env.string("SPINUP_NATS_URL"),
            platform_dsn=env.string("SPINUP_PLATFORM_DSN"),
            seal_keys=env.string("SPINUP_SEAL_KEYS"),
            create_concurrency=env.integer(
                f"SPINUP_{prefix}_CREATE_CONCURRENCY", create_concurrency
            ),
            delete_concurrency=env.integer(
                f"SPINUP_{prefix}_DELETE_CONCURRENCY", delete_concurrency
            ),
            log_format=env.string("SPINUP_LOG_FORMAT", "auto"),
            log_level=env.string("SPINUP_LOG_LEVEL", "info"),
            heartbeat_file=heartbeat_file(env),
            metrics_host=metrics.metrics_host(env),
            metrics_port=metrics.metrics_port(env),
            reconcile_s=env.number("SPINUP_RECONCILE_S", 60.0),
            orphan_grace_s=env.number("SPINUP_ORPHAN_GRACE_S", 300.0),
            usage_sweep_duty=duty,
        )


class HasWorkerSettings(Protocol):
    """A worker's own settings, which include the common ones."""

    @property
    def worker(self) -> WorkerSettings:
        """The settings every worker reads."""
        ...


S = TypeVar("S", bound=HasWorkerSettings)


Register = Callable[[Bus, ResourceLifecycle], Awaitable[None]]


async def serve_lifecycle(
    bus: Bus, lifecycle: ResourceLifecycle, kind: ResourceKind, *, max_in_flight: int
) -> None:
    """Subscribe every command of ``kind`` in its worker's queue group.

    ``max_in_flight`` bounds the handlers waiting for a slot or a reply; beyond it, messages
    wait in NATS. One usage sweep at a time per replica: a sweep already covers every resource.
    """
    endpoints = ENDPOINTS[kind]
    await bus.serve(endpoints.provision, lifecycle.provision, max_in_flight=max_in_flight)
    await bus.serve(endpoints.deprovision, lifecycle.deprovision, max_in_flight=max_in_flight)
    await bus.serve(endpoints.claim, lifecycle.claim, max_in_flight=max_in_flight)
    await bus.serve(endpoints.rotate, lifecycle.rotate, max_in_flight=max_in_flight)
    await bus.serve(endpoints.sweep_usage, lifecycle.sweep_usage, max_in_flight=1)
    await bus.serve(endpoints.find_due, lifecycle.find_due, max_in_flight=max_in_flight)
    await bus.serve(endpoints.suspend, lifecycle.suspend, max_in_flight=max_in_flight)
    # Each export holds a dump process and a window of chunks: a few at a time per replica.
    await bus.serve_stream(
        endpoints.export, lifecycle.start_export, max_in_flight=EXPORTS_IN_FLIGHT
    )
    # The server has the subscriptions once this returns: a worker reported ready answers.
    await bus.flush()


async def serve_kind(
    service: str, settings: WorkerSettings, driver: ResourceDriver[Any], register: Register
) -> None:
    """Run the lifecycle around ``driver``, subscribe the worker's handlers, serve until signalled.

    The caller connected the driver and closes it; this owns the platform connections.
    """
    keyring = Keyring.from_setting(settings.seal_keys)
    platform = await connect_with_retry(
        "platform postgres",
        lambda: open_pool(settings.platform_dsn, size=8),
    )
    try:
        await migrate(platform)
        await warm_pool(platform, WARM_CONNECTION)
        bus = await connect_with_retry(
            "platform nats", lambda: Bus.connect(settings.nats_url, name=service)
        )
        try:
            store = EventStore(platform, [ResourceProjection()], nudge=bus.nudge_relay)
            await rehearse_resource_appends(store)
            lifecycle = ResourceLifecycle(
                store,
                keyring,
                tracing.trace_driver(driver),
                resources=ResourceReadModel(platform),
                create_concurrency=settings.create_concurrency,
                delete_concurrency=settings.delete_concurrency,
                orphan_grace=orphan_grace(settings.orphan_grace_s, driver.kind),
                usage_sweep_duty=settings.usage_sweep_duty,
                restore_recheck=command_settled(driver.kind),
            )
            await register(bus, lifecycle)
            log.info(
                "worker.started",
                service=service,
                kind=driver.kind.value,
                create_concurrency=settings.create_concurrency,
            )
            with metrics.serve_metrics(settings.metrics_host, settings.metrics_port):
                async with (
                    heartbeat(settings.heartbeat_file, lambda: bus.nc.is_connected),
                    probe_backend(driver),
                    reconciling(lifecycle, settings.reconcile_s),
                    repeating(
                        lifecycle.restore_after_restart,
                        RESTART_CHECK_INTERVAL_S,
                        "worker.restore.failed",
                    ),
                ):
                    await wait_for_shutdown()
        finally:
            await bus.close()
    finally:
        await platform.close()
        log.info("worker.stopped", service=service)


def orphan_grace(setting_s: float, kind: ResourceKind) -> timedelta:
    """The grace ``reconcile`` gives an unowned object of ``kind``.

    The setting, and never less than twice the kind's create timeout, within which a create in
    one append has recorded its outcome.
    """
    return max(timedelta(seconds=setting_s), command_settled(kind))


def command_settled(kind: ResourceKind) -> timedelta:
    """By when a create, rotation or suspension of ``kind`` has recorded its outcome.

    Twice the command's timeout, counted from its backend call.
    """
    return timedelta(seconds=2 * ENDPOINTS[kind].provision.timeout)


def reconciling(
    lifecycle: ResourceLifecycle, interval_s: float
) -> contextlib.AbstractAsyncContextManager[None]:
    """Run ``lifecycle.reconcile`` every ``interval_s`` while the block runs."""
    return repeating(lifecycle.reconcile, interval_s, "worker.reconcile.failed")


@contextlib.asynccontextmanager
async def probe_backend(
    driver: ResourceDriver[Any], interval_s: float = BACKEND_PROBE_INTERVAL_S
) -> AsyncIterator[None]:
    """Keep ``spinup_backend_up{backend=<kind>}`` current while the block runs.

    The probe is one cheap round trip through the driver's admin connection. A driver whose
    tenants share a server (``SharedServer``) is asked for the server's ``capacity``, which also
    keeps ``spinup_backend_capacity_{used,limit}`` current; any other for its read-only
    ``exists`` of an id no resource has. A driver with neither (the stack deployer) is not
    probed.
    """
    check = _probe_of(driver)
    if check is None:
        yield
        return
    up = metrics.BACKEND_UP.labels(backend=driver.kind.value)

    async def probe() -> None:
        was_up = True
        while True:
            try:
                # Not asyncio.wait_for, which on Python 3.11 can lose the stop's cancellation
                # (``shared.runtime.set_within`` says how), leaving this loop running.
                async with asyncio.timeout(BACKEND_PROBE_TIMEOUT_S):
                    await check()
            except Exception as exc:  # noqa: BLE001  (any failure means the backend is not usable)
                if was_up:
                    log.warning("worker.backend.down", kind=driver.kind.value, error=repr(exc))
                up.set(0)
                was_up = False
            else:
                up.set(1)
                was_up = True
            await asyncio.sleep(interval_s)

    async with in_background(probe()):
        yield


def _probe_of(driver: ResourceDriver[Any]) -> Callable[[], Awaitable[None]] | None:
    """What ``probe_backend`` asks ``driver``, if anything."""
    backend = driver.kind.value
    if isinstance(driver, SharedServer):
        server: SharedServer = driver

        async def report_capacity() -> None:
            for ceiling, (used, limit) in (await server.capacity()).items():
                metrics.BACKEND_CAPACITY_USED.labels(backend, ceiling.value).set(used)
                metrics.BACKEND_CAPACITY_LIMIT.labels(backend, ceiling.value).set(limit)

        return report_capacity
    exists: Callable[[UUID], Awaitable[bool]] | None = getattr(driver, "exists", None)
    if exists is None:
        return None

    async def look_for_nobody() -> None:
        await exists(_PROBE_ID)

    return look_for_nobody


def worker_main(
    service: str,
    read_settings: Callable[[Mapping[str, str]], S],
    run: Callable[[S], Coroutine[Any, Any, None]],
) -> int:
    """Entry point: settings first, so a missing variable stops start-up with its name."""
    settings = settings_or_exit(service, lambda: read_settings(os.environ))
    configure_logging(service, fmt=settings.worker.log_format, level=settings.worker.log_level)
    tracing.configure_tracing(service, os.environ)
    uvloop.run(run(settings))
    return 0
