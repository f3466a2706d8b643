"""queue-provisioner settings, read from the environment in ``main``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.config import Env
from shared.worker import WorkerSettings


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the worker needs; required values have no default."""

    worker: WorkerSettings
    customer_nats_url: str
    system_creds: Path
    operator_seed_file: Path
    public_url: str
    request_timeout_s: float

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
                prefix="NATS",
                # Each create or delete is one JWT signature and one round trip: many at once.
                create_concurrency=16,
                delete_concurrency=16,
            ),
            customer_nats_url=env.string("SPINUP_CUSTOMER_NATS_URL"),
            system_creds=env.path("SPINUP_CUSTOMER_NATS_SYSTEM_CREDS"),
            operator_seed_file=env.path("SPINUP_CUSTOMER_NATS_OPERATOR_SEED_FILE"),
            public_url=env.string("SPINUP_CUSTOMER_NATS_PUBLIC_URL"),
            # A claims update takes about a millisecond; seconds without an answer mean the
            # server is down or stuck, and the endpoint's own timeout (10 s) must not pass first.
            request_timeout_s=env.number("SPINUP_CUSTOMER_NATS_REQUEST_TIMEOUT_S", 2.0),
        )
