"""Where a stack keeps its data, which ports it uses, and its generated secrets."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from devstack.procs import PAIR_OFFSET, free_port_pairs, free_ports

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

#: The directory (under the repo root) that holds every profile.
SPINUP_DIR = ".spinup"

#: How much a test profile raises the plans' caps and rate limits (``Profile.roomy_plans``).
ROOMY_FACTOR = 1000

#: Service settings the dev profile adds: a warm pool deep enough for a burst of ``/db/new``.
DEV_OVERRIDES: dict[str, str] = {"SPINUP_PG_POOL_SIZE": "32"}

#: Service settings the test profile adds, so expiry and orphan sweeps happen within a test,
#: and a small warm pool (its refills share the cluster with the tests' own creates).
TEST_OVERRIDES: dict[str, str] = {
    "SPINUP_PG_POOL_SIZE": "4",
    "SPINUP_REAPER_INTERVAL_S": "0.5",
    "SPINUP_REAPER_ORPHAN_GRACE_S": "2",
    "SPINUP_REAPER_USAGE_INTERVAL_S": "5",
    # Objects a create in one append left (ADR 0032): looked for every 2 s, and deleted after
    # the shortest grace the workers accept (twice a create's timeout).
    "SPINUP_RECONCILE_S": "2",
    "SPINUP_ORPHAN_GRACE_S": "0",
    # A deleted cache's keys are removed by a pass of their own (60 s in production).
    "SPINUP_REDIS_UNLINK_INTERVAL_S": "1",
    # Test-only: notify URLs are refused on loopback, except this one address that tests bind
    # their notification receiver to (never set in production; docs/adr/0027).
    "SPINUP_NOTIFY_ALLOWED_NETWORKS": "127.0.0.2/32",
    "SPINUP_NOTIFY_RETRY_S": "1,1,2",
    "SPINUP_NOTIFY_POLL_S": "0.2",
}

#: The periodic passes ``TEST_OVERRIDES`` runs far more often than the services' defaults do
#: (the reaper's, the notifier's, the deleted caches' keys'): left out where a stack must spend
#: what it spends at rest in production (``bench.idle_cost``).
TEST_PERIODS = (
    "SPINUP_REAPER_INTERVAL_S",
    "SPINUP_NOTIFY_POLL_S",
    "SPINUP_REDIS_UNLINK_INTERVAL_S",
)


@dataclass(frozen=True, kw_only=True)
class Ports:
    """The TCP ports of one stack, all on 127.0.0.1."""

    gateway: int
    platform_pg: int
    customer_pg: int
    redis: int
    nats: int
    nats_monitor: int
    customer_redis: int
    customer_nats: int
    customer_nats_monitor: int
    mongo: int
    # SeaweedFS also listens on each of these plus 10000 (gRPC), so they stay below 55536.
    seaweed_s3: int
    seaweed_master: int
    seaweed_volume: int
    seaweed_filer: int

    @classmethod
    def dev(cls) -> Ports:
        """Return the fixed ports of ``make run``."""
        return cls(
            gateway=8080,
            platform_pg=55432,
            customer_pg=55433,
            redis=56379,
            nats=54222,
            nats_monitor=58222,
            customer_redis=56380,
            customer_nats=54223,
            customer_nats_monitor=58223,
            mongo=57017,
            seaweed_s3=38333,
            seaweed_master=39333,
            seaweed_volume=38080,
            seaweed_filer=38888,
        )

    @classmethod
    def free(cls) -> Ports:
        """Return ports that are free right now (for tests)."""
        names = [item.name for item in dataclasses.fields(cls)]
        grpc_paired = [name for name in names if name.startswith("seaweed_")]
        plain = [name for name in names if name not in grpc_paired]
        pairs = free_port_pairs(len(grpc_paired))
        chosen = dict(zip(grpc_paired, pairs, strict=True))
        promised = {*pairs, *(port + PAIR_OFFSET for port in pairs)}
        chosen.update(zip(plain, free_ports(len(plain), avoid=promised), strict=True))
        return cls(**chosen)

    def as_dict(self) -> dict[str, int]:
        """Return the ports by name."""
        return dataclasses.asdict(self)


def _password() -> str:
    return secrets.token_urlsafe(24)


def _key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


@dataclass(frozen=True, kw_only=True)
class Secrets:
    """Passwords and keys generated once per profile and kept in ``secrets.json`` (0600)."""

    platform_pg_superuser: str = field(default_factory=_password)
    platform_pg_spinup: str = field(default_factory=_password)
    customer_pg_superuser: str = field(default_factory=_password)
    redis: str = field(default_factory=_password)
    nats: str = field(default_factory=_password)
    customer_redis: str = field(default_factory=_password)
    mongo_root: str = field(default_factory=_password)
    s3_admin_access_key: str = field(default_factory=lambda: secrets.token_hex(10).upper())
    s3_admin_secret_key: str = field(default_factory=_password)
    # SeaweedFS's own JWT keys (security.toml): the master signs volume writes and reads, the S3
    # gateway signs filer writes and reads; without them, nothing reaches a volume or the filer.
    seaweed_volume_write_key: str = field(default_factory=_key)
    seaweed_volume_read_key: str = field(default_factory=_key)
    seaweed_filer_write_key: str = field(default_factory=_key)
    seaweed_filer_read_key: str = field(default_factory=_key)
    # SeaweedFS's login to its credential store (tenant S3 keys) on the platform Postgres.
    seaweed_credential_pg: str = field(default_factory=_password)
    seal_keys: str = field(default_factory=lambda: f"k1:{_key()}")
    token_key: str = field(default_factory=_key)
    jwt_key: str = field(default_factory=_key)

    @classmethod
    def load_or_create(cls, path: Path) -> Secrets:
        """Read ``path``, generating whatever is missing (and writing the file back if so)."""
        stored: dict[str, str] = {}
        if path.exists():
            loaded = json.loads(path.read_text())
            known = {item.name for item in dataclasses.fields(cls)}
            stored = {key: str(value) for key, value in loaded.items() if key in known}
        result = cls(**stored)
        if stored != dataclasses.asdict(result):
            result.save(path)
        return result

    def save(self, path: Path) -> None:
        """Write the secrets to ``path`` as JSON, readable only by the owner (0600)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            json.dump(dataclasses.asdict(self), handle, indent=2)
            handle.write("\n")


@dataclass(frozen=True, kw_only=True)
class Profile:
    """One stack's directory, ports and service settings.

    Attributes:
        name: ``dev`` or ``test``; also the directory name under ``.spinup/``.
        root: the repository root (services run there; ``plans.yaml`` lives there).
        ports: the TCP ports.
        overrides: extra service environment (wins over the computed one).
        wipe: delete the profile directory before starting (a fresh stack every time).
        durable: keep Postgres' fsync on; off trades crash safety for speed in throwaway stacks.
        roomy_plans: serve ``plans.yaml`` with every cap and rate limit multiplied by
            ``ROOMY_FACTOR``: a test or benchmark stack has one client address for everything.
    """

    name: str
    root: Path
    ports: Ports
    overrides: Mapping[str, str] = field(default_factory=dict)
    wipe: bool = False
    durable: bool = True
    roomy_plans: bool = False

    @property
    def directory(self) -> Path:
        """``<root>/.spinup/<name>``: data, logs, run files and secrets of this profile."""
        return self.root / SPINUP_DIR / self.name

    @property
    def logs_dir(self) -> Path:
        """Where every server and service writes its log."""
        return self.directory / "logs"

    @property
    def run_dir(self) -> Path:
        """Pid files, generated configs, Postgres sockets."""
        return self.directory / "run"

    @property
    def data_dir(self) -> Path:
        """The servers' data directories."""
        return self.directory / "data"

    @classmethod
    def dev(cls, root: Path) -> Profile:
        """Return the ``make run`` profile: fixed ports, data kept between runs."""
        return cls(name="dev", root=root, ports=Ports.dev(), overrides=DEV_OVERRIDES)

    @classmethod
    def test(
        cls, root: Path, overrides: Mapping[str, str] | None = None, name: str = "test"
    ) -> Profile:
        """Return a test profile: free ports, wiped at start, fast reaper, no fsync."""
        return cls(
            name=name,
            root=root,
            ports=Ports.free(),
            overrides={**TEST_OVERRIDES, **(overrides or {})},
            wipe=True,
            durable=False,
            roomy_plans=True,
        )
