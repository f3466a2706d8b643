"""Gateway settings, read from the environment in ``main``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from urllib.parse import urlsplit

from shared.config import Env, SettingsError


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway needs; required values have no default."""

    http_host: str
    http_port: int
    http_processes: int
    public_url: str
    #: Where stack apps and webhook receivers are served: a host of its own (ADR 0067).
    content_url: str
    nats_url: str
    platform_dsn: str
    redis_url: str
    seal_keys: str
    token_key: bytes
    jwt_key: bytes
    session_ttl_s: int
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...]
    plans_file: Path
    max_body_bytes: int
    max_live_streams: int
    webhook_create_concurrency: int
    webhook_delete_concurrency: int
    notify_allowed_networks: tuple[IPv4Network | IPv6Network, ...]
    notify_retry_s: tuple[float, ...]
    notify_poll_s: float
    #: How often the gateway looks for receivers no resource owns, and how long one may stay
    #: so (``shared.worker.reconciling``, ADR 0032).
    reconcile_s: float
    orphan_grace_s: float
    log_format: str
    log_level: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and check every setting.

        Raises:
            SettingsError: naming the missing or malformed variable.
        """
        env = Env(environ)
        http_processes = env.integer("SPINUP_HTTP_PROCESSES", 1)
        if http_processes < 1:
            msg = f"SPINUP_HTTP_PROCESSES must be 1 or more, got {http_processes}"
            raise SettingsError(msg)
        public_url = env.string("SPINUP_PUBLIC_URL").rstrip("/")
        content_url = env.string("SPINUP_CONTENT_URL").rstrip("/")
        _check_content_url(public_url, content_url)
        return cls(
            http_host=env.string("SPINUP_HTTP_HOST", "127.0.0.1"),
            http_port=env.integer("SPINUP_HTTP_PORT", 8080),
            # Processes serving the one port: a process uses one core at most, and the HTTP path
            # is the gateway's cost. More than one is a replica set on one machine (each one
            # connects on its own), like replicas behind a load balancer.
            http_processes=http_processes,
            public_url=public_url,
            content_url=content_url,
            nats_url=env.string("SPINUP_NATS_URL"),
            platform_dsn=env.string("SPINUP_PLATFORM_DSN"),
            redis_url=env.string("SPINUP_REDIS_URL"),
            seal_keys=env.string("SPINUP_SEAL_KEYS"),
            token_key=env.key("SPINUP_TOKEN_KEY"),
            jwt_key=env.key("SPINUP_JWT_KEY"),
            session_ttl_s=env.integer("SPINUP_SESSION_TTL_S", 24 * 3600),
            # Only these peers' X-Forwarded-For is believed; anyone else could forge it.
            trusted_proxies=_networks(
                "SPINUP_TRUSTED_PROXIES", env.string("SPINUP_TRUSTED_PROXIES", "")
            ),
            plans_file=env.path("SPINUP_PLANS_FILE", Path("plans.yaml")),
            max_body_bytes=env.integer("SPINUP_MAX_BODY_BYTES", 16 * 1024),
            # Open webhook streams per replica (each holds a Redis connection).
            max_live_streams=env.integer("SPINUP_MAX_LIVE_STREAMS", 1000),
            # A webhook create or delete is one or two Redis round trips: many may run at once.
            webhook_create_concurrency=env.integer("SPINUP_WEBHOOK_CREATE_CONCURRENCY", 64),
            webhook_delete_concurrency=env.integer("SPINUP_WEBHOOK_DELETE_CONCURRENCY", 64),
            # Notify URLs are untrusted: private, loopback and link-local targets are refused.
            # A test stack alone lets its receiver's address through (devstack's TEST_OVERRIDES);
            # production leaves this empty (docs/adr/0027).
            notify_allowed_networks=_networks(
                "SPINUP_NOTIFY_ALLOWED_NETWORKS", env.string("SPINUP_NOTIFY_ALLOWED_NETWORKS", "")
            ),
            # Seconds before each retry of a failed notification; after the last, it is dropped.
            notify_retry_s=_seconds_list(
                "SPINUP_NOTIFY_RETRY_S", env.string("SPINUP_NOTIFY_RETRY_S", "10,60,300,1800,7200")
            ),
            notify_poll_s=env.number("SPINUP_NOTIFY_POLL_S", 1.0),
            reconcile_s=env.number("SPINUP_RECONCILE_S", 60.0),
            orphan_grace_s=env.number("SPINUP_ORPHAN_GRACE_S", 300.0),
            log_format=env.string("SPINUP_LOG_FORMAT", "auto"),
            log_level=env.string("SPINUP_LOG_LEVEL", "info"),
        )


def _check_content_url(public_url: str, content_url: str) -> None:
    """Tenant content must be on another host than the API and console (ADR 0067).

    Cookies are kept per host, whatever the port: on the console's host, a stack app or a
    webhook receiver would be sent the console's session cookie and could act as the account.
    """
    public, content = urlsplit(public_url), urlsplit(content_url)
    if content.scheme not in {"http", "https"} or not content.hostname:
        msg = f"SPINUP_CONTENT_URL must be an http(s) URL, got {content_url!r}"
        raise SettingsError(msg)
    if content.hostname == public.hostname:
        msg = (
            f"SPINUP_CONTENT_URL ({content_url}) must name another host than SPINUP_PUBLIC_URL"
            f" ({public_url}): stack apps and webhook receivers on the console's host would be"
            " sent its session cookies. In production use another registrable domain."
        )
        raise SettingsError(msg)


def _networks(name: str, raw: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """Comma-separated addresses or CIDR networks (empty: none)."""
    try:
        return tuple(ip_network(part.strip()) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        msg = f"{name} must be comma-separated IP networks such as 10.0.0.0/8: {exc}"
        raise SettingsError(msg) from exc


def _seconds_list(name: str, raw: str) -> tuple[float, ...]:
    """Comma-separated positive seconds, such as ``10,60,300``."""
    try:
        values = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        msg = f"{name} must be comma-separated seconds such as 10,60,300: {exc}"
        raise SettingsError(msg) from exc
    if any(value <= 0 for value in values):
        msg = f"{name} must hold positive seconds, got {raw!r}"
        raise SettingsError(msg)
    return values
