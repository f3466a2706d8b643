"""The commands storage-provisioner answers, each bound to its endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.contracts.kinds import ResourceKind
from shared.worker import serve_lifecycle

if TYPE_CHECKING:
    from shared.bus import Bus
    from shared.lifecycle import ResourceLifecycle

# Handlers waiting for a create slot or a reply; beyond this, messages wait in NATS.
MAX_IN_FLIGHT = 256


async def register(bus: Bus, lifecycle: ResourceLifecycle) -> None:
    """Subscribe every handler in the ``storage-provisioner`` queue group."""
    await serve_lifecycle(bus, lifecycle, ResourceKind.S3, max_in_flight=MAX_IN_FLIGHT)
