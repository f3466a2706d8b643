"""Identity changes kept true across the S3 gateway's full reloads (ADR 0055).

With the Postgres credential store, SeaweedFS's S3 gateway (4.48) reads every identity from the
store once a minute, one query for the users and one per user for its keys, and then puts what
it read in place of everything it holds. A change the filer pushed to the gateway while that
read was under way is undone when the reload lands: a rotated key works again and the new one
is refused, a removed identity is back, a new one is gone, until the next push of that identity
or the next reload a minute later. The read takes about 0.1 ms per tenant (2 s at 20,000).

The driver cannot stop the reload, so it watches for it and checks again what it may have
undone:

- **The canary**: an identity pushed straight into the gateway's memory (its
  ``SeaweedS3IamCache`` gRPC, the filer's own way in), never stored. A full reload drops it, so
  a probe with its key that is refused says a reload has landed since the last probe that
  found it. It has no actions: it can sign requests and is allowed nothing.
- **The changes**: ``note`` records every identity change once the store has it, the latest per
  identity. Reloads run one after another, so the one just found began reading after the one
  before it had landed, and that came after the probe that last found the canary before it.
  The changes noted since that probe are checked with their keys; where the gateway disagrees,
  the store's own identity is copied into it (read again after each copy until it holds still,
  so a change made meanwhile is not overwritten by an older one).

What stays exposed: the time from a reload to the next probe plus the check, about a second
(``SPINUP_S3_RELOAD_CHECK_S``). One gateway is watched: the canary goes to
``SPINUP_S3_GATEWAY_GRPC`` and its probes to the S3 endpoint, which must be that same gateway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import structlog

from shared.observability.metrics import S3_GATEWAY_RELOADS, S3_IDENTITIES_RESTORED
from storage_provisioner.seaweed_pb import iam_pb2

log = structlog.get_logger("storage_provisioner.reloads")

KeyPair = tuple[str, str]

# A bucket no tenant has (tenant buckets are t-<hex>): the canary's probe asks about it.
CANARY_BUCKET = "spinup-reload-canary"
CANARY_PREFIX = "spinup-reload-canary-"
# Identities checked at once after a reload.
RECHECK_CONCURRENCY = 16
# How often a copy is read again while the store's identity keeps changing under it.
COPY_ATTEMPTS = 5
# Changes older than this are forgotten even if no reload was seen (a gateway that never
# reloads, or a driver nobody watches with, would otherwise grow the list for ever); a reload
# every minute leaves 2 minutes' worth.
FORGET_AFTER_S = 600.0


@dataclass(frozen=True, slots=True)
class IdentityChange:
    """What the gateway must hold after a change: ``valid`` keys work, ``revoked`` are refused."""

    bucket: str
    user: str
    valid: tuple[KeyPair, ...]
    revoked: tuple[KeyPair, ...]


class IdentityStore(Protocol):
    """Where identities are kept (the filer's IAM gRPC service over the credential store)."""

    async def identity(self, user: str) -> iam_pb2.Identity | None:
        """The stored identity; None if there is none."""
        ...


class GatewayIdentities(Protocol):
    """The S3 gateway's identities in memory, written directly."""

    async def put(self, identity: iam_pb2.Identity) -> None:
        """Hold this identity (replacing one of the same name)."""
        ...

    async def remove(self, user: str) -> None:
        """Forget the identity."""
        ...


Probe = Callable[[str, str, str], Awaitable[bool]]


async def holds(change: IdentityChange, key_known: Probe) -> bool:
    """Whether the gateway holds ``change``: each valid key known, each revoked one not."""
    for pair in change.valid:
        if not await key_known(change.bucket, *pair):
            return False
    for pair in change.revoked:
        if await key_known(change.bucket, *pair):
            return False
    return True


class ReloadWatch:
    """Finds the gateway's full reloads and puts back the changes they undid."""

    def __init__(
        self,
        *,
        store: IdentityStore,
        gateway: GatewayIdentities,
        key_known: Probe,
        canary: tuple[str, KeyPair],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._key_known = key_known
        self._canary_name, self._canary_key = canary
        self._clock = clock
        self._changes: dict[str, tuple[float, IdentityChange]] = {}
        self._planted = False
        self.reloads_found = 0
        # Changes noted before this time cannot be undone by a reload still to come.
        self._keep_since = clock()
        self._last_standing = self._keep_since

    def note(self, change: IdentityChange) -> None:
        """Record a change the store has (called after the write, before its first check)."""
        now = self._clock()
        self._changes.pop(change.user, None)
        self._changes[change.user] = (now, change)
        self._forget(before=now - FORGET_AFTER_S)

    async def check(self) -> int:
        """Probe the canary; after a reload, check the changes it may have undone.

        Returns how many identities were copied into the gateway again.
        """
        if not self._planted:
            await self._plant()
            return 0
        probed_at = self._clock()
        if await self._key_known(CANARY_BUCKET, *self._canary_key):
            self._last_standing = probed_at
            self._forget(before=probed_at - FORGET_AFTER_S)
            return 0
        self.reloads_found += 1
        S3_GATEWAY_RELOADS.inc()
        await self._plant()
        at_risk = [change for noted, change in self._changes.values() if noted >= self._keep_since]
        restored = await self._recheck(at_risk)
        S3_IDENTITIES_RESTORED.inc(restored)
        # Once a minute, in every replica: worth a line only when it undid something.
        report = log.info if restored else log.debug
        report("storage_provisioner.reload.found", checked=len(at_risk), restored=restored)
        self._keep_since = self._last_standing
        self._forget(before=self._keep_since)
        return restored

    async def run(self, interval_s: float) -> None:
        """``check`` every ``interval_s`` until cancelled; a failed probe waits for the next."""
        while True:
            try:
                await self.check()
            except Exception as exc:  # noqa: BLE001  (the gateway is down: the next probe)
                log.warning("storage_provisioner.reload.check_failed", error=repr(exc))
            await asyncio.sleep(interval_s)

    async def _plant(self) -> None:
        canary = iam_pb2.Identity(
            name=self._canary_name,
            credentials=[
                iam_pb2.Credential(
                    access_key=self._canary_key[0], secret_key=self._canary_key[1], status="Active"
                )
            ],
        )
        await self._gateway.put(canary)
        self._planted = True

    def _forget(self, *, before: float) -> None:
        # Insertion order is noting order (note moves a user to the end).
        while self._changes:
            user, (noted, _) = next(iter(self._changes.items()))
            if noted >= before:
                return
            del self._changes[user]

    async def _recheck(self, changes: Iterable[IdentityChange]) -> int:
        turns = asyncio.Semaphore(RECHECK_CONCURRENCY)

        async def one(change: IdentityChange) -> bool:
            async with turns:
                if await holds(change, self._key_known):
                    return False
                await self._copy(change.user)
                log.warning("storage_provisioner.reload.restored", user=change.user)
                return True

        return sum(await asyncio.gather(*(one(change) for change in changes)))

    async def _copy(self, user: str) -> None:
        """Copy the stored identity (or its absence) into the gateway until it holds still."""
        copied: list[iam_pb2.Identity | None] = []
        for _ in range(COPY_ATTEMPTS):
            stored = await self._store.identity(user)
            if copied and copied[-1] == stored:
                return
            if stored is None:
                await self._gateway.remove(user)
            else:
                await self._gateway.put(stored)
            copied.append(stored)
        log.warning("storage_provisioner.reload.copy_unsettled", user=user)
