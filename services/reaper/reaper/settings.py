"""Reaper settings, read from the environment in ``main``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.config import Env
from shared.observability.health import heartbeat_file
from shared.observability.metrics import metrics_host, metrics_port


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the reaper needs."""

    nats_url: str
    interval_s: float
    orphan_grace_s: float
    concurrency: int
    usage_interval_s: float
    stack_stuck_after_s: float
    log_format: str
    log_level: str
    heartbeat_file: Path | None
    metrics_host: str
    metrics_port: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and check every setting.

        Raises:
            SettingsError: naming the missing or malformed variable.
        """
        env = Env(environ)
        return cls(
            nats_url=env.string("SPINUP_NATS_URL"),
            interval_s=env.number("SPINUP_REAPER_INTERVAL_S", 10.0),
            orphan_grace_s=env.number("SPINUP_REAPER_ORPHAN_GRACE_S", 60.0),
            concurrency=env.integer("SPINUP_REAPER_CONCURRENCY", 4),
            # Quotas are enforced after the fact: this is how far a tenant can overshoot in time.
            usage_interval_s=env.number("SPINUP_REAPER_USAGE_INTERVAL_S", 60.0),
            # The stack-deployer's own build timeout (same variable) ends every deploy of a live
            # worker; one still building past it and the grace lost its worker.
            stack_stuck_after_s=env.number("SPINUP_STACK_BUILD_TIMEOUT_S", 600.0)
            + env.number("SPINUP_REAPER_ORPHAN_GRACE_S", 60.0),
            log_format=env.string("SPINUP_LOG_FORMAT", "auto"),
            log_level=env.string("SPINUP_LOG_LEVEL", "info"),
            heartbeat_file=heartbeat_file(env),
            metrics_host=metrics_host(env),
            metrics_port=metrics_port(env),
        )
