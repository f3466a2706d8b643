"""The customer Postgres cluster, where pg-provisioner makes one role and database per tenant."""

from __future__ import annotations

from typing import TYPE_CHECKING

from devstack.network import tenant_host
from devstack.servers import CONTAINER_NETWORKS, PostgresCluster

if TYPE_CHECKING:
    from devstack.profile import Profile, Secrets

NAME = "customer-pg"
#: Backend processes the cluster allows. Per-database limits (plans.yaml ``postgres.connections``)
#: are overcommitted against it: one anonymous client network's databases may hold a tenth of it
#: at most (ADR 0025; tests/unit/test_first_try_limits.py).
MAX_CONNECTIONS = 500


def make_server(profile: Profile, secrets: Secrets) -> PostgresCluster:
    """The cluster: ``sameuser`` in pg_hba, so a tenant role reaches only its own database."""
    speed = {} if profile.durable else {"fsync": "off", "full_page_writes": "off"}
    return PostgresCluster(
        NAME,
        label="customer postgres",
        data_dir=profile.data_dir / NAME,
        run_dir=profile.run_dir,
        log_path=profile.logs_dir / f"{NAME}.log",
        port=profile.ports.customer_pg,
        superuser_password=secrets.customer_pg_superuser,
        # A tenant role t_x may log into database t_x only; the admin is postgres over TCP.
        hba=[
            "local all all peer",
            "host all postgres 127.0.0.1/32 scram-sha-256",
            # The admin from anywhere else (the tenant address, a container) is refused outright.
            "host all postgres all reject",
            "host sameuser all 127.0.0.1/32 scram-sha-256",
            # A client on this machine reaching the tenant address may come from any of its own.
            "host sameuser all samehost scram-sha-256",
            # Stack containers reach their own backing databases, as tenants, never as admin.
            *(f"host sameuser all {network} scram-sha-256" for network in CONTAINER_NETWORKS),
        ],
        # Loopback for pg-provisioner's admin connection, the tenant address for everyone else.
        listen_hosts=lambda: ("127.0.0.1", tenant_host()),
        settings={
            "max_connections": str(MAX_CONNECTIONS),
            **speed,
        },
        durable=profile.durable,
    )


def worker_env(profile: Profile, secrets: Secrets) -> dict[str, str]:
    """pg-provisioner's admin DSN and the address tenants are given."""
    port = profile.ports.customer_pg
    return {
        "SPINUP_CUSTOMER_PG_ADMIN_DSN": (
            f"postgresql://postgres:{secrets.customer_pg_superuser}@127.0.0.1:{port}/postgres"
        ),
        "SPINUP_CUSTOMER_PG_HOST": tenant_host(),
        "SPINUP_CUSTOMER_PG_PORT": str(port),
    }
