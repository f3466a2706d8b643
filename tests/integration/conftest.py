"""Clients of the running stack's servers, for tests that drive the pieces directly."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from shared.bus import Bus
from shared.crypto.sealing import Keyring
from shared.eventlog.projections import ResourceProjection
from shared.eventlog.store import EventStore


@pytest.fixture
async def bus(env: dict[str, str]) -> AsyncIterator[Bus]:
    connected = await Bus.connect(env["SPINUP_NATS_URL"], name="test")
    yield connected
    await connected.close()


@pytest.fixture
def store(platform_db: asyncpg.Pool, env: dict[str, str]) -> EventStore:
    return EventStore(
        platform_db, Keyring.from_setting(env["SPINUP_SEAL_KEYS"]), [ResourceProjection()]
    )
