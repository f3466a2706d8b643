"""The JetStream stream that carries committed events, in log order, to consumers outside the log.

No platform service depends on reading it from its start: the reaper asks the workers what is due
(docs/adr/0035), and the log in Postgres is the record. So the stream keeps a week
(``MAX_AGE_S``), not every event since the first.
"""

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
#: How long the stream keeps an event: a consumer away for longer reads the log instead.
MAX_AGE_S = 7 * 24 * 3600.0

STREAM_CONFIG = StreamConfig(
    name=EVENTS_STREAM,
    subjects=[EVENTS_SUBJECT_FILTER],
    storage=StorageType.FILE,
    duplicate_window=DUPLICATE_WINDOW_S,
    max_age=MAX_AGE_S,
)


async def ensure_events_stream(js: JetStreamContext) -> None:
    """Create the events stream if it does not exist yet; give one made before ``MAX_AGE_S`` it."""
    try:
        info = await js.stream_info(EVENTS_STREAM)
    except NotFoundError:
        await js.add_stream(STREAM_CONFIG)
        return
    if info.config.max_age != MAX_AGE_S:
        await js.update_stream(STREAM_CONFIG)
