"""Encoding events for storage, and reading old versions (upcasting) back into today's classes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from shared.contracts.events import Event, StoredEvent

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[StoredEvent] = msgspec.json.Decoder(StoredEvent)

# tag -> function from the stored dict to today's dict. Empty until an event changes shape.
UPCASTERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def event_type(event: Event) -> str:
    """The stored tag of an event (its class name)."""
    return type(event).__name__


def encode_event(event: Event) -> str:
    """JSON text for the ``data`` column."""
    return _encoder.encode(event).decode()


def decode_event(event_type_tag: str, data: str | bytes) -> StoredEvent:
    """Today's event object from a stored row, upcasting older shapes."""
    upcast = UPCASTERS.get(event_type_tag)
    if upcast is None:
        return _decoder.decode(data)
    upcasted: StoredEvent = msgspec.convert(upcast(msgspec.json.decode(data)), StoredEvent)
    return upcasted
