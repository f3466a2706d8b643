"""What the relay puts on the events stream, and how a consumer reads it back (ADR 0031).

The relay publishes the events it read in one round as one message on ``EVENT_BATCH_SUBJECT``:
the events in log order, and the relay cursor (appending transaction, position) of the last one.
Earlier relays published one message per event on a subject of its type; a stream may hold
both, so a consumer reads every message through ``unpack``, in stream order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from shared.contracts.events import RecordedEvent
from shared.contracts.subjects import EVENT_BATCH_SUBJECT

if TYPE_CHECKING:
    from collections.abc import Sequence


class RelayedBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Events relayed together, in log order; ``through`` is the cursor after the last one."""

    through: tuple[int, int]
    events: list[RecordedEvent]


_batch = msgspec.json.Decoder(RelayedBatch)
_single = msgspec.json.Decoder(RecordedEvent)


def pack(encoded_events: Sequence[bytes], through: tuple[int, int]) -> bytes:
    """One message's body: events already JSON-encoded, and the cursor after the last of them.

    Joined as bytes rather than encoded again: the relay measures each event's size anyway.
    """
    head = b'{"through":[%d,%d],"events":[' % through
    return head + b",".join(encoded_events) + b"]}"


def unpack(subject: str, data: bytes) -> list[RecordedEvent]:
    """The events of one message of the events stream, batch or single, in log order.

    Raises:
        msgspec.MsgspecError: a body that is neither.
    """
    if subject == EVENT_BATCH_SUBJECT:
        return _batch.decode(data).events
    return [_single.decode(data)]


def relayed_through(data: bytes) -> tuple[int, int]:
    """The cursor after the last event of a batch message's body."""
    return _batch.decode(data).through
