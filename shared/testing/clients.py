"""Real clients asked, in tests, what a tenant's credentials let it do."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError


async def redis_logs_in(url: str) -> bool:
    """Whether a Redis client logs in with the credentials of ``url`` (refused: False)."""
    client = aioredis.Redis.from_url(
        url, single_connection_client=True, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(await client.ping())
    except AuthenticationError:
        return False
    finally:
        await client.aclose()
