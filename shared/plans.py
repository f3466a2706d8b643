"""Load and validate ``plans.yaml``: every tier and every limit lives there and nowhere else."""

from __future__ import annotations

from pathlib import Path

import msgspec

from shared.contracts.kinds import PostgresLimits


class PlanError(Exception):
    """``plans.yaml`` is missing, malformed or inconsistent; the message says where."""


class PostgresPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Postgres limits of one tier, as written in the file."""

    storage_mb: int
    connections: int
    statement_timeout_ms: int
    temp_file_limit_mb: int

    def limits(self) -> PostgresLimits:
        """The limits that travel in commands and events."""
        return PostgresLimits(
            storage_mb=self.storage_mb,
            connections=self.connections,
            statement_timeout_ms=self.statement_timeout_ms,
            temp_file_limit_mb=self.temp_file_limit_mb,
        )


class Tier(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One tier. ``ttl_seconds`` null means resources are permanent."""

    ttl_seconds: int | None
    postgres: PostgresPlan
    description: str = ""


class Plans(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole file."""

    anonymous_tier: str
    tiers: dict[str, Tier]

    @property
    def anonymous(self) -> Tier:
        """The tier every request without an account gets."""
        return self.tiers[self.anonymous_tier]


def _validate(plans: Plans) -> None:
    if plans.anonymous_tier not in plans.tiers:
        msg = (
            f"anonymous_tier {plans.anonymous_tier!r} is not one of the tiers {sorted(plans.tiers)}"
        )
        raise PlanError(msg)
    if plans.anonymous.ttl_seconds is None:
        msg = f"tier {plans.anonymous_tier!r} serves anonymous users and must have a ttl_seconds"
        raise PlanError(msg)
    for name, tier in plans.tiers.items():
        if tier.ttl_seconds is not None and tier.ttl_seconds <= 0:
            msg = f"tiers.{name}.ttl_seconds must be positive or null"
            raise PlanError(msg)
        for field in msgspec.structs.fields(tier.postgres):
            value = getattr(tier.postgres, field.name)
            if value <= 0:
                msg = f"tiers.{name}.postgres.{field.name} must be positive, got {value}"
                raise PlanError(msg)


def parse_plans(text: str | bytes, *, source: str = "plans.yaml") -> Plans:
    """Parse and validate plans from YAML text.

    Raises:
        PlanError: with the offending path in the message.
    """
    try:
        plans = msgspec.yaml.decode(text, type=Plans)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        msg = f"{source}: {exc}"
        raise PlanError(msg) from exc
    try:
        _validate(plans)
    except PlanError as exc:
        msg = f"{source}: {exc}"
        raise PlanError(msg) from exc
    return plans


def load_plans(path: Path) -> Plans:
    """Read and validate a plans file."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read plans file {path}: {exc.strerror}"
        raise PlanError(msg) from exc
    return parse_plans(text, source=str(path))
