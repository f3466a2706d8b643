"""The stack's upload (JetStream object store) and its log lines (JetStream stream).

The gateway puts ``<stack id>/spinup.yaml`` and ``<stack id>/<file>`` into ``STACK_UPLOADS_BUCKET``
before it asks for the stack (``shared.stacks.uploads``); the deployer reads them here and removes
them with the stack.
Log lines go out as ``StackLogLine`` JSON on the stack's subject of ``STACK_LOGS_STREAM``.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
import structlog
from nats.js.errors import NotFoundError

from shared.bus import STACK_LOG_LINE_MAX
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.stacks import MANIFEST_NAME, StackLogLine, StackManifest, parse_manifest
from shared.contracts.subjects import STACK_LOGS_STREAM, STACK_UPLOADS_BUCKET, stack_logs_subject
from shared.stacks.uploads import remove_upload

if TYPE_CHECKING:
    from uuid import UUID

    from nats.aio.client import Client as NatsClient
    from nats.js.client import JetStreamContext

log = structlog.get_logger("stack_deployer.jetstream")
_encoder = msgspec.json.Encoder()
#: Lines kept in memory per deploy for ``StackFailed.logs_tail``.
TAIL_LINES = 40


class Uploads:
    """One stack's files in the uploads object store."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def read(self, stack_id: UUID, name: str) -> bytes:
        """The uploaded file ``name`` of the stack.

        Raises:
            SpinupError: ``invalid_manifest`` when the file is not in the store.
        """
        store = await self._js.object_store(STACK_UPLOADS_BUCKET)
        try:
            result = await store.get(f"{stack_id}/{name}")
        except NotFoundError:
            msg = f"The upload has no file {name!r}; deploy the stack again with it."
            raise SpinupError(ErrorCode.INVALID_MANIFEST, msg) from None
        return bytes(result.data or b"")

    async def manifest(self, stack_id: UUID) -> StackManifest:
        """The stack's stored ``spinup.yaml``, parsed.

        Raises:
            SpinupError: ``invalid_manifest`` when missing or no longer valid.
        """
        return parse_manifest(await self.read(stack_id, MANIFEST_NAME))

    async def delete(self, stack_id: UUID) -> None:
        """Remove every file of the stack (idempotent)."""
        await remove_upload(self._js, stack_id)


class StackLog:
    """Publishes one stack's log lines and keeps the last few for a failure report."""

    def __init__(self, nc: NatsClient, stack_id: UUID) -> None:
        self._nc = nc
        self._subject = stack_logs_subject(stack_id)
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)

    async def line(self, source: str, text: str) -> None:
        """Publish one line (cut to the stream's line size); never raises."""
        text = text.rstrip()[:STACK_LOG_LINE_MAX]
        self.tail.append(f"[{source}] {text}")
        entry = StackLogLine(at=datetime.now(UTC), source=source, line=text)
        try:
            # Plain publish: the stream stores it; a lost line must not fail a deploy.
            await self._nc.publish(self._subject, _encoder.encode(entry))
        except Exception:  # noqa: BLE001
            log.warning("stack.log.unpublished", subject=self._subject)

    def tail_text(self) -> str:
        """The kept lines, oldest first."""
        return "\n".join(self.tail)


async def purge_logs(js: JetStreamContext, stack_id: UUID) -> None:
    """Drop a deleted stack's log lines."""
    try:
        await js.purge_stream(STACK_LOGS_STREAM, subject=stack_logs_subject(stack_id))
    except NotFoundError:
        return
