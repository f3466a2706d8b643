"""Lifetime rules without servers: plan bounds, the notify URL guard, the signing secrets.

When warnings are due is asked of the platform database: tests/integration/test_notify_outbox.py.
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from pathlib import Path

import pytest
from spinup_cli.main import ttl_seconds

from gateway.resources.lifetime import expires_at_for, notify_secret
from gateway.resources.outbound import UnsafeTargetError, resolve
from shared.contracts.errors import SpinupError
from shared.contracts.kinds import ResourceKind
from shared.plans import PlanError, load_plans, parse_plans

PLANS = load_plans(Path(__file__).parents[2] / "plans.yaml")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_ttl_at_create_within_the_anonymous_bounds() -> None:
    tier = PLANS.anonymous
    made = expires_at_for("anonymous", tier, ResourceKind.REDIS, 3600, NOW)
    assert made == NOW + timedelta(hours=1)
    assert expires_at_for("anonymous", tier, ResourceKind.REDIS, None, NOW) == NOW + timedelta(
        seconds=tier.ttl_seconds or 0
    )
    with pytest.raises(SpinupError, match=r"between 600 \(10 min\) and 86400 \(24 h\)"):
        expires_at_for("anonymous", tier, ResourceKind.REDIS, 599, NOW)
    # A stack stays within its own, shorter TTL.
    with pytest.raises(SpinupError, match="and 21600"):
        expires_at_for("anonymous", tier, ResourceKind.STACK, 21601, NOW)
    with pytest.raises(SpinupError, match="permanent"):
        expires_at_for("free", PLANS.account, ResourceKind.REDIS, 3600, NOW)


def test_a_lifetime_whose_bounds_cross_is_refused() -> None:
    text = (Path(__file__).parents[2] / "plans.yaml").read_text()
    crossed = text.replace("ttl_max_seconds: 86400", "ttl_max_seconds: 300")
    with pytest.raises(PlanError, match="ttl_min_seconds <= ttl_max_seconds"):
        parse_plans(crossed)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://[::1]/x",
        "http://[::ffff:10.0.0.1]/x",
        "http://[64:ff9b::7f00:1]/x",  # NAT64 of 127.0.0.1
        "http://[64:ff9b:1::a00:1]/x",  # local-use NAT64 of 10.0.0.1
        "http://[2002:7f00:1::]/x",  # 6to4 of 127.0.0.1
        "http://[2002:a9fe:a9fe::1]/x",  # 6to4 of 169.254.169.254
        "http://10.0.0.1/x",
        "http://100.64.0.1/x",
        "http://169.254.169.254/x",
        "http://224.0.0.1/x",
        "http://localhost/x",
        "file:///etc/passwd",
        "http://a:b@8.8.8.8/x",
        "http:///x",
    ],
)
async def test_non_public_targets_are_refused(url: str) -> None:
    with pytest.raises(UnsafeTargetError):
        await resolve(url, [])


async def test_a_public_address_and_the_allowlist_pass() -> None:
    assert str((await resolve("https://8.8.8.8/hook", [])).address) == "8.8.8.8"
    allowed = [ip_network("127.0.0.2/32")]
    target = await resolve("http://127.0.0.2:9000/hook", allowed)
    assert target.port == 9000
    with pytest.raises(UnsafeTargetError):
        await resolve("http://127.0.0.1:9000/hook", allowed)


def test_secrets_differ_per_resource_and_generation() -> None:
    key, resource = b"k" * 32, uuid.uuid4()
    first = notify_secret(key, resource, 3)
    assert first.startswith("whsec_")
    assert first == notify_secret(key, resource, 3)
    assert first != notify_secret(key, resource, 4)
    assert first != notify_secret(key, uuid.uuid4(), 3)


def test_the_cli_reads_ttl_durations() -> None:
    assert ttl_seconds("2h") == 7200
    assert ttl_seconds("30m") == 1800
    assert ttl_seconds("1d") == 86400
    assert ttl_seconds("900") == 900
    for wrong in ("", "0", "2x", "-5m", "h"):
        with pytest.raises(argparse.ArgumentTypeError):
            ttl_seconds(wrong)
