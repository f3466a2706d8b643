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
    acl_save_delay_s: float
    acl_save_max_duty: float

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
            # ACL SAVE blocks the server (16-217 ms at 1000 users): changes are batched into one
            # save shortly after they happen, and saving takes at most this share of its time.
            acl_save_delay_s=env.number("SPINUP_REDIS_ACL_SAVE_DELAY_S", 0.01),
            acl_save_max_duty=env.number("SPINUP_REDIS_ACL_SAVE_MAX_DUTY", 0.2),
        )
