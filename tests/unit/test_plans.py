from pathlib import Path

import pytest

from shared.contracts.kinds import ResourceKind
from shared.plans import PlanError, load_plans, parse_plans

REPO_ROOT = Path(__file__).resolve().parents[2]

VALID = """
anonymous_tier: anon
account_tier: paid
tiers:
  anon:
    ttl_seconds: 60
    caps: {active_per_kind: 2, provisions_per_day: 10}
    rate_limit: {provisions_per_minute: 5}
    postgres: {storage_mb: 1, connections: 1, statement_timeout_ms: 1, temp_file_limit_mb: 1}
    redis: {memory_mb: 1}
    mongo: {storage_mb: 1}
    nats: {connections: 1, streams: 1, consumers: 1, memory_storage_mb: 1, disk_storage_mb: 1,
           max_payload_kb: 1, subscriptions_per_connection: 1}
    s3: {storage_mb: 1}
    webhook: {requests_kept: 1, max_body_kb: 1}
    stack: {services: 1, memory_mb: 1, cpu_millis: 1, pids: 1, upload_mb: 1,
            connections_per_endpoint: 1}
    export: {per_hour: 1, concurrent: 1}
  paid:
    ttl_seconds: null
    caps: {active_per_kind: 20, provisions_per_day: 100}
    rate_limit: {provisions_per_minute: 50}
    postgres: {storage_mb: 2, connections: 2, statement_timeout_ms: 2, temp_file_limit_mb: 2}
    redis: {memory_mb: 1}
    mongo: {storage_mb: 1}
    nats: {connections: 1, streams: 1, consumers: 1, memory_storage_mb: 1, disk_storage_mb: 1,
           max_payload_kb: 1, subscriptions_per_connection: 1}
    s3: {storage_mb: 1}
    webhook: {requests_kept: 1, max_body_kb: 1}
    stack: {services: 1, memory_mb: 1, cpu_millis: 1, pids: 1, upload_mb: 1,
            connections_per_endpoint: 1}
    export: {per_hour: 1, concurrent: 1}
"""


def test_the_shipped_plans_file_is_valid() -> None:
    plans = load_plans(REPO_ROOT / "plans.yaml")
    assert plans.anonymous.ttl_seconds is not None


def test_limits_come_from_the_file() -> None:
    plans = parse_plans(VALID)
    assert plans.anonymous_tier == "anon"
    assert plans.tiers["paid"].postgres.connections == 2
    assert plans.tiers["paid"].limits(ResourceKind.NATS) == plans.tiers["paid"].nats
    assert plans.tiers["paid"].ttl_seconds is None
    assert plans.account is plans.tiers["paid"]
    assert plans.anonymous.caps.active_per_kind == 2
    assert plans.anonymous.rate_limit.provisions_per_minute == 5


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (("anonymous_tier: anon", "anonymous_tier: nobody"), "nobody"),
        (("ttl_seconds: 60", "ttl_seconds: null"), "must have a ttl_seconds"),
        (("connections: 2", "connections: 0"), "tiers.paid.postgres.connections"),
        (("storage_mb: 1,", "storage_mb: 1, disk_mb: 3,"), "disk_mb"),
        (("ttl_seconds: 60", "ttl_seconds: soon"), "ttl_seconds"),
        (("    s3: {storage_mb: 1}\n", ""), "s3"),
        (("    redis: {", "    rdis: {"), "tiers.anon.rdis"),
        (("account_tier: paid", "account_tier: gold"), "account_tier 'gold'"),
        (("active_per_kind: 2", "active_per_kind: 0"), "tiers.anon.caps.active_per_kind"),
        (("provisions_per_minute: 5", "per_minute: 5"), "per_minute"),
        (("    rate_limit: {provisions_per_minute: 50}\n", ""), "rate_limit"),
        # One customer cluster serves every tier: one extension allowlist for all of them.
        (
            ("temp_file_limit_mb: 2}", "temp_file_limit_mb: 2, extensions: [vector]}"),
            "same postgres.extensions",
        ),
        (("    export: {per_hour: 1, concurrent: 1}\n", ""), "export"),
    ],
)
def test_invalid_plans_are_refused_with_the_path_named(
    change: tuple[str, str], complaint: str
) -> None:
    with pytest.raises(PlanError, match=complaint):
        parse_plans(VALID.replace(*change, 1))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read plans file"):
        load_plans(tmp_path / "absent.yaml")


def test_a_limit_whose_default_only_reads_old_records_must_be_written() -> None:
    # -1 is what limits recorded before the field existed decode to (ADR 0051), not a plan value.
    text = VALID.replace(", subscriptions_per_connection: 1}", "}", 1)
    with pytest.raises(
        PlanError, match=r"tiers\.anon\.nats\.subscriptions_per_connection is missing"
    ):
        parse_plans(text)
