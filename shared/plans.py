"""Load and validate ``plans.yaml``: every tier and every limit lives there and nowhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from shared.contracts.kinds import (
    LIMITS_BY_KIND,
    Caps,
    Limits,
    MongoLimits,
    NatsLimits,
    PostgresLimits,
    RedisLimits,
    ResourceKind,
    S3Limits,
    StackLimits,
    WebhookLimits,
)


class PlanError(Exception):
    """``plans.yaml`` is missing, malformed or inconsistent; the message says where."""


class RateLimit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How fast one client (anonymous) or one account may provision."""

    provisions_per_minute: int


class Lifetime(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a temporary resource's lifetime may be chosen, extended and warned about (ADR 0027)."""

    #: ``ttl_seconds`` a create may ask for (the tier's ``ttl_seconds`` is the default).
    ttl_min_seconds: int
    ttl_max_seconds: int
    #: From creation to the latest ``expires_at`` extensions may reach.
    total_max_seconds: int
    #: ``POST /resources/{token}/extend`` calls allowed per resource.
    extensions: int
    #: ``resource.expiring`` is sent this long before expiry (each lead shorter than the life).
    notify_lead_seconds: list[int] = msgspec.field(default_factory=list)
    #: After expiry the credentials stop and the data is kept this long for
    #: ``GET /resources/{token}/export``, then deleted (docs/adr/0030). 0: deleted at expiry.
    export_grace_seconds: int = 0


class ExportLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How often a resource's data may be exported (docs/adr/0030): exports are not backups."""

    #: Exports started per resource in any hour; past it, 429 with Retry-After.
    per_hour: int
    #: Exports of one resource running at once.
    concurrent: int


class Tier(msgspec.Struct, frozen=True, kw_only=True):
    """One tier: a TTL (null: permanent), caps, a rate limit and the limits of every kind."""

    ttl_seconds: int | None
    caps: Caps
    rate_limit: RateLimit
    postgres: PostgresLimits
    redis: RedisLimits
    mongo: MongoLimits
    nats: NatsLimits
    s3: S3Limits
    webhook: WebhookLimits
    stack: StackLimits
    export: ExportLimits
    description: str = ""
    #: Lifetime choices of a tier whose resources expire; None: ``ttl_seconds`` is fixed.
    lifetime: Lifetime | None = None

    def limits(self, kind: ResourceKind) -> Limits:
        """The limits this tier gives a resource of ``kind``."""
        limits: Limits = getattr(self, kind.value)
        return limits

    def ttl_of(self, kind: ResourceKind) -> int | None:
        """Seconds a resource of ``kind`` lives on this tier (None: permanent)."""
        if kind is ResourceKind.STACK and self.stack.ttl_seconds is not None:
            return min(self.stack.ttl_seconds, self.ttl_seconds or self.stack.ttl_seconds)
        return self.ttl_seconds


class Plans(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole file."""

    anonymous_tier: str
    account_tier: str
    tiers: dict[str, Tier]

    @property
    def anonymous(self) -> Tier:
        """The tier every request without an account gets."""
        return self.tiers[self.anonymous_tier]

    @property
    def account(self) -> Tier:
        """The tier a newly registered account starts on."""
        return self.tiers[self.account_tier]


_TIER_KEYS = {
    "ttl_seconds",
    "description",
    "caps",
    "rate_limit",
    "lifetime",
    "export",
    *(kind.value for kind in ResourceKind),
}


def _check_known_keys(raw: Any) -> None:  # noqa: ANN401  (raw YAML before typing)
    """Refuse a key the structs would silently ignore (a typo must not become a default)."""
    tiers = raw.get("tiers") if isinstance(raw, dict) else None
    for name, tier in (tiers or {}).items():
        if not isinstance(tier, dict):
            continue
        for key in tier.keys() - _TIER_KEYS:
            msg = f"tiers.{name}.{key} is not a tier setting (expected one of {sorted(_TIER_KEYS)})"
            raise PlanError(msg)
        for kind, limits_type in LIMITS_BY_KIND.items():
            section = tier.get(kind.value)
            if not isinstance(section, dict):
                continue
            known = {field.name for field in msgspec.structs.fields(limits_type)}
            for key in section.keys() - known:
                msg = (
                    f"tiers.{name}.{kind.value}.{key} is not a {kind.value} limit ({sorted(known)})"
                )
                raise PlanError(msg)


def _positive(path: str, section: msgspec.Struct) -> None:
    for field in msgspec.structs.fields(section):
        value = getattr(section, field.name)
        if value is None and field.default is None:
            continue  # an optional limit left out
        if value == 0 and field.default == 0:
            continue  # an allowance left out (or set to 0): none allowed
        if isinstance(value, bool | tuple):
            continue  # a switch or a list, not an amount
        if value <= 0 and value == field.default:
            # A default below 0 only decodes limits recorded before the field existed.
            msg = f"{path}.{field.name} is missing (or {value}): it needs a positive number"
            raise PlanError(msg)
        if value <= 0:
            msg = f"{path}.{field.name} must be positive, got {value}"
            raise PlanError(msg)


def _validate_lifetime(path: str, tier: Tier) -> None:
    lifetime = tier.lifetime
    if lifetime is None:  # pragma: no cover  (the caller checks)
        return
    if tier.ttl_seconds is None:
        msg = f"{path} needs the tier's ttl_seconds (its resources must expire)"
        raise PlanError(msg)
    numbers = (
        lifetime.ttl_min_seconds,
        lifetime.extensions,
        lifetime.export_grace_seconds,
        *lifetime.notify_lead_seconds,
    )
    if min(numbers) < 0 or lifetime.ttl_min_seconds == 0:
        msg = f"{path}: every number must be positive (extensions may be 0)"
        raise PlanError(msg)
    # The tier's ttl_seconds (the default) may lie outside: a test plan shortens it alone.
    if not lifetime.ttl_min_seconds <= lifetime.ttl_max_seconds <= lifetime.total_max_seconds:
        msg = f"{path}: expected ttl_min_seconds <= ttl_max_seconds <= total_max_seconds"
        raise PlanError(msg)


def _validate(plans: Plans) -> None:
    for setting in ("anonymous_tier", "account_tier"):
        name = getattr(plans, setting)
        if name not in plans.tiers:
            msg = f"{setting} {name!r} is not one of the tiers {sorted(plans.tiers)}"
            raise PlanError(msg)
    if plans.anonymous.ttl_seconds is None:
        msg = f"tier {plans.anonymous_tier!r} serves anonymous users and must have a ttl_seconds"
        raise PlanError(msg)
    for name, tier in plans.tiers.items():
        if tier.ttl_seconds is not None and tier.ttl_seconds <= 0:
            msg = f"tiers.{name}.ttl_seconds must be positive or null"
            raise PlanError(msg)
        if tier.lifetime is not None:
            _validate_lifetime(f"tiers.{name}.lifetime", tier)
        _positive(f"tiers.{name}.caps", tier.caps)
        _positive(f"tiers.{name}.rate_limit", tier.rate_limit)
        _positive(f"tiers.{name}.export", tier.export)
        for kind in ResourceKind:
            _positive(f"tiers.{name}.{kind.value}", tier.limits(kind))
    # One customer cluster serves every tier, and its extension allowlist is cluster-wide.
    extension_sets = {tuple(sorted(tier.postgres.extensions)) for tier in plans.tiers.values()}
    if len(extension_sets) > 1:
        msg = "every tier must list the same postgres.extensions (one cluster serves them all)"
        raise PlanError(msg)


def parse_plans(text: str | bytes, *, source: str = "plans.yaml") -> Plans:
    """Parse and validate plans from YAML text.

    Raises:
        PlanError: with the offending path in the message.
    """
    try:
        _check_known_keys(msgspec.yaml.decode(text))
        plans = msgspec.yaml.decode(text, type=Plans)
        _validate(plans)
    except (msgspec.ValidationError, msgspec.DecodeError, PlanError) as exc:
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
