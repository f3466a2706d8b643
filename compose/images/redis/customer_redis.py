"""Run the customer Redis in its container with devstack's own code (devstack/customer_redis.py).

Not a copy of the configuration: ``CustomerRedisServer`` writes it and the aclfile exactly as
``make run`` does (``default`` off, the admin a named user with a hashed password, the aclfile
``/data/users.acl`` holding those two alone while redis-provisioner puts tenants back after a
restart, ``acl-pubsub-default resetchannels``, no DEBUG, MODULE or protected configs,
append-only persistence). Two things differ, both the container's own: the
server binds every address of the container (its one network's and loopback; compose publishes
the port on ``SPINUP_CUSTOMER_BIND``, which plays the tenant address's part), and it becomes this
process (``exec``) instead of a supervised child.

    spinup-customer-redis           # configure, then exec redis-server
    spinup-customer-redis --check   # the healthcheck: AUTH as the admin, PING
"""
# ruff: noqa: INP001  (a script copied into the image, not a package)

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from devstack.customer_redis import NAME, CustomerRedisServer
from devstack.network import OVERRIDE_VARIABLE

PORT = 6379
DATA_DIR = Path("/data")
#: The generated redis.conf (no secret in it: the admin's password is a hash in the aclfile).
RUN_DIR = Path("/tmp")  # noqa: S108  (the container's own, and a tmpfs in compose)
#: Every address of the container.
CONTAINER_BIND = "bind 0.0.0.0"


class ContainerRedisServer(CustomerRedisServer):
    """``CustomerRedisServer`` that binds the container's addresses and execs the server."""

    def config(self) -> str:
        """Devstack's redis.conf, its ``bind`` line replaced by the container's."""
        lines = super().config().splitlines()
        binds = [index for index, line in enumerate(lines) if line.split()[:1] == ["bind"]]
        if len(binds) != 1:
            msg = f"devstack's customer redis.conf has {len(binds)} bind lines, expected one"
            raise RuntimeError(msg)
        lines[binds[0]] = CONTAINER_BIND
        return "".join(f"{line}\n" for line in lines)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> None:
        """Become the server (it is the container's main process)."""
        if user is not None:
            msg = "the container's user is set by its image, not here"
            raise RuntimeError(msg)
        if cwd is not None:
            os.chdir(cwd)
        if env is None:
            os.execv(argv[0], list(argv))  # noqa: S606  (the container's command)
        os.execve(argv[0], list(argv), dict(env))  # noqa: S606  (the container's command)


def make_server(
    password: str, *, data_dir: Path = DATA_DIR, run_dir: Path = RUN_DIR
) -> ContainerRedisServer:
    """The customer Redis as devstack's ``make_server`` makes it for a durable profile."""
    # devstack asks for the tenant address; the container's bind line replaces it (config()).
    os.environ.setdefault(OVERRIDE_VARIABLE, "127.0.0.1")
    return ContainerRedisServer(
        NAME,
        data_dir=data_dir,
        run_dir=run_dir,
        log_path=Path(os.devnull),
        port=PORT,
        password=password,
        durable=True,
    )


def _password() -> str:
    return Path(os.environ["REDIS_PASSWORD_FILE"]).read_text().strip()


def main(argv: list[str]) -> int:
    """Start the server (devstack's init and start), or check it with ``--check``."""
    server = make_server(_password())
    if argv == ["--check"]:
        return 0 if server.ready() else 1
    server.init()
    server.start()  # execs redis-server
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
