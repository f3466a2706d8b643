"""What request handlers use, built once in the composition root's lifespan."""

from __future__ import annotations

import asyncpg
from redis.asyncio import Redis

from gateway.accounts.store import Accounts
from gateway.admission.ratelimit import RateLimiter
from gateway.settings import Settings
from gateway.stacks.plumbing import StackPlumbing
from gateway.webhooks.driver import WebhookDriver
from shared.bus import Bus
from shared.crypto.sealing import Keyring
from shared.eventlog.projections import ResourceReadModel
from shared.eventlog.store import EventStore
from shared.plans import Plans


class GatewayContext:
    """Connections and configuration shared by every request.

    A plain class, not a dataclass, on purpose: Litestar checks every handler argument with
    msgspec, which walks a dataclass's fields down to ``Settings.trusted_proxies`` (a union of
    two network classes it cannot type) and fails every request; an instance of a plain class
    is passed through untouched.
    """

    __slots__ = (
        "accounts",
        "bus",
        "keyring",
        "plans",
        "pool",
        "rate_limiter",
        "redis",
        "resources",
        "settings",
        "stacks",
        "store",
        "webhooks",
    )

    def __init__(
        self,
        *,
        settings: Settings,
        plans: Plans,
        keyring: Keyring,
        bus: Bus,
        pool: asyncpg.Pool,
        store: EventStore,
        resources: ResourceReadModel,
        redis: Redis,
        rate_limiter: RateLimiter,
        webhooks: WebhookDriver,
        accounts: Accounts,
        stacks: StackPlumbing,
    ) -> None:
        self.settings = settings
        self.plans = plans
        self.keyring = keyring
        self.bus = bus
        self.pool = pool
        self.store = store
        self.resources = resources
        self.redis = redis
        self.rate_limiter = rate_limiter
        self.webhooks = webhooks
        self.accounts = accounts
        self.stacks = stacks
