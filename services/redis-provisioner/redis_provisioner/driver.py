"""Tenant ACL user + key prefix on the shared customer Redis.

Why care: this module deletes users and keys. Every name comes from ``shared.naming.tenant_name``
and passes ``guard_tenant_name`` before any ``ACL DELUSER`` or ``UNLINK``; keys are only ever
matched by the tenant's own ``t_<hex>:`` prefix.

Isolation is the ACL below (docs/backends.md, Redis): keys and channels under the prefix only,
and every keyless command that lists or counts the whole keyspace denied one by one, because
``-@dangerous`` alone still lets ``SCAN``, ``RANDOMKEY`` and ``DBSIZE`` through. ``PUBSUB`` is
denied as well: ``PUBSUB CHANNELS`` ignores channel permissions and lists every tenant's active
channels (found while writing the tests; not in the research's rule set). Lua runs only by
``EVALSHA`` of scripts this driver put in the server's cache (``VETTED_SCRIPTS``, ADR 0025).

Passwords reach Redis only as SHA-256 (``#<hex>``), so ``ACL LIST`` never shows the plaintext.

Quota: Redis has no per-user memory cap, so the usage sweep measures each prefix (sampled, see
``usage``) and an over-quota tenant loses its write commands (``WRITE_BLOCK_RULES``) while keeping
reads and the commands that remove data. Both rule sets come from ``command_rules``.

Users live in the server's memory only (ADR 0045). ``ACL SAVE`` rewrites the whole aclfile while
the server serves no one, and describing each changed user costs it about 0.18 ms more (Redis
7.0): while creates streamed in, every other tenant's commands waited 25-57 ms at the 99th
percentile. So nothing is saved: the aclfile holds the fixed users alone, and after a restart
the worker puts every tenant back from the event log (``ResourceLifecycle.restore_after_restart``
through ``restore_credentials`` and ``drop_credentials``), the server's ``run_id`` telling it
that the server restarted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.lock import Lock

from shared.contracts.errors import BackendUnavailableError, ErrorCode, SpinupError
from shared.contracts.kinds import (
    EXPORT_FORMATS,
    RedisCredentials,
    RedisLimits,
    ResourceKind,
)
from shared.exporting import chunked
from shared.lifecycle import Ceiling
from shared.naming import guard_tenant_name, tenant_name, tenant_resource_id
from shared.redis_handshake import QUIET_HANDSHAKE

if TYPE_CHECKING:
    from uuid import UUID

    from redis.asyncio.client import Pipeline

    from shared.contracts.kinds import Credentials

log = structlog.get_logger("redis_provisioner.driver")

#: What a tenant may do, after ``reset on >password ~<prefix>* &<prefix>*``.
TENANT_COMMAND_RULES: tuple[str, ...] = (
    "+@all",
    "-@dangerous",
    "-@admin",
    "-@scripting",
    # Runs only scripts already in the server's cache, which only the admin fills
    # (``VETTED_SCRIPTS``): EVAL, SCRIPT LOAD and FUNCTION stay denied (ADR 0025).
    "+evalsha",
    "+evalsha_ro",
    # Keyless commands that see the whole keyspace or another database (not in @dangerous).
    "-select",
    "-swapdb",
    "-scan",
    "-randomkey",
    "-dbsize",
    "-move",
    "-copy",
    "-object",
    "-memory",
    # Key-checked like GET: the size of one of its own keys (MEMORY STATS and the rest stay out).
    "+memory|usage",
    "-wait",
    # CLIENT LIST / KILL / INFO show or end other tenants' connections; keep the harmless three.
    "-client",
    "+client|setname",
    "+client|getname",
    "+client|id",
    # PUBSUB CHANNELS / NUMSUB / NUMPAT skip channel permissions and name other tenants' channels.
    "-pubsub",
)

#: The only Lua a tenant can run, by ``EVALSHA``: redis-py's ``Lock`` release, extend and
#: reacquire, taken from the installed redis-py so their SHA-1s are the ones its clients send.
#: Each touches ``KEYS[1]`` alone with GET, PTTL, PEXPIRE and DEL, with no loop, and runs as the
#: caller (Redis 7 checks the ACL inside scripts). Arbitrary Lua stays out (ADR 0025): a script
#: that writes and then loops is unkillable and freezes the whole server for every tenant until
#: ``SHUTDOWN NOSAVE`` (measured on 7.0.15), and Lua is where Redis' cross-user CVEs live.
VETTED_SCRIPTS: tuple[str, ...] = (
    Lock.LUA_RELEASE_SCRIPT,
    Lock.LUA_EXTEND_SCRIPT,
    Lock.LUA_REACQUIRE_SCRIPT,
)

#: The usage sweep's weighing of sampled keys, as a Redis function the admin loads: one
#: ``FCALL_RO`` answers ``MEMORY USAGE`` of each of its keys (None for a missing one). Pipelined
#: one command per key, redis-py spent about 10 us of the worker per key packing and parsing;
#: this costs the worker a tenth of that and the server no more (ADR 0060). Tenants cannot call
#: it: ``-@scripting`` refuses ``FCALL`` and ``FCALL_RO``, and only ``EVALSHA`` is given back.
#: ``no-writes``: the server refuses a write inside it, and ``FUNCTION KILL`` can stop it.
WEIGH_FUNCTION = "spinup_weigh_keys"
WEIGH_LIBRARY = f"""#!lua name=spinup_usage
redis.register_function{{
  function_name = '{WEIGH_FUNCTION}',
  callback = function(keys)
    local sizes = {{}}
    for i, key in ipairs(keys) do
      sizes[i] = redis.call('MEMORY', 'USAGE', key)
    end
    return sizes
  end,
  flags = {{'no-writes'}},
}}
"""
#: Sampled keys weighed per ``FCALL_RO``: the server runs a call whole before any other
#: client's command, so a call of 500 holds it for about half a millisecond.
_WEIGH_BATCH = 500

#: Appended to the tenant's rules while it is over its memory quota. ``-@write`` takes effect on
#: connections already open and on ``MULTI`` blocks queued before it (EXEC re-checks), so nothing
#: that adds data gets through. What stays allowed is what shrinks the tenant: deleting keys,
#: giving them an expiry (a few bytes per key at most, and the way to let a cache drain), popping
#: and removing members. None of these is in a category the normal rules deny, so re-allowing
#: them cannot re-open a command those rules closed.
WRITE_BLOCK_RULES: tuple[str, ...] = (
    "-@write",
    "+del",
    "+unlink",
    "+getdel",
    "+expire",
    "+pexpire",
    "+expireat",
    "+pexpireat",
    "+hdel",
    "+srem",
    "+spop",
    "+lrem",
    "+ltrim",
    "+lpop",
    "+rpop",
    "+zrem",
    "+zpopmin",
    "+zpopmax",
    "+zremrangebyscore",
    "+zremrangebyrank",
    "+zremrangebylex",
    "+xdel",
    "+xtrim",
)

#: Keys removed per UNLINK when a tenant is deleted (SCAN returns about this many per step).
_DELETE_BATCH = 500
#: The tenants whose users were deleted and whose keys wait for the next ``unlink_deleted``: a
#: set in the customer Redis itself, beside the keys it names, so it is persisted (or lost) with
#: them. Only the admin reaches it: every tenant's key pattern is its own prefix.
DELETED_TENANTS_KEY = "spinup:deleted-tenants"
#: Keys asked for per SCAN step when walking the whole keyspace.
_SCAN_COUNT = 1000
#: Keys weighed per tenant in one census; a tenant with more keys is extrapolated from these
#: (SCAN order follows the server's seeded key hashes, so the first ones are a fair sample). The
#: research's 2 s for 20k keys was one round trip per key; by ``WEIGH_FUNCTION`` the server and
#: the worker each spend about 1 µs a key, so 1000 keys cost a tenant about 2 ms per sweep, and
#: every tenant with up to 1000 keys is measured exactly. Beyond that, a tenant hiding a few huge
#: keys among many tiny ones can be under-counted.
_USAGE_SAMPLE_KEYS = 1000
_CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
#: How often the vetted scripts are checked for (and loaded again): a server restart empties its
#: script cache, and until they are back a tenant's ``Lock.release`` fails with NOSCRIPT.
_SCRIPT_CHECK_INTERVAL_S = 2.0


def command_rules(*, writes_blocked: bool) -> tuple[str, ...]:
    """The command rules of a tenant user, normal or while over quota: the one source of both.

    They start with ``+@all``, which resets the user's commands, so applying them alone (without
    ``reset``) replaces whatever command rules the user had and leaves password and keys alone.
    """
    return TENANT_COMMAND_RULES + (WRITE_BLOCK_RULES if writes_blocked else ())


def whole_user(
    resource_id: UUID, password: str, *, writes_blocked: bool, on: bool
) -> tuple[str, ...]:
    """The ``ACL SETUSER`` that makes the tenant's user whole, replacing whatever it was.

    The one place a tenant's full rule set is written: by a create and by a restore.
    """
    prefix = key_prefix(resource_id)
    return (
        "ACL",
        "SETUSER",
        tenant_name(resource_id),
        "reset",
        "on" if on else "off",
        f"#{password_hash(password)}",
        f"~{prefix}*",
        f"&{prefix}*",
        *command_rules(writes_blocked=writes_blocked),
    )


def password_hash(password: str) -> str:
    """The form Redis stores (``ACL SETUSER ... #<hex>``): SHA-256 of the password, in hex."""
    return hashlib.sha256(password.encode()).hexdigest()


def key_prefix(resource_id: UUID) -> str:
    """``t_<hex>:``: every key and channel of the tenant starts with it."""
    return f"{tenant_name(resource_id)}:"


@dataclass(frozen=True, slots=True)
class KeyspaceCensus:
    """The bytes under every key prefix, counted once for a usage sweep (``sweep_id``)."""

    sweep_id: UUID | None
    bytes_by_prefix: dict[bytes, int]


class RedisDriver:
    """Creates and deletes tenant ACL users through one admin client (a connection pool)."""

    kind = ResourceKind.REDIS

    def __init__(
        self,
        admin: aioredis.Redis,
        *,
        public_host: str,
        public_port: int,
    ) -> None:
        self._admin = admin
        self._public_host = public_host
        self._public_port = public_port
        self._script_keeper: asyncio.Task[None] | None = None
        # The last sweep's census of the keyspace, and a lock so one census serves every page
        # of a sweep however its pages arrive (``usage``).
        self._census: KeyspaceCensus | None = None
        self._census_taken = asyncio.Lock()

    @classmethod
    async def connect(
        cls,
        admin_url: str,
        *,
        public_host: str,
        public_port: int,
        pool_size: int,
    ) -> RedisDriver:
        """Open the admin pool, check it answers, load the vetted scripts.

        Raises:
            BackendUnavailableError: the server cannot be reached.
        """
        # A blocking pool: callers beyond ``pool_size`` wait for a connection instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(
            admin_url,
            max_connections=pool_size,
            timeout=5,
            socket_connect_timeout=2,
            socket_timeout=5,
            # One retry on a fresh connection covers a pool left stale by a server restart;
            # redis-py's default (10 tries, growing back-off) would outlast the endpoint timeout.
            retry=Retry(NoBackoff(), 1),
            **QUIET_HANDSHAKE,
        )
        admin = aioredis.Redis.from_pool(pool)
        driver = cls(admin, public_host=public_host, public_port=public_port)
        try:
            await driver.load_vetted_scripts()
            async with driver._backend_errors("loaded"):
                # This worker's version of the library, whatever an earlier one loaded.
                await driver.load_weigh_function()
        except BaseException:
            await admin.aclose()
            raise
        driver._script_keeper = asyncio.create_task(driver._keep_scripts(), name="script-keeper")
        return driver

    async def close(self) -> None:
        """Stop checking the scripts, then close the admin pool."""
        if self._script_keeper is not None:
            self._script_keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._script_keeper
        await self._admin.aclose()

    async def load_vetted_scripts(self) -> None:
        """Put ``VETTED_SCRIPTS`` in the server's script cache (idempotent).

        Raises:
            BackendUnavailableError: the server cannot be reached.
        """
        async with self._backend_errors("loaded"):
            for script in VETTED_SCRIPTS:
                await self._command("SCRIPT", "LOAD", script)

    async def _keep_scripts(self) -> None:
        """Load the vetted scripts again whenever the server has lost them (a restart)."""
        # Redis names a script by the SHA-1 of its text.
        shas = [
            hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
            for script in VETTED_SCRIPTS
        ]
        while True:
            await asyncio.sleep(_SCRIPT_CHECK_INTERVAL_S)
            try:
                present = await self._command("SCRIPT", "EXISTS", *shas)
                if not isinstance(present, list) or not all(present):
                    await self.load_vetted_scripts()
                    log.info("redis_provisioner.scripts.reloaded")
            except (SpinupError, RedisError, *_CONNECTION_ERRORS) as exc:
                log.info("redis_provisioner.scripts.unchecked", error=type(exc).__name__)

    @contextlib.asynccontextmanager
    async def _backend_errors(self, action: str) -> AsyncIterator[None]:
        try:
            yield
        except _CONNECTION_ERRORS as exc:
            msg = f"The Redis server for tenant caches is unreachable; nothing was {action}."
            raise BackendUnavailableError(msg) from exc
        except RedisError as exc:
            # Only the class name: a reply may echo arguments (a password hash among them).
            log.warning(
                "redis_provisioner.backend.refused", error=type(exc).__name__, action=action
            )
            msg = f"Redis refused the operation; nothing was {action}."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True) from exc

    async def _command(self, *words: str) -> object:
        """One raw command, so ACL rules reach Redis exactly as written (and as tested)."""
        reply: object = await self._admin.execute_command(*words)  # type: ignore[no-untyped-call]
        return reply

    async def create(
        self,
        resource_id: UUID,
        limits: RedisLimits,  # noqa: ARG002  (memory has no per-user cap in Redis: the usage sweep measures it)
    ) -> RedisCredentials:
        """Create (or reset, with a new password) the tenant's ACL user; return its credentials.

        Resetting a user whose writes are blocked keeps them blocked: only ``allow_writes`` (the
        sweep, once back under quota) lifts a block.
        """
        async with self._backend_errors("created"):
            blocked = await self._writes_blocked(tenant_name(resource_id)) is True
        return await self._set_user(resource_id, writes_blocked=blocked)

    async def create_fresh(
        self,
        resource_id: UUID,
        limits: RedisLimits,  # noqa: ARG002  (as ``create``)
    ) -> RedisCredentials:
        """``create`` for an id no user was ever made for: no block to keep, so no look first."""
        return await self._set_user(resource_id, writes_blocked=False)

    async def _set_user(self, resource_id: UUID, *, writes_blocked: bool) -> RedisCredentials:
        password = secrets.token_urlsafe(24)
        async with self._backend_errors("created"):
            await self._command(
                *whole_user(resource_id, password, writes_blocked=writes_blocked, on=True)
            )
        return self._credentials(resource_id, password)

    async def tenants(self) -> set[UUID]:
        """Every resource with an ACL user on the server (``ResourceLifecycle.reconcile``)."""
        async with self._backend_errors("listed"):
            users = await self._command("ACL", "USERS")
        listed = users if isinstance(users, list) else []  # ACL USERS answers an array
        names = (user.decode() if isinstance(user, bytes) else str(user) for user in listed)
        return {rid for rid in map(tenant_resource_id, names) if rid is not None}

    async def capacity(self) -> dict[Ceiling, tuple[int, int]]:
        """Connections against ``maxclients`` and memory against ``maxmemory``: one ``INFO``.

        Past either every tenant is refused: new connections, or (``noeviction``) every write.
        A server without ``maxmemory`` reports no memory ceiling.
        """
        async with self._backend_errors("checked"):
            info = await self._admin.info("clients", "memory")
        figures = {Ceiling.CONNECTIONS: (int(info["connected_clients"]), int(info["maxclients"]))}
        if int(info["maxmemory"]) > 0:
            figures[Ceiling.MEMORY_BYTES] = (int(info["used_memory"]), int(info["maxmemory"]))
        return figures

    async def server_run(self) -> str:
        """The server's ``run_id``: a new one each time the server starts (and forgets users)."""
        async with self._backend_errors("checked"):
            info = await self._admin.info("server")
        return str(info["run_id"])

    async def restore_credentials(
        self,
        resource_id: UUID,
        credentials: Credentials,
        *,
        writes_blocked: bool,
        suspended: bool,
    ) -> None:
        """Make the tenant's user as the log last recorded it: its password, rules and block.

        A suspended tenant's user is made ``off``, so its password stays refused while its keys
        can still be exported. Connections already open as the user are left alone.
        """
        if not isinstance(credentials, RedisCredentials):
            msg = f"not Redis credentials: {type(credentials).__name__}"
            raise TypeError(msg)
        user = whole_user(
            resource_id, credentials.password, writes_blocked=writes_blocked, on=not suspended
        )
        async with self._backend_errors("restored"):
            await self._command(*user)

    async def drop_credentials(self, resource_id: UUID) -> None:
        """Delete the tenant's user (ending its connections) and leave its keys; none is fine."""
        name = guard_tenant_name(tenant_name(resource_id))
        async with self._backend_errors("removed"):
            await self._command("ACL", "DELUSER", name)

    def _credentials(self, resource_id: UUID, password: str) -> RedisCredentials:
        name = tenant_name(resource_id)
        url = f"redis://{name}:{password}@{self._public_host}:{self._public_port}/0"
        return RedisCredentials(
            connection_url=url,
            host=self._public_host,
            port=self._public_port,
            username=name,
            password=password,
            key_prefix=key_prefix(resource_id),
        )

    async def _writes_blocked(self, name: str) -> bool | None:
        """Whether the user's writes are blocked now; ``None`` when there is no such user.

        Asked of the server (``ACL DRYRUN`` of a write inside the tenant's own prefix) rather
        than read from ``ACL GETUSER``, which rewrites the rules into an equivalent but
        different list. Both questions go in one round trip.
        """
        async with self._admin.pipeline(transaction=False) as pipe:
            pipe.execute_command("ACL", "GETUSER", name)
            pipe.execute_command("ACL", "DRYRUN", name, "SET", f"{name}:spinup-write-probe", "x")
            user, verdict = await pipe.execute(raise_on_error=False)
        if user is None:
            return None
        if isinstance(verdict, BaseException):
            raise verdict
        return verdict not in (b"OK", "OK")

    async def set_limits(
        self,
        resource_id: UUID,
        limits: RedisLimits,  # noqa: ARG002  (memory has no per-user cap in Redis: the usage sweep measures it)
    ) -> None:
        """Re-apply the tenant's ACL rules; the memory quota itself is the usage sweep's job.

        Redis cannot cap one user's memory, so there is no limit to raise here: ``memory_mb`` is
        what ``usage`` is compared with. What this does is bring the user's key, channel and
        command rules to the current ones (a user made under older rules gets today's), keeping
        its password, its open connections and any write block in force.

        Raises:
            SpinupError: NOT_FOUND when the tenant has no user.
        """
        name = guard_tenant_name(tenant_name(resource_id))
        prefix = key_prefix(resource_id)
        async with self._backend_errors("changed"):
            blocked = await self._writes_blocked(name)
            if blocked is None:
                raise _missing(resource_id)
            await self._command(
                "ACL",
                "SETUSER",
                name,
                "resetkeys",
                f"~{prefix}*",
                "resetchannels",
                f"&{prefix}*",
                *command_rules(writes_blocked=blocked),
            )

    async def rotate(
        self,
        resource_id: UUID,
        limits: RedisLimits,  # noqa: ARG002  (memory has no per-user cap in Redis: the usage sweep measures it)
    ) -> RedisCredentials:
        """Replace the user's password and disconnect every client logged in as the user.

        Only the password changes (``resetpass``): keys, commands and a write block in force
        stay as they are.

        Raises:
            SpinupError: NOT_FOUND when the tenant has no user.
        """
        name = guard_tenant_name(tenant_name(resource_id))
        password = secrets.token_urlsafe(24)
        async with self._backend_errors("rotated"):
            if await self._command("ACL", "GETUSER", name) is None:
                raise _missing(resource_id)
            await self._command("ACL", "SETUSER", name, "resetpass", f"#{password_hash(password)}")
            # A new password does not end sessions already authenticated with the old one.
            await self._command("CLIENT", "KILL", "USER", name)
        return self._credentials(resource_id, password)

    async def block_writes(
        self,
        resource_id: UUID,
        *,
        usage: int,  # noqa: ARG002  (one level of block: no escalation to decide)
        quota: int,  # noqa: ARG002
    ) -> None:
        """Take the user's write commands away (``WRITE_BLOCK_RULES``), open connections included.

        Reads keep working, and so do the commands that remove data (DEL, UNLINK, EXPIRE, the
        pops and removes), so the tenant can get back under quota by itself. Idempotent: a user
        already blocked is left untouched; a missing user is left missing.
        """
        await self._set_write_block(resource_id, blocked=True)

    async def allow_writes(self, resource_id: UUID) -> None:
        """Give the user its normal command rules back; harmless on a user never blocked."""
        await self._set_write_block(resource_id, blocked=False)

    async def _set_write_block(self, resource_id: UUID, *, blocked: bool) -> None:
        name = guard_tenant_name(tenant_name(resource_id))
        async with self._backend_errors("blocked" if blocked else "unblocked"):
            now = await self._writes_blocked(name)
            if now is None or now == blocked:
                return
            # Command rules only: ``+@all`` at their head replaces the old ones, password and
            # keys stay. (ACL SETUSER would create a missing user, hence the check above.)
            await self._command("ACL", "SETUSER", name, *command_rules(writes_blocked=blocked))
        log.info("redis_provisioner.writes.changed", user=name, blocked=blocked)

    async def usage(
        self, resource_ids: Sequence[UUID], *, sweep_id: UUID | None = None
    ) -> dict[UUID, int]:
        """Bytes of keys each tenant holds, from a census of the whole keyspace (docs/adr/0060).

        Finding a tenant's keys takes a SCAN of the whole keyspace, so a census weighs every
        tenant's keys in one pass (``_count_keyspace``), and every page of the sweep
        ``sweep_id`` is answered from the census its first page took: a scan for each page of
        500 made a sweep cost pages x keys. A call without ``sweep_id`` takes a census of its own.

        Whether each asked tenant still has its user, or waits for ``unlink_deleted``, is asked
        at each call: a tenant with neither a user nor keys is left out, as is a deleted one
        whose keys wait for ``unlink_deleted``; one with a user and no keys uses 0 bytes.
        """
        names = {rid: guard_tenant_name(tenant_name(rid)) for rid in resource_ids}
        if not names:
            return {}
        async with self._backend_errors("measured"):
            async with self._admin.pipeline(transaction=False) as pipe:
                for name in names.values():
                    pipe.execute_command("ACL", "DRYRUN", name, "PING")
                pipe.smismember(DELETED_TENANTS_KEY, list(names.values()))
                *dry_runs, pending = await pipe.execute(raise_on_error=False)
            if isinstance(pending, Exception):
                raise pending
            held = (await self._census_for(sweep_id)).bytes_by_prefix
        answer: dict[UUID, int] = {}
        for (rid, name), reply, deleted in zip(names.items(), dry_runs, pending, strict=True):
            size = held.get(name.encode() + b":")
            # A deleted tenant's keys, waiting for ``unlink_deleted``, are nobody's.
            if _user_exists(name, reply) or (size is not None and not deleted):
                answer[rid] = size or 0
        return answer

    async def _census_for(self, sweep_id: UUID | None) -> KeyspaceCensus:
        """The census this worker took for ``sweep_id``, or a new one (kept for that sweep)."""
        async with self._census_taken:
            if (
                sweep_id is not None
                and self._census is not None
                and self._census.sweep_id == sweep_id
            ):
                return self._census
            census = KeyspaceCensus(sweep_id, await self._count_keyspace())
            if sweep_id is not None:
                self._census = census
            return census

    async def _count_keyspace(self) -> dict[bytes, int]:
        """Bytes under each key prefix (up to the first ``:``): one SCAN, sampled ``MEMORY USAGE``.

        Each prefix's bytes are the mean ``MEMORY USAGE`` of up to ``_USAGE_SAMPLE_KEYS`` of its
        keys times its key count (exact when it has no more keys than that). The sampled keys of
        each SCAN step are weighed as it is read (``_weigh``), so what is held is one figure per
        prefix and a step's keys. A key deleted since its step answers None and is left out of
        the mean.
        """
        counts: dict[bytes, int] = {}
        sampled: dict[bytes, int] = {}
        weighed: dict[bytes, int] = {}
        cursor = None
        while cursor != 0:
            cursor, keys = await self._admin.scan(cursor or 0, count=_SCAN_COUNT)
            picked: list[tuple[bytes, bytes]] = []
            # The admin client does not decode replies: the keys are bytes.
            for key in cast("list[bytes]", keys):
                head, colon, _rest = key.partition(b":")
                if not colon:
                    continue
                prefix = head + colon
                counts[prefix] = counts.get(prefix, 0) + 1
                if sampled.get(prefix, 0) < _USAGE_SAMPLE_KEYS:
                    sampled[prefix] = sampled.get(prefix, 0) + 1
                    picked.append((prefix, key))
            for start in range(0, len(picked), _WEIGH_BATCH):
                batch = picked[start : start + _WEIGH_BATCH]
                for (prefix, _key), size in zip(
                    batch, await self._weigh([key for _, key in batch]), strict=True
                ):
                    if size is None:
                        sampled[prefix] -= 1
                    else:
                        weighed[prefix] = weighed.get(prefix, 0) + size
        return {
            prefix: round(weighed.get(prefix, 0) / sampled[prefix] * count)
            if sampled.get(prefix)
            else 0
            for prefix, count in counts.items()
        }

    async def _weigh(self, keys: list[bytes]) -> list[int | None]:
        """``MEMORY USAGE`` of each key, by ``WEIGH_FUNCTION``; loaded first if the server lost it.

        A restarted server (or ``FUNCTION FLUSH``) has no functions: the call is answered
        "Function not found", the library is loaded and the call made again.
        """
        try:
            sizes = await self._admin.fcall_ro(WEIGH_FUNCTION, len(keys), *keys)
        except ResponseError as exc:
            if "function not found" not in str(exc).lower():
                raise
            await self.load_weigh_function()
            sizes = await self._admin.fcall_ro(WEIGH_FUNCTION, len(keys), *keys)
        return cast("list[int | None]", sizes)

    async def load_weigh_function(self) -> None:
        """Put ``WEIGH_LIBRARY`` in the server (idempotent: it replaces the library)."""
        await self._command("FUNCTION", "LOAD", "REPLACE", WEIGH_LIBRARY)

    async def delete(self, resource_id: UUID) -> None:
        """Delete the user (ending its connections); its keys go at the next ``unlink_deleted``.

        The user goes first so nothing can write new keys, then the tenant is named for removal.
        Finding a prefix's keys takes a SCAN of the whole keyspace, about 1 ms of the server per
        1,000 keys of every tenant: one per delete made each delete cost more as tenants
        accumulated (4 s of the shared server at 4 million keys). One pass removes the keys of
        every tenant deleted since the last. Idempotent; a missing user is fine.
        """
        name = guard_tenant_name(tenant_name(resource_id))
        async with self._backend_errors("deleted"):
            # ACL DELUSER also disconnects every client authenticated as that user.
            await self._command("ACL", "DELUSER", name)
            await self._admin.sadd(DELETED_TENANTS_KEY, name)

    async def unlink_deleted(self) -> int:
        """Remove the keys of every tenant ``delete`` named since the last pass; keys removed.

        One SCAN of the keyspace for all of them, then they are no longer named. A tenant
        deleted during the pass waits for the next one. Passes may overlap (several workers):
        the second unlinks nothing.
        """
        async with self._backend_errors("deleted"):
            listed = cast("list[bytes]", await self._admin.smembers(DELETED_TENANTS_KEY))
            if not listed:
                return 0
            prefixes = {guard_tenant_name(name.decode()).encode() + b":" for name in listed}
            removed = 0
            batch: list[bytes] = []
            async for key in self._admin.scan_iter(count=_SCAN_COUNT):
                head, colon, _rest = cast("bytes", key).partition(b":")
                if colon and head + colon in prefixes:
                    batch.append(key)
                if len(batch) >= _DELETE_BATCH:
                    removed += await self._admin.unlink(*batch)
                    batch.clear()
            if batch:
                removed += await self._admin.unlink(*batch)
            await self._admin.srem(DELETED_TENANTS_KEY, *listed)
        log.info("redis_provisioner.keys.unlinked", tenants=len(listed), keys=removed)
        return removed

    # -- export and suspend (docs/adr/0030, docs/export-formats.md) ----------------------------

    async def suspend(self, resource_id: UUID) -> None:
        """At expiry: the user is switched ``off`` and its connections are killed; keys stay.

        ``off`` refuses new logins but leaves sessions already authenticated alone, hence the
        ``CLIENT KILL USER``. ``delete`` removes the user and keys as usual; a missing user is
        fine.
        """
        name = guard_tenant_name(tenant_name(resource_id))
        async with self._backend_errors("suspended"):
            # ACL SETUSER would create a missing user: look first.
            if await self._command("ACL", "GETUSER", name) is None:
                return
            await self._command("ACL", "SETUSER", name, "off")
            await self._command("CLIENT", "KILL", "USER", name)
        log.info("redis_provisioner.user.suspended", user=name)

    def export(self, resource_id: UUID, fmt: str) -> AsyncIterator[bytes]:
        """Every key of the tenant as one JSON line (``jsonl``), read by the admin connection.

        Keys lose the tenant's prefix so the copy restores under another tenant's. One SCAN page
        at a time (type and TTL of the page in one round trip, then the values in another), so
        memory is a page of keys whatever the keyspace; a key deleted meanwhile is left out.
        """
        return chunked(self._export_lines(resource_id, fmt))

    async def _export_lines(self, resource_id: UUID, fmt: str) -> AsyncGenerator[bytes]:
        if fmt not in {f.name for f in EXPORT_FORMATS[ResourceKind.REDIS]}:
            msg = "A Redis cache exports as jsonl (one JSON object per key)."
            raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
        name = guard_tenant_name(tenant_name(resource_id))
        prefix = f"{name}:".encode()
        async with self._backend_errors("exported"):
            if not await self.exists(resource_id):
                raise _missing(resource_id)
        cursor: int | None = None
        while cursor != 0:
            async with self._backend_errors("exported"):
                cursor, keys = await self._admin.scan(
                    cursor or 0, match=f"{name}:*", count=_EXPORT_SCAN_COUNT
                )
                lines = await self._export_page(cast("list[bytes]", keys), prefix)
            for line in lines:
                yield line

    async def _export_page(self, keys: list[bytes], prefix: bytes) -> list[bytes]:
        if not keys:
            return []
        async with self._admin.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.type(key)
                pipe.pttl(key)
            heads = await pipe.execute()
        kept: list[tuple[bytes, str, int]] = []
        async with self._admin.pipeline(transaction=False) as pipe:
            for index, key in enumerate(keys):
                kind = _text(heads[2 * index])
                reader = _VALUE_READERS.get(kind)
                if reader is None:  # "none": deleted since the SCAN (or a module type)
                    continue
                reader(pipe, key)
                kept.append((key, kind, int(heads[2 * index + 1])))
            values = await pipe.execute(raise_on_error=False)
        lines: list[bytes] = []
        for (key, kind, ttl_ms), value in zip(kept, values, strict=True):
            if isinstance(value, BaseException):
                # WRONGTYPE: replaced by a key of another type between the two round trips.
                continue
            record = {
                "key": _b64(key.removeprefix(prefix)),
                "type": kind,
                "ttl_ms": ttl_ms if ttl_ms >= 0 else None,
                "value": _export_value(kind, value),
            }
            lines.append(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        return lines

    async def exists(self, resource_id: UUID) -> bool:
        """Whether the tenant's user or any of its keys exists (for sweeps and tests).

        A deleted tenant whose keys wait for ``unlink_deleted`` does not: nobody can reach them.
        """
        name = tenant_name(resource_id)
        async with self._backend_errors("checked"):
            if await self._command("ACL", "GETUSER", name) is not None:
                return True
            if await self._admin.sismember(DELETED_TENANTS_KEY, name):
                return False
            async for _key in self._admin.scan_iter(match=f"{name}:*", count=1000):
                return True
        return False


def _user_exists(name: str, dry_run: object) -> bool:
    """Whether ``ACL DRYRUN <name> PING`` found the user: any answer but "User ... not found".

    A sweep's page asks it of every tenant. ``ACL GETUSER`` spent 0.17 ms of the server per
    user describing its rules; ``ACL DRYRUN`` about a tenth of that or less (ADR 0059).

    Raises:
        RedisError: any other refusal.
    """
    if isinstance(dry_run, RedisError):
        if str(dry_run) == f"User '{name}' not found":
            return False
        raise dry_run
    return True


def _missing(resource_id: UUID) -> SpinupError:
    return SpinupError(
        ErrorCode.NOT_FOUND,
        f"The cache {resource_id} has no user on the Redis server; it may have been deleted.",
    )


#: Keys asked for per SCAN step of an export: each page is read in two pipelined round trips.
_EXPORT_SCAN_COUNT = 200


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_VALUE_READERS: dict[str, Callable[[Pipeline, bytes], object]] = {
    "string": lambda pipe, key: pipe.get(key),
    "hash": lambda pipe, key: pipe.hgetall(key),
    "list": lambda pipe, key: pipe.lrange(key, 0, -1),
    "set": lambda pipe, key: pipe.smembers(key),
    "zset": lambda pipe, key: pipe.zrange(key, 0, -1, withscores=True),
    "stream": lambda pipe, key: pipe.xrange(key),
}


def _export_value(kind: str, value: object) -> object:  # noqa: PLR0911  (one branch per type)
    """The JSON form of one value (docs/export-formats.md): every byte string in base64."""
    if kind == "string":
        return _b64(cast("bytes", value))
    if kind == "hash":
        return [[_b64(f), _b64(v)] for f, v in cast("dict[bytes, bytes]", value).items()]
    if kind == "list":
        return [_b64(item) for item in cast("list[bytes]", value)]
    if kind == "set":
        return sorted(_b64(item) for item in cast("set[bytes]", value))
    if kind == "zset":
        return [[_b64(m), score] for m, score in cast("list[tuple[bytes, float]]", value)]
    if kind == "stream":
        return [
            [_text(entry_id), [[_b64(f), _b64(v)] for f, v in fields.items()]]
            for entry_id, fields in cast("list[tuple[bytes, dict[bytes, bytes]]]", value)
        ]
    return None
