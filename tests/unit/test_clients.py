"""Who the client is: X-Forwarded-For believed only from trusted proxies, and its fingerprint."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

import pytest
from litestar import Request

from gateway.admission.clients import UNKNOWN, client_ip
from shared.crypto.tokens import fingerprint

LOOPBACK = (ip_network("127.0.0.1/32"),)
PROXY_TIERS = (ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8"))
V6_PROXIES = (ip_network("::1/128"), ip_network("fd00::/8"))


def request_from(
    peer: str | None, *forwarded_for: str, other_headers: dict[str, str] | None = None
) -> Request[Any, Any, Any]:
    """An HTTP request as the server hands it over: a TCP peer and raw headers (repeats kept)."""
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded_for]
    headers += [(k.encode(), v.encode()) for k, v in (other_headers or {}).items()]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/db/new",
        "raw_path": b"/db/new",
        "query_string": b"",
        "headers": headers,
        "client": (peer, 50000) if peer is not None else None,
    }
    return Request(scope)  # type: ignore[arg-type]


def ip_of(
    peer: str | None,
    *forwarded_for: str,
    trusted: tuple[IPv4Network | IPv6Network, ...] = LOOPBACK,
) -> str:
    return client_ip(request_from(peer, *forwarded_for), trusted)


def test_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert ip_of("198.51.100.7", "203.0.113.9") == "198.51.100.7"
    assert ip_of("198.51.100.7", "203.0.113.9", trusted=()) == "198.51.100.7"
    assert ip_of("127.0.0.1", "203.0.113.9", trusted=()) == "127.0.0.1"


def test_trusted_peer_without_forwarded_for_is_the_client() -> None:
    assert ip_of("127.0.0.1") == "127.0.0.1"
    assert ip_of("127.0.0.1", "") == "127.0.0.1"


def test_trusted_peer_names_the_rightmost_untrusted_hop() -> None:
    assert ip_of("127.0.0.1", "203.0.113.9") == "203.0.113.9"
    # Whatever the client wrote itself sits left of what the proxy appended: never believed.
    assert ip_of("127.0.0.1", "192.0.2.1, 203.0.113.9") == "203.0.113.9"
    assert ip_of("127.0.0.1", " 192.0.2.1 ,203.0.113.9 ") == "203.0.113.9"


def test_a_chain_of_trusted_proxies_is_walked_back_to_the_client() -> None:
    chain = "192.0.2.1, 203.0.113.9, 10.1.2.3, 10.9.9.9"
    assert ip_of("127.0.0.1", chain, trusted=PROXY_TIERS) == "203.0.113.9"
    # The same chain reaching a gateway that trusts only its own host stops at the first hop.
    assert ip_of("127.0.0.1", chain, trusted=LOOPBACK) == "10.9.9.9"
    # A peer outside every trusted network is the client even if it forwards a trusted chain.
    assert ip_of("198.51.100.7", chain, trusted=PROXY_TIERS) == "198.51.100.7"


def test_only_trusted_hops_mean_the_request_came_from_inside() -> None:
    assert ip_of("127.0.0.1", "10.0.0.5, 10.0.0.6", trusted=PROXY_TIERS) == "10.0.0.5"


def test_garbage_hop_stops_the_walk_at_the_peer() -> None:
    # Nothing left of an unparseable hop can be trusted: the proxy vouched for no address.
    assert ip_of("127.0.0.1", "203.0.113.9, not-an-ip") == "127.0.0.1"
    assert ip_of("127.0.0.1", "unknown") == "127.0.0.1"
    assert ip_of("127.0.0.1", "203.0.113.9:4711") == "127.0.0.1"
    assert ip_of("127.0.0.1", "999.1.1.1") == "127.0.0.1"
    # Garbage written by the client left of the proxy's entry changes nothing.
    assert ip_of("127.0.0.1", "<script>, 203.0.113.9") == "203.0.113.9"
    # Empty list entries are skipped, not taken for garbage.
    assert ip_of("127.0.0.1", ", ,203.0.113.9,") == "203.0.113.9"
    # Garbage between trusted hops ends the walk at the peer as well.
    assert ip_of("127.0.0.1", "203.0.113.9, x, 10.0.0.2", trusted=PROXY_TIERS) == "127.0.0.1"


def test_ipv6_peers_proxies_and_clients() -> None:
    assert ip_of("2001:db8::7", "203.0.113.9", trusted=V6_PROXIES) == "2001:db8::7"
    assert ip_of("::1", "2001:db8:0:0::42", trusted=V6_PROXIES) == "2001:db8::42"
    assert ip_of("::1", "192.0.2.1, 2001:db8::42, fd00::2", trusted=V6_PROXIES) == "2001:db8::42"
    assert ip_of("::1", "203.0.113.9", trusted=V6_PROXIES) == "203.0.113.9"
    assert ip_of("127.0.0.1", "2001:DB8::42") == "2001:db8::42"
    assert ip_of("::1", "[2001:db8::42]:443", trusted=V6_PROXIES) == "::1"


def test_ipv4_mapped_addresses_are_read_as_ipv4() -> None:
    # What a dual-stack listener reports for an IPv4 client: as IPv6, every IPv4 client would
    # share one /48 and so one fingerprint, and IPv4 proxy networks would never match.
    assert ip_of("::ffff:198.51.100.7", "203.0.113.9") == "198.51.100.7"
    assert ip_of("::ffff:127.0.0.1", "203.0.113.9") == "203.0.113.9"
    assert ip_of("127.0.0.1", "::ffff:203.0.113.9") == "203.0.113.9"


def test_several_forwarded_for_headers_read_as_one_list_in_order() -> None:
    # Proxies may append a header instead of extending the last one (RFC 9110 allows both).
    request = request_from("127.0.0.1", "192.0.2.1", "203.0.113.9, 10.0.0.2")
    assert client_ip(request, PROXY_TIERS) == "203.0.113.9"
    request = request_from("127.0.0.1", "203.0.113.9", "10.0.0.2", "10.0.0.3")
    assert client_ip(request, PROXY_TIERS) == "203.0.113.9"


def test_other_forwarding_headers_are_ignored() -> None:
    forged = {"x-real-ip": "192.0.2.1", "forwarded": "for=192.0.2.1", "true-client-ip": "192.0.2.1"}
    request = request_from("198.51.100.7", other_headers=forged)
    assert client_ip(request, LOOPBACK) == "198.51.100.7"
    request = request_from("127.0.0.1", other_headers=forged)
    assert client_ip(request, LOOPBACK) == "127.0.0.1"


def test_no_peer_address_is_unknown() -> None:
    assert ip_of(None, "203.0.113.9") == UNKNOWN


@pytest.mark.parametrize(
    ("same", "other"),
    [
        (("203.0.113.7", "203.0.113.200"), "203.0.114.7"),
        (("198.51.100.0", "198.51.100.255"), "198.51.101.0"),
        (("2001:db8:1::1", "2001:db8:1:ffff:ffff::9"), "2001:db8:2::1"),
        (("2001:db8:abcd:1::", "2001:db8:abcd:ff00::1"), "2001:db8:abce::1"),
    ],
)
def test_fingerprint_is_the_network_a_24_or_a_48(same: tuple[str, str], other: str) -> None:
    key = b"k" * 32
    first, second = same
    assert fingerprint(key, first) == fingerprint(key, second)
    assert fingerprint(key, first) != fingerprint(key, other)


def test_fingerprint_of_a_mapped_client_matches_its_ipv4_network() -> None:
    key = b"k" * 32
    mapped = client_ip(request_from("::ffff:203.0.113.7"), LOOPBACK)
    assert fingerprint(key, mapped) == fingerprint(key, "203.0.113.99")
    other = client_ip(request_from("::ffff:198.51.100.7"), LOOPBACK)
    assert fingerprint(key, mapped) != fingerprint(key, other)
