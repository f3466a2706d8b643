"""The customer Redis, where redis-provisioner makes one ACL user and key prefix per tenant.

A separate ``redis-server`` from the platform one (rate limits, counters): a tenant can never
reach platform keys, and a wrong URL fails loudly. The ``aclfile`` in the data directory holds
the fixed users alone (``default`` off and the admin; Redis refuses ``user`` lines in the config
once an aclfile is set). Tenants' users live in the server's memory: after a restart
redis-provisioner puts them back from the event log (ADR 0045).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.network import tenant_host
from devstack.servers import RedisServer, write_private

if TYPE_CHECKING:
    from devstack.profile import Profile, Secrets

NAME = "customer-redis"
#: The memory the server may hold, every tenant's keys and clients together: more than the
#: largest tier's ``redis.memory_mb`` (tests/unit/test_first_try_limits.py). Redis has no limit
#: per user, and the usage sweep finds a tenant past its quota only at its next pass.
MAXMEMORY_MB = 8192
ADMIN_USER = "spinup-admin"
ACL_FILE = "users.acl"


class CustomerRedisServer(RedisServer):
    """``redis-server`` with ACL users only: ``default`` is off, the admin is a named user.

    ``durable`` keeps tenants' data across restarts (append-only file); throwaway test stacks
    run without persistence of keys.
    """

    label = "customer redis"

    def __init__(
        self,
        name: str,
        *,
        data_dir: Path,
        run_dir: Path,
        log_path: Path,
        port: int,
        password: str,
        durable: bool,
    ) -> None:
        """Describe the server; ``init`` and ``start`` create and run it."""
        super().__init__(
            name,
            data_dir=data_dir,
            run_dir=run_dir,
            log_path=log_path,
            port=port,
            password=password,
        )
        self.durable = durable
        self.acl_path = data_dir / ACL_FILE

    def needs_init(self) -> bool:
        """Return whether the data directory or its aclfile is missing."""
        return not self.acl_path.exists()

    def init(self) -> bool:
        """Create the data directory and an aclfile holding only the admin; True if created."""
        if self.acl_path.exists():
            return False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_acl_file()
        return True

    def _fixed_users(self) -> list[str]:
        # The admin's password is stored as its SHA-256 (Redis' "#<hex>" form), never in clear.
        digest = hashlib.sha256(self.password.encode()).hexdigest()
        return [
            "user default off resetkeys resetchannels -@all",
            f"user {ADMIN_USER} on #{digest} ~* &* +@all",
        ]

    def _write_acl_file(self) -> None:
        """Write the aclfile atomically (0600) with the fixed users only.

        Written at every start: the secret may be new, and a tenant line an earlier version
        saved there would bring back, at each restart, a user the log may have deleted since.
        """
        text = "".join(f"{line}\n" for line in self._fixed_users())
        partial = self.acl_path.with_name(f".{ACL_FILE}.partial")
        write_private(partial, text)
        partial.replace(self.acl_path)

    def config(self) -> str:
        """ACL users only (from the aclfile), no DEBUG or modules, persistence when durable."""
        persistence = (
            # Customer data: an fsync a second bounds a crash's loss to about one second.
            "appendonly yes\nappendfsync everysec\nsave 3600 1 300 100 60 10000\n"
            if self.durable
            else 'appendonly no\nsave ""\n'
        )
        return (
            # Loopback for redis-provisioner's admin connection, the tenant address for tenants.
            f"bind 127.0.0.1 {tenant_host()}\n"
            f"port {self.port}\n"
            "protected-mode yes\n"
            f'aclfile "{self.acl_path}"\n'
            # Channels are opt-in per user (the 7.x default, stated so an upgrade cannot flip it).
            "acl-pubsub-default resetchannels\n"
            "enable-debug-command no\n"
            "enable-module-command no\n"
            "enable-protected-configs no\n"
            # One tenant writing faster than the sweep finds it must not take the server out of
            # memory with everyone's data: past maxmemory every write is refused, no key is ever
            # evicted (any policy would drop other tenants' keys), and the clients holding the
            # most buffers (a huge pending command, an unread subscription) are cut first.
            f"maxmemory {MAXMEMORY_MB}mb\n"
            "maxmemory-policy noeviction\n"
            "maxmemory-clients 10%\n"
            f"{persistence}"
            f'dir "{self.data_dir}"\n'
            "daemonize no\n"
            'logfile ""\n'
        )

    def auth(self) -> list[str]:
        """Readiness logs in as the admin user (``default`` is off)."""
        return [ADMIN_USER, self.password]

    def start(self) -> None:
        """Write the aclfile's fixed users, then start as the platform Redis does."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_acl_file()
        super().start()


def make_server(profile: Profile, secrets: Secrets) -> CustomerRedisServer:
    """The customer Redis: ACL users only, key persistence when the profile is durable."""
    return CustomerRedisServer(
        NAME,
        data_dir=profile.data_dir / NAME,
        run_dir=profile.run_dir,
        log_path=profile.logs_dir / f"{NAME}.log",
        port=profile.ports.customer_redis,
        password=secrets.customer_redis,
        durable=profile.durable,
    )


def worker_env(profile: Profile, secrets: Secrets) -> dict[str, str]:
    """redis-provisioner's admin URL and the address tenants are given."""
    port = profile.ports.customer_redis
    return {
        "SPINUP_CUSTOMER_REDIS_URL": (
            f"redis://{ADMIN_USER}:{secrets.customer_redis}@127.0.0.1:{port}/0"
        ),
        "SPINUP_CUSTOMER_REDIS_HOST": tenant_host(),
        "SPINUP_CUSTOMER_REDIS_PORT": str(port),
    }
