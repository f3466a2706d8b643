"""mongo-provisioner settings, read from the environment in ``main``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.config import Env


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the worker needs; required values have no default."""

    nats_url: str
    platform_dsn: str
    seal_keys: str
    admin_url: str
    public_host: str
    public_port: int
    create_concurrency: int
    delete_concurrency: int
    log_format: str
    log_level: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and check every setting.

        Raises:
            SettingsError: naming the missing or malformed variable.
        """
        env = Env(environ)
        return cls(
            nats_url=env.string("SPINUP_NATS_URL"),
            platform_dsn=env.string("SPINUP_PLATFORM_DSN"),
            seal_keys=env.string("SPINUP_SEAL_KEYS"),
            admin_url=env.string("SPINUP_MONGO_ADMIN_URL"),
            public_host=env.string("SPINUP_MONGO_HOST"),
            public_port=env.integer("SPINUP_MONGO_PORT", 27017),
            # createUser is a few ms; the cap only keeps a burst from queueing on the server.
            create_concurrency=env.integer("SPINUP_MONGO_CREATE_CONCURRENCY", 8),
            # dropDatabase removes files: proportional to what the tenant stored.
            delete_concurrency=env.integer("SPINUP_MONGO_DELETE_CONCURRENCY", 4),
            log_format=env.string("SPINUP_LOG_FORMAT", "auto"),
            log_level=env.string("SPINUP_LOG_LEVEL", "info"),
        )
