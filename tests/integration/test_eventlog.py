from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg
import msgspec
import pytest

from shared.contracts.commands import ProvisionResource
from shared.contracts.events import ResourceProvisioned
from shared.contracts.kinds import (
    Caps,
    ResourceKind,
    ResourceStatus,
)
from shared.eventlog.codec import encode_event, event_type
from shared.eventlog.errors import AppendRefusedError, ConcurrencyConflictError
from shared.eventlog.projections import ResourceReadModel, caps_precondition, held
from shared.eventlog.store import EventStore, Precondition, read_committed_after
from shared.naming import resource_stream
from shared.testing.factories import provision_command, provision_requested

pytestmark = pytest.mark.integration


async def test_append_assigns_versions_positions_and_updates_the_projection(
    store: EventStore, platform_db: asyncpg.Pool
) -> None:
    rid = uuid.uuid4()
    stream = resource_stream(rid)
    first = await store.append(
        stream, 0, [provision_requested(rid)], command_id=uuid.uuid4(), correlation_id="c1"
    )
    second = await store.append(
        stream,
        1,
        [ResourceProvisioned(resource_id=rid, credentials_sealed="sealed")],
        command_id=uuid.uuid4(),
        correlation_id="c2",
    )
    assert [e.version for e in await store.load(stream)] == [1, 2]
    assert second[0].position > first[0].position
    row = await ResourceReadModel(platform_db).by_id(rid)
    assert row is not None
    assert row.status is ResourceStatus.ACTIVE
    assert row.version == 2


async def test_concurrent_appends_at_the_same_version_let_exactly_one_win(
    store: EventStore,
) -> None:
    rid = uuid.uuid4()
    stream = resource_stream(rid)
    results = await asyncio.gather(
        *(
            store.append(
                stream, 0, [provision_requested(rid)], command_id=uuid.uuid4(), correlation_id="c"
            )
            for _ in range(5)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(
        isinstance(r, ConcurrencyConflictError) for r in results if isinstance(r, BaseException)
    )
    assert len(await store.load(stream)) == 1


def passes_when(*, passes: bool, detail: str) -> Precondition:
    """A precondition that refuses with ``detail`` unless ``passes``."""
    return Precondition(
        "SELECT CASE WHEN ${p0}::boolean THEN 0 ELSE refuse_append(${p1}) END", (passes, detail)
    )


async def test_an_append_its_precondition_refuses_writes_nothing_at_all(
    store: EventStore, platform_db: asyncpg.Pool
) -> None:
    rid, command_id = uuid.uuid4(), uuid.uuid4()
    stream = resource_stream(rid)
    events = [
        provision_requested(rid),
        ResourceProvisioned(resource_id=rid, credentials_sealed="sealed"),
    ]

    async def append(*, passes: bool) -> None:
        await store.append(
            stream,
            0,
            events,
            command_id=command_id,
            correlation_id="c",
            precondition=passes_when(passes=passes, detail="over the cap"),
        )

    with pytest.raises(AppendRefusedError) as refused:
        await append(passes=False)
    assert refused.value.detail == "over the cap"
    # Asked alone (before a costly create), it refuses the same way.
    with pytest.raises(AppendRefusedError):
        await store.check(passes_when(passes=False, detail="over the cap"))
    await store.check(passes_when(passes=True, detail="unused"))
    # Not the events, nor the projected row.
    assert await store.load(stream) == []
    assert await ResourceReadModel(platform_db).by_id(rid) is None

    await append(passes=True)
    assert [e.version for e in await store.load(stream)] == [1, 2]


async def test_the_caps_precondition_counts_the_holders_live_and_made_resources(
    store: EventStore, platform_db: asyncpg.Pool
) -> None:
    caps = Caps(active_per_kind=2, provisions_per_day=3)
    network = f"caps-{uuid.uuid4().hex}"

    async def record_intent(command: ProvisionResource) -> None:
        await store.append(
            resource_stream(command.resource_id),
            0,
            [
                provision_requested(
                    command.resource_id, fingerprint=command.fingerprint, kind=command.kind
                )
            ],
            command_id=command.command_id,
            correlation_id="c",
            precondition=caps_precondition(command, caps),
        )

    made = [provision_command(fingerprint=network) for _ in range(2)]
    for command in made:
        await record_intent(command)
    # Two live postgres resources: a third is refused, another kind is not.
    with pytest.raises(AppendRefusedError) as refused:
        await record_intent(provision_command(fingerprint=network))
    assert held(refused.value) == (2, 2)
    await record_intent(provision_command(fingerprint=network, kind=ResourceKind.REDIS))
    # Three made today: the daily cap refuses every kind, and another network is apart.
    with pytest.raises(AppendRefusedError) as refused:
        await record_intent(provision_command(fingerprint=network, kind=ResourceKind.MONGO))
    assert held(refused.value) == (0, 3)
    await record_intent(provision_command(fingerprint=f"other-{network}"))
    # A resource is not counted against itself (the retry of a create that failed): without
    # it, one live and two made today.
    check = caps_precondition(made[0], caps)
    assert await platform_db.fetchval(check.numbered_from(1), *check.values) == 0


async def test_events_are_stored_as_inspectable_json_with_their_type(
    store: EventStore, platform_db: asyncpg.Pool
) -> None:
    rid = uuid.uuid4()
    await store.append(
        resource_stream(rid),
        0,
        [provision_requested(rid)],
        command_id=uuid.uuid4(),
        correlation_id="c",
    )
    row = await platform_db.fetchrow(
        "SELECT event_type, data FROM events WHERE stream_id = $1", resource_stream(rid)
    )
    assert row["event_type"] == "ResourceProvisionRequested"
    assert msgspec.json.decode(row["data"])["type"] == "ResourceProvisionRequested"


async def _streams_relayed_after(
    platform_db: asyncpg.Pool, cursor: tuple[int, int], streams: set[str]
) -> list[str]:
    async with platform_db.acquire() as conn:
        batch = await read_committed_after(conn, cursor, 100_000)
    return [recorded.stream_id for _, recorded in batch if recorded.stream_id in streams]


async def test_the_relay_order_waits_for_a_transaction_that_appended_earlier_and_commits_later(
    store: EventStore, platform_db: asyncpg.Pool
) -> None:
    """Appends run concurrently; the relay must still never pass an event that commits late."""
    end = await platform_db.fetchrow(
        "SELECT txid, position FROM events ORDER BY txid DESC, position DESC LIMIT 1"
    )
    cursor = (end["txid"], end["position"]) if end else (0, 0)
    early, late = uuid.uuid4(), uuid.uuid4()
    streams = {resource_stream(early), resource_stream(late)}
    async with platform_db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        event = provision_requested(early)
        await conn.execute(
            "INSERT INTO events (stream_id, version, event_id, event_type, data, command_id,"
            " correlation_id) VALUES ($1, 1, $2, $3, $4::jsonb, $2, 'early')",
            resource_stream(early),
            uuid.uuid4(),
            event_type(event),
            encode_event(event),
        )
        await store.append(
            resource_stream(late),
            0,
            [provision_requested(late)],
            command_id=uuid.uuid4(),
            correlation_id="late",
        )
        # Committed, but behind a transaction still running: not relayable yet.
        assert await _streams_relayed_after(platform_db, cursor, streams) == []
        await transaction.commit()
    assert await _streams_relayed_after(platform_db, cursor, streams) == [
        resource_stream(early),
        resource_stream(late),
    ]
    # The early stream was written around the store: its next append through it writes its
    # row, so the log and the projection agree again for the tests that compare them.
    await store.append(
        resource_stream(early),
        1,
        [ResourceProvisioned(resource_id=early, credentials_sealed="x")],
        command_id=uuid.uuid4(),
        correlation_id="early",
    )


async def test_a_usage_row_is_written_only_when_its_figure_changed_or_it_is_due_a_refresh(
    platform_db: asyncpg.Pool,
) -> None:
    model = ResourceReadModel(platform_db)
    same, grown = uuid.uuid4(), uuid.uuid4()

    async def rows() -> dict[uuid.UUID, tuple[int, int]]:
        """Each row's (transaction that last wrote it, bytes)."""
        found = await platform_db.fetch(
            "SELECT resource_id, xmin::text::bigint AS written_by, usage_bytes"
            " FROM resource_usage WHERE resource_id = ANY($1::uuid[])",
            [same, grown],
        )
        return {row["resource_id"]: (row["written_by"], row["usage_bytes"]) for row in found}

    await model.record_usage({same: 4_096, grown: 8_192})
    first = await rows()
    await model.record_usage({same: 4_096, grown: 9_000})
    second = await rows()
    assert second[same] == first[same]  # the same figure: the row was left as it was
    assert second[grown][1] == 9_000
    assert second[grown][0] != first[grown][0]
    await model.record_usage({same: 4_096}, refresh=timedelta(0))
    assert (await rows())[same][0] != first[same][0]  # due a refresh: written again
