"""The one address tenants reach the customer servers at: the container engine's bridge.

A customer server (customer Postgres, Redis, NATS, MongoDB, SeaweedFS's S3) answers two kinds of
client: people and agents on this machine, and the containers of stacks. Loopback cannot be
reached from a container, and every interface (``0.0.0.0``) would put each customer server on
whatever network the machine is on, a café's Wi-Fi included. The address both reach, and nothing
else by default, is the gateway of the engine's default bridge (``docker0``, 172.17.0.1 unless
the engine is told otherwise): it is the engine's ``host-gateway`` too, which is what a stack's
containers resolve ``host.docker.internal`` to.

So every customer endpoint a tenant is given names this address. Postgres and Redis can listen
on two addresses and also keep loopback (their provisioners' admin connections); NATS,
SecantusDB and SeaweedFS's S3 gateway bind one address, so they listen here alone. What a
container may reach at this address is decided by the stack deployer's egress rules
(``stack_deployer.firewall``), not by the address.

``SPINUP_CUSTOMER_HOST`` overrides it, for an operator who wants the customer servers on a
public address of the machine (docs/security.md).
"""

from __future__ import annotations

import functools
import ipaddress
import os

from devstack.engine import docker_cli
from devstack.procs import DevstackError

#: The operator's choice of customer address (an IP of this machine), instead of the bridge.
OVERRIDE_VARIABLE = "SPINUP_CUSTOMER_HOST"


def tenant_host() -> str:
    """The address every customer server listens on and every tenant URL names.

    Raises:
        DevstackError: no engine answers (start it first) or the override is not an address.
    """
    chosen = os.environ.get(OVERRIDE_VARIABLE, "").strip()
    if not chosen:
        return _bridge_address()
    try:
        return str(ipaddress.IPv4Address(chosen))
    except ValueError as exc:
        msg = f"{OVERRIDE_VARIABLE} is {chosen!r}, not an IPv4 address"
        raise DevstackError(msg) from exc


@functools.cache
def _bridge_address() -> str:
    """The engine's default bridge's gateway (asked once: it moves only with the engine's config).

    Raises:
        DevstackError: no engine answers.
    """
    # The engine names the default bridge's gateway only when it was configured; otherwise the
    # gateway is the first address of its subnet.
    pool = docker_cli(
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}} {{.Subnet}}{{end}}",
    ).split()
    if not pool:
        msg = "the engine's default bridge has no IPv4 subnet"
        raise DevstackError(msg)
    return pool[0] if len(pool) > 1 else str(next(ipaddress.IPv4Network(pool[0]).hosts()))
