"""mongo-provisioner settings, read from the environment in ``main``."""

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
                prefix="MONGO",
                # createUser is a few ms; the cap only keeps a burst from queueing on the server.
                # 16, as the other workers: at 8 the worker held back a c=16 load (bench/README).
                create_concurrency=16,
                # dropDatabase removes files: proportional to what the tenant stored.
                delete_concurrency=4,
            ),
            admin_url=env.string("SPINUP_MONGO_ADMIN_URL"),
            public_host=env.string("SPINUP_MONGO_HOST"),
            public_port=env.integer("SPINUP_MONGO_PORT", 27017),
        )
