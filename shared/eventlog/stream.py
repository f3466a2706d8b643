"""The JetStream stream that carries committed events to the reaper, SSE and audit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from shared.contracts.subjects import EVENTS_STREAM, EVENTS_SUBJECT_FILTER

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

# The relay publishes with Nats-Msg-Id = the cursor of a batch's last event (ADR 0031; earlier,
# the event id); the same batch published again within this window is dropped by the server.
DUPLICATE_WINDOW_S = 3600.0


async def ensure_events_stream(js: JetStreamContext) -> None:
    """Create the events stream if it does not exist yet."""
    try:
        await js.stream_info(EVENTS_STREAM)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=EVENTS_STREAM,
                subjects=[EVENTS_SUBJECT_FILTER],
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_S,
            )
        )
