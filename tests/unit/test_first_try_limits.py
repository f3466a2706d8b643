"""The limits a developer's first code meets (ADR 0025): each fits the client libraries' defaults
and agrees with what the customer servers are configured to do."""

from pathlib import Path

import pytest

from devstack import customer_nats, customer_pg, customer_redis
from shared.plans import Tier, load_plans

REPO_ROOT = Path(__file__).resolve().parents[2]
PLANS = load_plans(REPO_ROOT / "plans.yaml")
TIERS = list(PLANS.tiers.items())
# asyncpg.create_pool opens min_size=10 connections at once (max_size=10).
ASYNCPG_DEFAULT_POOL = 10


@pytest.mark.parametrize(("name", "tier"), TIERS, ids=[name for name, _ in TIERS])
def test_every_tier_fits_a_default_client_pool(name: str, tier: Tier) -> None:
    assert tier.postgres.connections >= ASYNCPG_DEFAULT_POOL, name


@pytest.mark.parametrize(("name", "tier"), TIERS, ids=[name for name, _ in TIERS])
def test_every_tiers_payload_is_what_the_server_advertises(name: str, tier: Tier) -> None:
    # The server's INFO reaches the client before login: an account allowing less than it
    # says loses the connection on the first bigger publish.
    assert tier.nats.max_payload_kb == customer_nats.MAX_PAYLOAD_KB, name


def test_one_anonymous_network_holds_at_most_a_tenth_of_the_customer_postgres() -> None:
    anonymous = PLANS.tiers[PLANS.anonymous_tier]
    most = anonymous.caps.active_per_kind * anonymous.postgres.connections
    assert most * 10 <= customer_pg.MAX_CONNECTIONS


@pytest.mark.parametrize(("name", "tier"), TIERS, ids=[name for name, _ in TIERS])
def test_every_tiers_redis_fits_in_the_servers_maxmemory(name: str, tier: Tier) -> None:
    assert tier.redis.memory_mb < customer_redis.MAXMEMORY_MB, name
