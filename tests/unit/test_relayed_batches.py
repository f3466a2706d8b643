"""The relay's messages (ADR 0031): batches in log order, read back with single-event messages."""

import uuid

import msgspec
import pytest

from shared.contracts.events import RecordedEvent
from shared.contracts.subjects import EVENT_BATCH_SUBJECT
from shared.eventlog import relay
from shared.eventlog.relayed import relayed_through, unpack
from tests.unit.test_resource_state import recorded, requested

_encoder = msgspec.json.Encoder()


def _log(count: int) -> list[tuple[tuple[int, int], RecordedEvent]]:
    """``count`` first events of as many resources, each with its relay cursor."""
    return [
        ((1000 + n, n + 1), recorded(1, requested(uuid.uuid4(), expires_at=None)))
        for n in range(count)
    ]


def test_a_batch_unpacks_to_its_events_in_order_with_the_cursor_of_the_last() -> None:
    batch = _log(5)
    [(body, through)] = relay._messages(batch)
    assert through == batch[-1][0]
    assert relayed_through(body) == batch[-1][0]
    assert unpack(EVENT_BATCH_SUBJECT, body) == [event for _, event in batch]


def test_a_batch_over_the_message_size_is_split_in_order_each_with_its_own_cursor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch = _log(40)
    one_event = len(_encoder.encode(batch[0][1]))
    monkeypatch.setattr(relay, "_MESSAGE_BYTES", one_event * 7)
    messages = relay._messages(batch)
    assert len(messages) == 6
    unpacked = [unpack(EVENT_BATCH_SUBJECT, body) for body, _ in messages]
    assert [event for events in unpacked for event in events] == [event for _, event in batch]
    cursors = {event.event_id: cursor for cursor, event in batch}
    for events, (body, through) in zip(unpacked, messages, strict=True):
        assert through == cursors[events[-1].event_id] == relayed_through(body)


def test_single_event_messages_and_batches_read_back_alike() -> None:
    first = recorded(1, requested(uuid.uuid4(), expires_at=None))
    [(body, _)] = relay._messages([((1, 2), first)])
    single = _encoder.encode(first)
    # Where relays before ADR 0031 put a provision request, one message per event.
    old_subject = "evt.v1.resource.provision_requested"
    assert unpack(old_subject, single) == unpack(EVENT_BATCH_SUBJECT, body) == [first]
