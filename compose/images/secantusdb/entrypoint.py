"""Start SecantusDB; on the first start, create its root user first.

SecantusDB has no localhost exception: a fresh ``--auth`` server refuses even the first
``createUser``. So, once (a marker beside the storage directory says when it is done), the
command is run WITHOUT ``--auth`` on loopback and a throwaway port, root is created with the
password of ``MONGO_ROOT_PASSWORD_FILE``, and that server is stopped; then the command itself
(with ``--auth``) replaces this process. The same bootstrap as devstack/mongo.py's ``init``.
"""
# ruff: noqa: INP001  (a script copied into the image, not a package)

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pymongo
from pymongo.errors import OperationFailure, PyMongoError

#: Beside the storage directory, as devstack/mongo.py keeps it.
MARKER_NAME = ".spinup-root-created"
ROOT_USER = "root"
USER_EXISTS = 51003
TIMEOUT_S = 60.0


def _flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _bootstrap_argv(argv: list[str], port: int) -> list[str]:
    """The command without ``--auth``, on 127.0.0.1 and ``port``."""
    out = [arg for arg in argv if arg != "--auth"]
    out[out.index("--host") + 1] = "127.0.0.1"
    out[out.index("--port") + 1] = str(port)
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _create_root(port: int, password: str) -> None:
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{port}/", directConnection=True, serverSelectionTimeoutMS=2000
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                client.admin.command("ping")
                break
            except PyMongoError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        try:
            client.admin.command(
                "createUser",
                ROOT_USER,
                pwd=password,
                roles=[{"role": "root", "db": "admin"}],
                mechanisms=["SCRAM-SHA-256"],
            )
        except OperationFailure as exc:
            if exc.code != USER_EXISTS:  # an earlier bootstrap died after createUser
                raise
            client.admin.command("updateUser", ROOT_USER, pwd=password)
    finally:
        client.close()


def _stop(process: subprocess.Popen[bytes], port: int) -> None:
    process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    while process.poll() is None and time.monotonic() < deadline:
        # A connection wakes the thread blocked in accept() (see devstack/mongo.py's stop).
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
    process.wait()


def main(argv: list[str]) -> int:
    """Bootstrap root once, then become ``argv``."""
    storage = Path(_flag_value(argv, "--storage-path"))
    marker = storage.parent / MARKER_NAME
    if not marker.exists():
        password = Path(os.environ["MONGO_ROOT_PASSWORD_FILE"]).read_text().strip()
        storage.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        process = subprocess.Popen(_bootstrap_argv(argv, port))  # noqa: S603 (our command)
        try:
            _create_root(port, password)
        finally:
            _stop(process, port)
        marker.write_text("root user created\n")
    os.execvp(argv[0], argv)  # noqa: S606 (the container's command)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
