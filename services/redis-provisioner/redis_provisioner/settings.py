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
    #: How often the keys of deleted tenants are removed (``RedisDriver.unlink_deleted``): a
    #: pass walks the whole keyspace when any tenant was deleted since the last.
    unlink_interval_s: float

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
                # Two commands each (the keys go in a pass of their own): the reaper's, a few
                # at a time.
                delete_concurrency=4,
            ),
            admin_url=env.string("SPINUP_CUSTOMER_REDIS_URL"),
            public_host=env.string("SPINUP_CUSTOMER_REDIS_HOST"),
            public_port=env.integer("SPINUP_CUSTOMER_REDIS_PORT", 6379),
            unlink_interval_s=env.number("SPINUP_REDIS_UNLINK_INTERVAL_S", 60.0),
        )
