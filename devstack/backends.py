"""Customer backends: the server each provisioner drives, and the settings only that worker gets.

A backend adds one ``Backend`` to ``BACKENDS``. The stack starts its server after the platform
servers and its worker after ``pg-provisioner``; ``worker_env`` (admin credentials, key files)
reaches that worker alone, while ``Stack.env()`` (for tests) holds every backend's values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from devstack import customer_nats, customer_pg, customer_redis, engine, mongo, seaweed
from devstack.services import Readiness, ServiceSpec

if TYPE_CHECKING:
    from devstack.profile import Profile, Secrets
    from devstack.servers import Server


@dataclass(frozen=True, kw_only=True)
class Backend:
    """One customer-facing server and the worker that provisions tenants on it."""

    #: Key in ``Stack.servers`` (``customer-redis``...), also its log and pid file name.
    server: str
    make_server: Callable[[Profile, Secrets], Server]
    #: Service name: NATS client name, queue group, log file (``redis-provisioner``...).
    worker: str
    worker_spec: ServiceSpec
    worker_env: Callable[[Profile, Secrets], dict[str, str]]


class _ServerModule(Protocol):
    """What each backend's devstack module offers (``devstack.customer_pg``...)."""

    NAME: str

    def make_server(self, profile: Profile, secrets: Secrets) -> Server: ...

    def worker_env(self, profile: Profile, secrets: Secrets) -> dict[str, str]: ...


def _backend(server: _ServerModule, worker: str) -> Backend:
    """``worker`` (``pg-provisioner``) runs as the package of that name (``pg_provisioner``)."""
    return Backend(
        server=server.NAME,
        make_server=server.make_server,
        worker=worker,
        worker_spec=ServiceSpec(module=worker.replace("-", "_"), readiness=Readiness.QUEUE),
        worker_env=server.worker_env,
    )


#: Every backend, in start order.
BACKENDS: list[Backend] = [
    _backend(customer_pg, "pg-provisioner"),
    _backend(customer_nats, "queue-provisioner"),
    _backend(customer_redis, "redis-provisioner"),
    _backend(mongo, "mongo-provisioner"),
    _backend(seaweed, "storage-provisioner"),
    _backend(engine, "stack-deployer"),
]
