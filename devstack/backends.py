"""Customer backends: the server each provisioner drives, and the settings only that worker gets.

A backend adds one ``Backend`` to ``BACKENDS``. The stack starts its server after the platform
servers and its worker after ``pg-provisioner``; ``worker_env`` (admin credentials, key files)
reaches that worker alone, while ``Stack.env()`` (for tests) holds every backend's values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from devstack import customer_nats, customer_pg, customer_redis, mongo, seaweed
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


def _worker(module: str) -> ServiceSpec:
    return ServiceSpec(module=module, readiness=Readiness.QUEUE)


#: Every backend, in start order.
BACKENDS: list[Backend] = [
    Backend(
        server=customer_pg.NAME,
        make_server=customer_pg.make_server,
        worker="pg-provisioner",
        worker_spec=_worker("pg_provisioner"),
        worker_env=customer_pg.worker_env,
    ),
    Backend(
        server=customer_nats.NAME,
        make_server=customer_nats.make_server,
        worker="queue-provisioner",
        worker_spec=_worker("queue_provisioner"),
        worker_env=customer_nats.worker_env,
    ),
    Backend(
        server=customer_redis.NAME,
        make_server=customer_redis.make_server,
        worker="redis-provisioner",
        worker_spec=_worker("redis_provisioner"),
        worker_env=customer_redis.worker_env,
    ),
    Backend(
        server=mongo.NAME,
        make_server=mongo.make_server,
        worker="mongo-provisioner",
        worker_spec=_worker("mongo_provisioner"),
        worker_env=mongo.worker_env,
    ),
    Backend(
        server=seaweed.NAME,
        make_server=seaweed.make_server,
        worker="storage-provisioner",
        worker_spec=_worker("storage_provisioner"),
        worker_env=seaweed.worker_env,
    ),
]
