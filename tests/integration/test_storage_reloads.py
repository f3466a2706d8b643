"""The S3 gateway's full reload of its identities undoes no key change for long (ADR 0055).

With the Postgres credential store, SeaweedFS's S3 gateway reads every identity from the store
once a minute and puts what it read in place of what it holds. A rotate the filer pushed while
that read was under way was undone when the reload landed: the revoked key worked again and the
new one was refused, until the next reload a minute later. The driver's ``watch_reloads`` finds
each reload (its canary is gone) and puts back what it undid.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.s3_identities import remove_identities, store_identities
from devstack.seaweed import credential_dsn
from devstack.stack import Stack
from shared.contracts.kinds import S3Credentials, S3Limits
from storage_provisioner.driver import S3Driver
from tests.integration.test_storage_driver import key_works

pytestmark = pytest.mark.integration

LIMITS = S3Limits(storage_mb=3)
# Identities in the store make the gateway's reload read for about 0.1 ms each: 20,000 keep a
# reload reading for seconds, so rotations land inside one.
STORED_IDENTITIES = 20_000
LOAD_PREFIX = "spinup-test-load-"
# SeaweedFS 4.48 reloads every 60 s; rotations run a little longer, so one reload at least
# falls among them.
ROTATING_S = 70.0
ROTATE_EVERY_S = 0.4
# A rotated tenant is watched this long after its rotate: a reload's undoing, unrepaired, lasts
# until the next reload, a minute later.
WATCHED_S = 8.0
PROBE_EVERY_S = 0.4
# What the watch may take: its probe interval, the check after a reload, and this test's probe.
LONGEST_WRONG_S = 4.0
WATCH_INTERVAL_S = 0.5


@pytest.fixture
async def many_stored_identities(stack: Stack) -> AsyncIterator[None]:
    """Identities with a key each and no actions, written straight into the credential store."""
    conn = await asyncpg.connect(credential_dsn(stack.profile, stack.secrets))
    try:
        await store_identities(conn, LOAD_PREFIX, STORED_IDENTITIES)
        yield
    finally:
        await remove_identities(conn, LOAD_PREFIX)
        await conn.close()


@dataclass
class Rotated:
    """One tenant after its rotate answered: the key it got and the one it lost."""

    answered_at: float
    new: S3Credentials
    old: S3Credentials
    wrong_since: float | None = None
    longest_wrong_s: float = 0.0
    seen: list[tuple[float, bool, bool]] = field(default_factory=list)


async def watch_rotated(
    rotated: list[Rotated], session: aiohttp.ClientSession, stop: asyncio.Event
) -> None:
    """Probe each tenant's new and old key for ``WATCHED_S`` after its rotate answered."""
    while not stop.is_set():
        now = time.monotonic()
        for tenant in [t for t in rotated if now - t.answered_at <= WATCHED_S]:
            works, lingers = await asyncio.gather(
                key_works(tenant.new, session), key_works(tenant.old, session)
            )
            probed = time.monotonic()
            tenant.seen.append((round(probed - tenant.answered_at, 2), works, lingers))
            if works and not lingers:
                tenant.wrong_since = None
                continue
            tenant.wrong_since = tenant.wrong_since or probed
            tenant.longest_wrong_s = max(tenant.longest_wrong_s, probed - tenant.wrong_since)
        await asyncio.sleep(PROBE_EVERY_S)


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("many_stored_identities")
async def test_a_reload_during_rotations_undoes_none_of_them_for_long(
    s3_driver: S3Driver, stack: Stack
) -> None:
    count = int(ROTATING_S / ROTATE_EVERY_S)
    rids = [uuid.uuid4() for _ in range(count)]
    watch = asyncio.create_task(s3_driver.watch_reloads(WATCH_INTERVAL_S))
    rotated: list[Rotated] = []
    stop = asyncio.Event()
    session = aiohttp.ClientSession()
    try:
        made: list[S3Credentials] = []
        for start in range(0, count, 16):
            made += await asyncio.gather(
                *(s3_driver.create(r, LIMITS) for r in rids[start : start + 16])
            )
        probing = asyncio.create_task(watch_rotated(rotated, session, stop))
        for rid, old in zip(rids, made, strict=True):
            new = await s3_driver.rotate(rid, LIMITS)
            rotated.append(Rotated(time.monotonic(), new, old))
            await asyncio.sleep(ROTATE_EVERY_S)
        await asyncio.sleep(WATCHED_S)
        stop.set()
        await probing
    finally:
        watch.cancel()
        await session.close()
        for start in range(0, count, 16):
            await asyncio.gather(*(s3_driver.delete(r) for r in rids[start : start + 16]))
    assert s3_driver.reloads_found >= 1, "no reload of the gateway fell among the rotations"
    # The stack's storage-provisioner runs the same watch (its settings, address and keys).
    async with httpx.AsyncClient() as client:
        scraped = (await client.get(stack.metrics_urls["storage-provisioner"])).text
    found = {s.name: s.value for f in text_string_to_metric_families(scraped) for s in f.samples}
    assert found.get("spinup_s3_gateway_reloads_total", 0) >= 1
    wrong = {t.new.bucket: t.seen for t in rotated if t.longest_wrong_s > LONGEST_WRONG_S}
    assert not wrong
