"""The customer NATS server, where queue-provisioner makes one NATS account per tenant.

Separate from the platform NATS (DESIGN.md: control plane and customer data never share a
server). It runs in operator/JWT mode with the full resolver: accounts are JWTs signed by the
operator, pushed at run time over ``$SYS.REQ.CLAIMS.UPDATE`` and removed with
``$SYS.REQ.CLAIMS.DELETE`` (docs/backends.md, NATS).

The first ``init`` mints the operator, the system account (SYS) and a SYS user, and keeps them
under ``<data>/keys`` (0700, files 0600): the operator seed and the SYS user's ``.creds`` reach
queue-provisioner only. Minting needs ``nkeys`` (a venv package), imported inside ``init`` so
devstack stays stdlib-only at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devstack.network import tenant_host
from devstack.procs import http_ok
from devstack.servers import Server, nats_server_binary, write_private

if TYPE_CHECKING:
    from pathlib import Path

    from devstack.profile import Profile, Secrets

NAME = "customer-nats"

_OPERATOR_SEED = "operator.seed"
_OPERATOR_JWT = "operator.jwt"
_SYSTEM_ACCOUNT = "system_account.pub"
_SYSTEM_ACCOUNT_JWT = "system_account.jwt"
_SYSTEM_USER_CREDS = "system_user.creds"
#: The largest message the server takes, in KiB: what it advertises to every client in INFO
#: before the client logs in, so every tier's ``nats.max_payload_kb`` in plans.yaml must equal
#: it (ADR 0025; tests/unit/test_first_try_limits.py). An account allowing less than the server
#: advertises sees a bigger publish leave the client and lose its connection.
MAX_PAYLOAD_KB = 1024
#: The memory and file store JetStream has here for the tenants' streams.
JETSTREAM_MEMORY_STORE_MB = 256
JETSTREAM_FILE_STORE_MB = 2048
#: How many times that store the server may promise in account limits (ADR 0050): a standalone
#: nats-server reserves each account's limits as it enables JetStream for it and refuses an
#: account past ``max_*_store``, so the ceilings it is given are what it has times this.
JETSTREAM_OVERCOMMIT = 64


class CustomerNatsServer(Server):
    """``nats-server`` in operator mode with JetStream and the full account resolver."""

    label = "customer nats"

    def __init__(
        self,
        name: str,
        *,
        data_dir: Path,
        run_dir: Path,
        log_path: Path,
        port: int,
        monitor_port: int,
    ) -> None:
        """Describe the server; ``init`` mints its keys, ``start`` runs it."""
        super().__init__(name, log_path=log_path, pid_path=run_dir / f"{name}.pid")
        self.data_dir = data_dir
        self.keys_dir = data_dir / "keys"
        self.conf_path = run_dir / f"{name}.conf"
        self.port = port
        self.monitor_port = monitor_port

    @property
    def operator_seed_path(self) -> Path:
        """The operator's seed: it signs every account JWT and delete claim."""
        return self.keys_dir / _OPERATOR_SEED

    @property
    def system_creds_path(self) -> Path:
        """The SYS user's ``.creds``: it may push and delete account JWTs."""
        return self.keys_dir / _SYSTEM_USER_CREDS

    def needs_init(self) -> bool:
        """Return whether the operator and system account are still to be minted."""
        return not (self.keys_dir / _SYSTEM_USER_CREDS).exists()

    def init(self) -> bool:
        """Mint operator, SYS account and SYS user unless done before; True if it minted."""
        if not self.needs_init():
            return False
        from shared.crypto import natsjwt  # noqa: PLC0415 (venv package: devstack imports stdlib only)

        operator = natsjwt.NKey.generate(natsjwt.KeyKind.OPERATOR)
        system = natsjwt.NKey.generate(natsjwt.KeyKind.ACCOUNT)
        system_user = natsjwt.NKey.generate(natsjwt.KeyKind.USER)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.keys_dir.mkdir(mode=0o700, exist_ok=True)
        self.keys_dir.chmod(0o700)
        files = {
            _OPERATOR_SEED: operator.seed + "\n",
            _OPERATOR_JWT: natsjwt.operator_jwt(
                operator, name="spinup", system_account=system.public_key
            ),
            _SYSTEM_ACCOUNT: system.public_key,
            _SYSTEM_ACCOUNT_JWT: natsjwt.account_jwt(
                system.public_key, operator, name="SYS", limits=natsjwt.AccountLimits()
            ),
            # Written last: its presence is what ``needs_init`` checks.
            _SYSTEM_USER_CREDS: natsjwt.creds_file(
                natsjwt.user_jwt(system_user.public_key, system, name="spinup-sys"),
                system_user.seed,
            ),
        }
        for filename, text in files.items():
            write_private(self.keys_dir / filename, text)
        return True

    def start(self) -> None:
        """Write the config from the minted JWTs and start the server."""
        read = {name: (self.keys_dir / name).read_text().strip() for name in _PUBLIC_FILES}
        system = read[_SYSTEM_ACCOUNT]
        (self.data_dir / "js").mkdir(exist_ok=True)
        (self.data_dir / "jwt").mkdir(exist_ok=True)
        conf = (
            f"server_name: spinup_customer_{self.port}\n"
            # One client listener only (nats-server binds one address): the tenant address.
            f"listen: {tenant_host()}:{self.port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            f"max_payload: {MAX_PAYLOAD_KB * 1024}\n"
            "jetstream {\n"
            f'  store_dir: "{self.data_dir / "js"}"\n'
            f"  max_memory_store: {JETSTREAM_MEMORY_STORE_MB * JETSTREAM_OVERCOMMIT}MB\n"
            f"  max_file_store: {JETSTREAM_FILE_STORE_MB * JETSTREAM_OVERCOMMIT}MB\n"
            "}\n"
            f"operator: {read[_OPERATOR_JWT]}\n"
            f"system_account: {system}\n"
            "resolver {\n"
            "  type: full\n"
            f'  dir: "{self.data_dir / "jwt"}"\n'
            # Needed for $SYS.REQ.CLAIMS.DELETE, which is how a tenant's account goes away.
            "  allow_delete: true\n"
            # Removed, not kept as <key>.jwt.deleted for ever: the event log is the record.
            "  hard_delete: true\n"
            '  interval: "2m"\n'
            '  timeout: "1.9s"\n'
            "}\n"
            "resolver_preload {\n"
            f"  {system}: {read[_SYSTEM_ACCOUNT_JWT]}\n"
            "}\n"
        )
        write_private(self.conf_path, conf)
        self.spawn([str(nats_server_binary()), "-c", str(self.conf_path)], cwd=self.data_dir)

    def ready(self) -> bool:
        """Return whether the monitor's healthz (JetStream included) answers 200."""
        return http_ok(f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true")


_PUBLIC_FILES = (_OPERATOR_JWT, _SYSTEM_ACCOUNT, _SYSTEM_ACCOUNT_JWT)


def make_server(profile: Profile, secrets: Secrets) -> CustomerNatsServer:  # noqa: ARG001
    """The server; its keys are files under its data directory, not profile secrets."""
    return CustomerNatsServer(
        NAME,
        data_dir=profile.data_dir / NAME,
        run_dir=profile.run_dir,
        log_path=profile.logs_dir / f"{NAME}.log",
        port=profile.ports.customer_nats,
        monitor_port=profile.ports.customer_nats_monitor,
    )


def worker_env(profile: Profile, secrets: Secrets) -> dict[str, str]:
    """queue-provisioner's SYS creds, operator seed, and the address tenants are given."""
    server = make_server(profile, secrets)
    url = f"nats://{tenant_host()}:{profile.ports.customer_nats}"
    return {
        "SPINUP_CUSTOMER_NATS_URL": url,
        "SPINUP_CUSTOMER_NATS_SYSTEM_CREDS": str(server.system_creds_path),
        "SPINUP_CUSTOMER_NATS_OPERATOR_SEED_FILE": str(server.operator_seed_path),
        "SPINUP_CUSTOMER_NATS_PUBLIC_URL": url,
    }
