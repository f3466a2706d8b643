"""Every listening socket of the dev stack has its row in docs/security.md, and is bound as it says.

The inventory is the table under "Socket inventory: dev stack" in docs/security.md. Each live
TCP listener of each server and service of the running stack is matched to a row by component
and port (the ``Ports`` field it is, or that field's gRPC twin at + 10000), and the addresses it
is bound to must be exactly the row's: ``loopback`` (nothing but this machine reaches it) or
``tenant`` (the engine bridge's address: this machine and the stack containers the egress rules
let through, never another network). A new server or port without a row, a row whose socket is
gone, or a socket bound anywhere else (``0.0.0.0`` above all) fails here. Who may reach the
tenant address from a container is tests/e2e/test_containment.py's to prove.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from devstack.network import tenant_host
from devstack.procs import TCP_LISTEN, socket_inodes, stat_fields, tcp_sockets
from devstack.stack import Stack

pytestmark = pytest.mark.e2e

SECURITY_DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
INVENTORY_HEADING = "## Socket inventory: dev stack"
_GRPC_OFFSET = 10000


def inventory() -> dict[tuple[str, str], set[str]]:
    """(component, port) -> the address classes the row allows, from docs/security.md."""
    text = SECURITY_DOC.read_text()
    section = text.split(INVENTORY_HEADING, 1)[1]
    # The first table after the heading: its lines start with "|", a blank line ends it.
    table = section.split("\n|", 1)[1].split("\n\n", 1)[0]
    rows: dict[tuple[str, str], set[str]] = {}
    for line in table.splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] in {"Component", ""} or set(cells[0]) <= {"-", ":"}:
            continue
        rows[(cells[0], cells[1])] = {part.strip() for part in cells[2].split(",")}
    return rows


def tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := stat_fields(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    pids, queue = [], [root]
    while queue:
        pid = queue.pop()
        pids.append(pid)
        queue += children.get(pid, [])
    return pids


def port_names(stack: Stack) -> dict[int, str]:
    """Every port of the profile by its ``Ports`` field name, gRPC twins as ``<name>+grpc``.

    A service's metrics port (not a ``Ports`` field: one per service) is ``metrics``.
    """
    named = {}
    for field in dataclasses.fields(stack.profile.ports):
        port = getattr(stack.profile.ports, field.name)
        named[port] = field.name
        if field.name.startswith("seaweed_"):
            named[port + _GRPC_OFFSET] = f"{field.name}+grpc"
    for service in stack.services.values():  # a worker's or the reaper's /metrics listener
        if service.metrics_port is not None:
            named[service.metrics_port] = "metrics"
    return named


def address_class(address: str) -> str:
    if address.startswith("127."):
        return "loopback"
    if address == tenant_host():
        return "tenant"
    return address  # 0.0.0.0 or anything else: no row allows it


def live_sockets(stack: Stack) -> dict[tuple[str, str], set[str]]:
    """(component, port name) -> the address classes it is bound to now."""
    every = tcp_sockets(TCP_LISTEN)
    names = port_names(stack)
    live: dict[tuple[str, str], set[str]] = {}
    for component, process in {**stack.servers, **stack.services}.items():
        if process.pid is None:
            continue
        for inode in socket_inodes(tree(process.pid)):
            for address, port in every.get(inode, []):
                key = (component, names.get(port, f"unnamed port {port}"))
                live.setdefault(key, set()).add(address_class(address))
    return live


def test_every_listening_socket_has_a_row_and_is_bound_as_the_row_says(stack: Stack) -> None:
    rows = inventory()
    live = live_sockets(stack)
    unlisted = {key: bound for key, bound in live.items() if key not in rows}
    assert not unlisted, f"listening sockets without a row in {SECURITY_DOC.name}: {unlisted}"
    wrong = {key: (bound, rows[key]) for key, bound in live.items() if bound != rows[key]}
    assert not wrong, f"bound elsewhere than the inventory says (live, row): {wrong}"
    stale = set(rows) - set(live)
    assert not stale, f"rows whose socket the stack no longer opens: {stale}"


def test_the_inventory_parser_reads_rows_of_every_bound_class() -> None:
    rows = inventory()
    assert ("gateway", "gateway") in rows
    classes = set().union(*rows.values())
    assert classes == {"loopback", "tenant"}
