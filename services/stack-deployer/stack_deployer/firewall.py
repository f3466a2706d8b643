"""What a stack's containers may connect to, enforced by the engine host's packet filter.

Why this exists: a stack runs a stranger's code on the same host as the shared customer servers
and SeaweedFS's internal ports. The engine's own rules keep stacks apart from each other, but
not from the host: a container reaches every port the host listens on through its network's
gateway (the ``INPUT`` chain), and every private, link-local (169.254.0.0/16, cloud metadata)
and public address beyond it (``FORWARD``). Egress is therefore deny-by-default, per stack:

- every stack network's bridge is named ``sp-<12 hex of the stack id>`` (``bridge_name``), so
  one interface pattern, ``sp-+``, catches every stack container's traffic, whatever the stack;
- ``INPUT -i sp-+`` and ``DOCKER-USER -i sp-+`` (the engine's hook for its forwarded traffic)
  jump to ``SPINUP-EGRESS``: replies pass, then ``SPINUP-STACKS`` holds one jump per stack into
  that stack's own chain (``SPINUP-S-<hex>``), and anything not accepted there is rejected;
- a stack's chain accepts its own network, the TCP endpoints its backing resources name (host
  and port, nothing else on that host), and, when its plan allows the internet, public
  addresses (``SPINUP-PUBLIC`` returns for every private, shared, loopback, link-local,
  multicast and reserved range and for the host's own addresses);
- IPv6 from a stack bridge is rejected outright (stack networks are IPv4 only).

The base chains are installed before the engine starts (``python -m stack_deployer.firewall``,
which devstack runs before it starts ``dockerd``; a production host runs it before
``docker.service``) and by every deployer on start, so a container that starts before its
stack's rules are back is refused everything rather than allowed everything. Each stack's rules
are made from the egress label its containers carry, so a deployer restarted after an engine
or host restart rebuilds them from the engine alone, and ``ensure`` puts back anything missing.

Every change goes through ``iptables-restore --noflush``: one chain is replaced whole, atomically,
and nothing of the engine's or anyone else's is touched.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import msgspec
import structlog

from shared.contracts.errors import BackendUnavailableError

log = structlog.get_logger("stack_deployer.firewall")

#: Every stack bridge's name starts so (``sp-`` + 12 hex = 15, the kernel's longest name).
BRIDGE_PREFIX = "sp-"
EGRESS_CHAIN = "SPINUP-EGRESS"
STACKS_CHAIN = "SPINUP-STACKS"
PUBLIC_CHAIN = "SPINUP-PUBLIC"
_STACK_CHAIN_PREFIX = "SPINUP-S-"
#: The engine's chain for rules of the host's own, evaluated before its own FORWARD rules.
ENGINE_HOOK_CHAIN = "DOCKER-USER"
_ID_CHARS = 12

#: Never "the internet": private, shared (CGNAT), loopback, link-local (cloud metadata),
#: documentation, benchmarking, multicast and reserved ranges (RFC 6890).
NOT_PUBLIC = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
_RESOLV_CONF = Path("/etc/resolv.conf")
_DNS_PORT = 53


class Endpoint(msgspec.Struct, frozen=True, order=True):
    """A TCP endpoint a stack's containers may open connections to."""

    host: str
    port: int


class Egress(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a stack's containers may reach beyond their own network.

    ``connections_per_endpoint``: what they may hold open at once to each endpoint, all
    containers together (None, in labels written before it: no bound).
    """

    endpoints: tuple[Endpoint, ...] = ()
    internet: bool = False
    connections_per_endpoint: int | None = None


_encode = msgspec.json.Encoder()
_decode = msgspec.json.Decoder(Egress)


def encode_egress(egress: Egress) -> str:
    """The egress as the container label holds it."""
    return _encode.encode(egress).decode()


def decode_egress(label: str) -> Egress:
    """The egress a container label holds; nothing allowed when it is missing or unreadable."""
    try:
        return _decode.decode(label)
    except msgspec.DecodeError:
        return Egress()


_DEFAULT_PORTS = {
    "postgres": 5432,
    "postgresql": 5432,
    "redis": 6379,
    "rediss": 6379,
    "mongodb": 27017,
    "nats": 4222,
    "tls": 4222,
    "http": 80,
    "https": 443,
}


def endpoints_of(values: Iterable[str]) -> tuple[Endpoint, ...]:
    """The host and port of every URL among ``values`` (connection URLs, S3 endpoints).

    A MongoDB URL may name several hosts (``mongodb://u:p@a:1,b:2/db``): each counts.
    """
    found: set[Endpoint] = set()
    for value in values:
        scheme, separator, rest = value.partition("://")
        default = _DEFAULT_PORTS.get(scheme.lower())
        if not separator or default is None:
            continue
        authority = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
        for member in authority.split(","):
            host, colon, port = member.rpartition(":")
            if not colon or "]" in port:
                host, port = member, ""
            host = host.strip("[]")
            if host and (not port or port.isdigit()):
                found.add(Endpoint(host=host, port=int(port) if port else default))
    return tuple(sorted(found))


def _hex(stack_id: str) -> str:
    return stack_id.replace("-", "")[:_ID_CHARS]


def bridge_name(stack_id: str) -> str:
    """The Linux bridge of a stack's network."""
    return f"{BRIDGE_PREFIX}{_hex(stack_id)}"


def stack_chain(stack_id: str) -> str:
    """The chain holding one stack's allowances."""
    return f"{_STACK_CHAIN_PREFIX}{_hex(stack_id)}"


def _stack_jump(stack_id: str) -> str:
    return f"-A {STACKS_CHAIN} -i {bridge_name(stack_id)} -j {stack_chain(stack_id)}"


def base_rules() -> str:
    """``iptables-restore --noflush`` input for the shared chains (replaced whole each time)."""
    lines = [
        "*filter",
        f":{EGRESS_CHAIN} - [0:0]",
        f":{PUBLIC_CHAIN} - [0:0]",
        f"-A {EGRESS_CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        f"-A {EGRESS_CHAIN} -j {STACKS_CHAIN}",
        f"-A {EGRESS_CHAIN} -p tcp -j REJECT --reject-with tcp-reset",
        f"-A {EGRESS_CHAIN} -j REJECT --reject-with icmp-port-unreachable",
        *(f"-A {PUBLIC_CHAIN} -d {network} -j RETURN" for network in NOT_PUBLIC),
        f"-A {PUBLIC_CHAIN} -m addrtype --dst-type LOCAL -j RETURN",
        f"-A {PUBLIC_CHAIN} -j ACCEPT",
        "COMMIT",
        "",
    ]
    return "\n".join(lines)


def _ipv4_addresses(host: str) -> list[str]:
    """The IPv4 addresses ``host`` names now (itself when it is one)."""
    try:
        return [str(ipaddress.IPv4Address(host))]
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except OSError:
        log.warning("stack_deployer.firewall.unresolved", host=host)
        return []
    return sorted({str(entry[4][0]) for entry in found})


def nameservers(resolv_conf: Path = _RESOLV_CONF) -> list[str]:
    """The host's IPv4 nameservers (what the engine's DNS forwards a container's lookups to)."""
    try:
        text = resolv_conf.read_text()
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":  # noqa: PLR2004 (keyword and address)
            try:
                address = ipaddress.IPv4Address(words[1])
            except ValueError:
                continue
            if not address.is_loopback:
                found.append(str(address))
    return found


def stack_rules(
    stack_id: str, egress: Egress, aliases: Mapping[str, str], dns: Iterable[str]
) -> str:
    """``iptables-restore --noflush`` input that replaces one stack's chain.

    ``aliases`` maps names only the engine resolves (``host.docker.internal``) to addresses.
    """
    chain = stack_chain(stack_id)
    lines = ["*filter", f":{chain} - [0:0]", f"-A {chain} -o {bridge_name(stack_id)} -j ACCEPT"]
    for endpoint in sorted(set(egress.endpoints)):
        host = aliases.get(endpoint.host, endpoint.host)
        for address in _ipv4_addresses(host):
            match = f"-A {chain} -d {address}/32 -p tcp --dport {endpoint.port}"
            if egress.connections_per_endpoint is not None:
                # Mask 0: every container of the stack counts as one source. A shared server's
                # connection ceiling (Redis maxclients, MongoDB's, Postgres max_connections) is
                # every tenant's, and unauthenticated connections fill it too.
                lines.append(
                    f"{match} -m connlimit --connlimit-above {egress.connections_per_endpoint}"
                    " --connlimit-mask 0 -j REJECT --reject-with tcp-reset"
                )
            lines.append(f"{match} -j ACCEPT")
    if egress.internet:
        for server in dns:
            lines += [
                f"-A {chain} -d {server}/32 -p {protocol} --dport {_DNS_PORT} -j ACCEPT"
                for protocol in ("udp", "tcp")
            ]
        lines.append(f"-A {chain} -j {PUBLIC_CHAIN}")
    lines += ["COMMIT", ""]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Hook:
    """A jump from a built-in (or the engine's) chain into ours, for one IP version."""

    table_command: str
    chain: str
    rule: tuple[str, ...]


_HOOKS = (
    _Hook("iptables", "INPUT", ("-i", f"{BRIDGE_PREFIX}+", "-j", EGRESS_CHAIN)),
    _Hook("iptables", ENGINE_HOOK_CHAIN, ("-i", f"{BRIDGE_PREFIX}+", "-j", EGRESS_CHAIN)),
    _Hook("ip6tables", "INPUT", ("-i", f"{BRIDGE_PREFIX}+", "-j", "REJECT")),
    _Hook("ip6tables", "FORWARD", ("-i", f"{BRIDGE_PREFIX}+", "-j", "REJECT")),
)


async def _run(*argv: str, stdin: str | None = None) -> tuple[int, str]:
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        return 127, f"{argv[0]}: {exc}"
    out, _ = await process.communicate(stdin.encode() if stdin is not None else None)
    return process.returncode or 0, out.decode(errors="replace").strip()


async def _must(*argv: str, stdin: str | None = None) -> str:
    code, out = await _run(*argv, stdin=stdin)
    if code != 0:
        log.error("stack_deployer.firewall.failed", command=" ".join(argv[:3]), output=out)
        msg = "The stack egress rules could not be installed on the engine host."
        raise BackendUnavailableError(msg)
    return out


class Firewall:
    """The packet filter rules of this deployer's stacks (see the module docstring)."""

    def __init__(self, aliases: Mapping[str, str] | None = None) -> None:
        #: Names in endpoints that only the engine resolves, with the address they stand for.
        self.aliases = dict(aliases or {})
        self._egress: dict[str, Egress] = {}
        self._lock = asyncio.Lock()

    async def install_base(self) -> None:
        """Create or refresh the shared chains and the hooks into them (idempotent).

        Raises:
            BackendUnavailableError: iptables is missing or refused (not root, no NET_ADMIN).
        """
        for command, chain in (("iptables", STACKS_CHAIN), ("iptables", ENGINE_HOOK_CHAIN)):
            code, _ = await _run(command, "-w", "-n", "-L", chain)
            if code != 0:
                await _must(command, "-w", "-N", chain)
        await _must("iptables-restore", "-w", "--noflush", stdin=base_rules())
        for hook in _HOOKS:
            code, _ = await _run(hook.table_command, "-w", "-C", hook.chain, *hook.rule)
            if code != 0:
                await _must(hook.table_command, "-w", "-I", hook.chain, "1", *hook.rule)

    async def allow(self, stack_id: str, egress: Egress) -> None:
        """Replace what ``stack_id``'s containers may reach (before they start or build).

        Raises:
            BackendUnavailableError: the rules could not be installed (nothing is started then).
        """
        async with self._lock:
            self._egress[stack_id] = egress
            await self._apply(stack_id, egress)

    async def _apply(self, stack_id: str, egress: Egress) -> None:
        rules = stack_rules(stack_id, egress, self.aliases, nameservers())
        await _must("iptables-restore", "-w", "--noflush", stdin=rules)
        jump = _stack_jump(stack_id).split()[2:]
        code, _ = await _run("iptables", "-w", "-C", STACKS_CHAIN, *jump)
        if code != 0:
            await _must("iptables", "-w", "-A", STACKS_CHAIN, *jump)

    async def forget(self, stack_id: str) -> None:
        """Remove a stack's chain and its jump (idempotent)."""
        async with self._lock:
            self._egress.pop(stack_id, None)
            jump = _stack_jump(stack_id).split()[2:]
            while (await _run("iptables", "-w", "-D", STACKS_CHAIN, *jump))[0] == 0:
                pass
            chain = stack_chain(stack_id)
            await _run("iptables", "-w", "-F", chain)
            await _run("iptables", "-w", "-X", chain)

    async def ensure(self) -> int:
        """Put back whatever is missing (a host restart, a flush); how many stacks were redone.

        Raises:
            BackendUnavailableError: the rules could not be read or installed.
        """
        async with self._lock:
            saved = await _must("iptables-save", "-t", "filter")
            present = set(saved.splitlines())
            hooks_ok = all(
                f"-A {hook.chain} {' '.join(hook.rule)}" in present
                for hook in _HOOKS
                if hook.table_command == "iptables"
            )
            base_ok = f"-A {EGRESS_CHAIN} -j {STACKS_CHAIN}" in present
            if not (hooks_ok and base_ok):
                log.warning("stack_deployer.firewall.base_restored")
                await self.install_base()
            redone = 0
            for stack_id, egress in sorted(self._egress.items()):
                if _stack_jump(stack_id) not in present:
                    await self._apply(stack_id, egress)
                    redone += 1
            if redone:
                log.warning("stack_deployer.firewall.stacks_restored", stacks=redone)
            return redone


async def watch(firewall: Firewall, interval_s: float) -> None:
    """Every ``interval_s``, put back whatever rule went missing, until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await firewall.ensure()
        except BackendUnavailableError:
            # Logged where it failed; the next round tries again (containers stay refused).
            continue


def main() -> int:
    """``python -m stack_deployer.firewall``: install the base chains (before the engine starts)."""
    try:
        asyncio.run(Firewall().install_base())
    except BackendUnavailableError as exc:
        sys.stderr.write(f"stack egress rules: {exc.message} Run as root with iptables.\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
