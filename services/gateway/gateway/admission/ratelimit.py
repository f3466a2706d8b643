"""The provision rate limit ``policy.admit`` spends from, one per gateway replica.

The rate limit is a sliding log: a sorted set per holder of the times of the admitted requests
of the last minute, kept by one Lua script (one round trip, atomic, Redis's own clock so replicas
agree). Chosen over a fixed-window counter (INCR + EXPIRE) because the limit means what it says
(at most N in *any* 60 seconds, not 2N across a window boundary), ``Retry-After`` is exact (when
the oldest admitted request leaves the window), and refused requests are not recorded, so a
client that waits as told is let in. The cost, one set entry per admitted request, is small: the
plans allow at most a few hundred a minute, and an idle holder's set expires after a minute.

Redis is not allowed to stop provisioning (DESIGN: fail open). If it is down or slower than
``_REDIS_TIMEOUT_S``, the request goes through without a rate limit and one warning says so, at
most once per ``_WARN_EVERY_S`` per replica however many requests pass meanwhile; one info line
says when it answers again. Redis is still asked on every request during an outage: a refused
connection costs about a millisecond, a hung one at most the timeout, and never skipping it
means a burst of requests cannot switch the limit off by making it look down.

At most ``_CONCURRENT_CHECKS`` checks talk to Redis at once (the rest wait, within the same
timeout): the Redis client's pool refuses rather than waits when it runs out of connections, and
a burst of provisions must neither take every connection from the webhook receivers nor make
the limiter fail open for the burst it exists to stop.

The same call recalls a refusal of the holder's caps that a worker sent in the last minute
(``policy.remember_refusal``, docs/adr/0041): a holder at its cap is then refused again by this
one round trip, without a command (the rate is checked first, as for any request). The refusal
is recalled only under the caps it was refused under, so a plan that changed meanwhile is asked
again.

That state (the slots, the outage warnings) belongs to one replica: a ``RateLimiter`` built in
the gateway's lifespan and kept on its context.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import structlog
from redis.exceptions import NoScriptError, RedisError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from redis.asyncio import Redis

log = structlog.get_logger("gateway.admission")

_WINDOW_MS: Final = 60_000  # the rate limit is per minute: provisions_per_minute
# A local Redis answers in well under a millisecond; past this it is treated as down. Tight,
# because it is added to every provision for as long as Redis hangs; loose enough that a busy
# event loop is not mistaken for an outage.
_REDIS_TIMEOUT_S: Final = 0.1
_WARN_EVERY_S: Final = 60.0
# Each check holds a connection for ~0.3 ms: 16 at once serve tens of thousands a second.
_CONCURRENT_CHECKS: Final = 16

# KEYS[1]: the holder's log. ARGV: limit, window (ms), a unique member for this request.
# KEYS[2], when given: a refusal remembered for the holder, recalled only while its value starts
# with ARGV[4] (the caps it was refused under).
# Returns {0} when admitted (and recorded), {0, refusal} when admitted (and recorded) but a
# refusal is recalled, else {the milliseconds until a slot frees}.
_SLIDING_LOG = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now_ms, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  if KEYS[2] then
    local refused = redis.call('GET', KEYS[2])
    if refused and string.sub(refused, 1, string.len(ARGV[4])) == ARGV[4] then
      return {0, refused}
    end
  end
  return {0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {math.max(1, tonumber(oldest[2]) + window - now_ms)}
"""
# EVALSHA names a script by its SHA-1: an identifier, not a security use of the hash.
_SLIDING_LOG_SHA: Final = hashlib.sha1(_SLIDING_LOG.encode()).hexdigest()  # noqa: S324


class RateLimiter:
    """This replica's provision rate limit: the sliding log in Redis, failing open."""

    def __init__(self, redis: Redis, *, window_ms: int = _WINDOW_MS) -> None:
        self._redis = redis
        self._window_ms = window_ms
        # Per replica on purpose: each limits its own calls to Redis and warns for itself.
        self._slots = asyncio.Semaphore(_CONCURRENT_CHECKS)
        self._health = _RedisHealth()

    async def spend(self, holder: str, per_minute: int) -> int:
        """0 when the request fits the holder's rate (and is counted), else ms to wait.

        Fails open: any Redis trouble admits the request.
        """
        wait_ms, _ = await self.spend_unless_refused(holder, per_minute)
        return wait_ms

    async def spend_unless_refused(
        self, holder: str, per_minute: int, *, refusal_key: str = "", refusal_scope: str = ""
    ) -> tuple[int, str | None]:
        """``spend``, and in the same round trip, a refusal remembered for the holder.

        Returns (``spend``'s answer, the refusal remembered under ``refusal_key`` when the
        request was admitted and it starts with ``refusal_scope``, else None). A recalled
        refusal was spent from the rate like any other request: the rate is checked first.
        """
        keys = (f"ratelimit:provision:{holder}", *((refusal_key,) if refusal_key else ()))
        args = (per_minute, self._window_ms, os.urandom(8).hex(), refusal_scope)
        try:
            async with asyncio.timeout(_REDIS_TIMEOUT_S), self._slots:
                try:
                    answer = await self._redis.evalsha(_SLIDING_LOG_SHA, len(keys), *keys, *args)
                except NoScriptError:  # a restarted Redis has forgotten the script: send it whole
                    answer = await self._redis.eval(_SLIDING_LOG, len(keys), *keys, *args)
        except (RedisError, OSError) as exc:  # builtin TimeoutError is an OSError
            self._health.failed(exc)
            return 0, None
        self._health.answered()
        refusal = answer[1].decode() if len(answer) > 1 else None
        return int(answer[0]), refusal

    async def remember(self, key: str, value: str, *, for_s: int) -> None:
        """Keep ``value`` under ``key`` for ``for_s`` seconds; Redis trouble forgets it."""
        await self._quietly(lambda: self._redis.set(key, value, ex=for_s))

    async def forget(self, *keys: str) -> None:
        """Drop what ``remember`` kept under ``keys``; Redis trouble leaves it to expire."""
        await self._quietly(lambda: self._redis.delete(*keys))

    async def _quietly(self, call: Callable[[], Awaitable[object]]) -> None:
        try:
            async with asyncio.timeout(_REDIS_TIMEOUT_S), self._slots:
                await call()
        except (RedisError, OSError) as exc:
            self._health.failed(exc)
            return
        self._health.answered()


@dataclass(slots=True)
class _RedisHealth:
    """A limiter's view of the platform Redis, for failing open quietly."""

    last_warning: float = -math.inf
    failures_since_warning: int = 0
    #: A warning went out and no "restored" line yet: a flapping Redis logs a pair a minute.
    warned: bool = False

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self.failures_since_warning += 1
        if now - self.last_warning < _WARN_EVERY_S:
            return
        log.warning(
            "gateway.ratelimit.unavailable",
            error=type(exc).__name__,
            detail=str(exc),
            failures=self.failures_since_warning,
            effect="provisioning goes on without rate limits until Redis answers",
        )
        self.last_warning = now
        self.failures_since_warning = 0
        self.warned = True

    def answered(self) -> None:
        if self.warned:
            self.warned = False
            log.info("gateway.ratelimit.restored")
