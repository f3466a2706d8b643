"""redis-provisioner settings, read from the environment in ``main``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.config import Env
from shared.worker import WorkerSettings


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the worker needs; required values have no default."""

    worker: WorkerSettings
    admin_url: str
    public_host: str
    public_port: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and check every setting.

        Raises:
            SettingsError: naming the missing or malformed variable.
        """
        env = Env(environ)
        return cls(
            worker=WorkerSettings.from_env(
                env,
                prefix="REDIS",
                # ACL SETUSER takes about 0.1 ms: the event log, not Redis, bounds creates.
                create_concurrency=16,
                # A delete SCANs the whole keyspace for the tenant's prefix: keep a few at a time.
                delete_concurrency=4,
            ),
            admin_url=env.string("SPINUP_CUSTOMER_REDIS_URL"),
            public_host=env.string("SPINUP_CUSTOMER_REDIS_HOST"),
            public_port=env.integer("SPINUP_CUSTOMER_REDIS_PORT", 6379),
        )
