"""devstack.secantusd's ``serverStatus.connections.available``: the ceiling less ``current``."""

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pymongo
import pytest
from secantus import commands
from secantus.metrics import Metrics
from secantus.server import SecantusDBServer

from devstack.secantusd import MAX_CONNECTIONS, available_connections, recording_max_connections

#: Room for the test's clients: each keeps a monitoring connection or two besides its own.
MAX = 40


def status_of(current: int) -> Any:
    def server_status(_doc: dict[str, Any], _ctx: Any) -> dict[str, Any]:
        return {"connections": {"current": current, "available": 0, "totalCreated": 9}, "ok": 1.0}

    return server_status


def noted(ceiling: int) -> SimpleNamespace:
    metrics = Metrics()
    setattr(metrics, MAX_CONNECTIONS, ceiling)
    return SimpleNamespace(metrics=metrics)


def test_available_is_the_ceiling_less_current_and_never_below_zero() -> None:
    reply = available_connections(status_of(3))({"serverStatus": 1}, noted(10))
    assert reply["connections"] == {"current": 3, "available": 7, "totalCreated": 9}
    full = available_connections(status_of(12))({"serverStatus": 1}, noted(10))
    assert full["connections"]["available"] == 0


def test_without_a_noted_ceiling_the_reply_is_secantus_own() -> None:
    for ctx in (SimpleNamespace(metrics=None), SimpleNamespace(metrics=Metrics())):
        reply = available_connections(status_of(3))({"serverStatus": 1}, ctx)
        assert reply["connections"]["available"] == 0


class _Recording(SecantusDBServer):
    __init__ = recording_max_connections(SecantusDBServer.__init__)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SecantusDBServer]:
    handlers: dict[str, Any] = commands._HANDLERS
    monkeypatch.setitem(handlers, "serverStatus", available_connections(handlers["serverStatus"]))
    running = _Recording(
        storage_path=str(tmp_path / "wt"), replica_set_name=None, max_connections=MAX
    )
    running.start()
    yield running
    # A thread blocked in accept() is woken by a shutdown, not by the close in stop() (Linux),
    # which would otherwise wait out its 2 s join of that thread.
    with contextlib.suppress(OSError):
        running._socket.shutdown(socket.SHUT_RDWR)
    running.stop()


def test_a_running_server_reports_its_max_connections_as_current_plus_available(
    server: SecantusDBServer,
) -> None:
    host, port = server.address
    clients = [
        pymongo.MongoClient(host, port, directConnection=True, serverSelectionTimeoutMS=2000)
        for _ in range(2)
    ]
    try:
        for client in clients:
            client.admin.command("ping")
        connections = clients[0].admin.command("serverStatus")["connections"]
        assert connections["current"] >= len(clients)
        assert connections["current"] + connections["available"] == server.max_connections == MAX
    finally:
        for client in clients:
            client.close()
