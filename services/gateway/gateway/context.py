"""What request handlers use, built once in the composition root's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from redis.asyncio import Redis

from gateway.settings import Settings
from gateway.webhook_driver import WebhookDriver
from shared.bus import Bus
from shared.crypto.sealing import Keyring
from shared.eventlog.projections import ResourceReadModel
from shared.plans import Plans


@dataclass(frozen=True, slots=True)
class GatewayContext:
    """Connections and configuration shared by every request."""

    settings: Settings
    plans: Plans
    keyring: Keyring
    bus: Bus
    pool: asyncpg.Pool
    resources: ResourceReadModel
    redis: Redis
    webhooks: WebhookDriver
