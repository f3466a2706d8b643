"""What a stack's containers are doing, folded from the stack events in its resource stream.

The resource itself (token, tier, expiry, deletion) is ``shared.resources.ResourceState``; this is
the deploy on top of it, the same for the stack-deployer's decisions, ``GET /resources/{token}``
and the gateway's proxy to the public URLs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from shared.contracts.events import (
    Event,
    ResourceProvisioned,
    StackDeployStarted,
    StackFailed,
    StackReady,
    StackServiceBuilt,
    StackServiceStarted,
    StackStopped,
)


class StackStatus(StrEnum):
    """Where the latest deploy is."""

    #: Created, no deploy recorded yet (the deployer starts one right after the create).
    PENDING = "pending"
    BUILDING = "building"
    RUNNING = "running"
    FAILED = "failed"
    STOPPED = "stopped"


class ServiceStatus(StrEnum):
    """Where one service of the latest deploy is."""

    WAITING = "waiting"
    BUILT = "built"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(slots=True)
class ServiceView:
    """One service of the latest revision."""

    name: str
    status: ServiceStatus = ServiceStatus.WAITING
    image: str | None = None
    container: str | None = None
    host: str | None = None
    port: int | None = None


@dataclass(slots=True)
class StackView:
    """The latest deploy of a stack."""

    revision: int = 0
    status: StackStatus = StackStatus.PENDING
    services: dict[str, ServiceView] = field(default_factory=dict)
    failed_service: str | None = None
    failure: str | None = None
    logs_tail: str | None = None

    def apply(self, event: Event) -> None:
        """Take one event into account; events of an older revision change nothing."""
        match event:
            case StackDeployStarted() if event.revision >= self.revision:
                self.revision = event.revision
                self.status = StackStatus.BUILDING
                self.services = {name: ServiceView(name) for name in event.services}
                self.failed_service = self.failure = self.logs_tail = None
            case StackServiceBuilt() if event.revision == self.revision:
                service = self.services.setdefault(event.service, ServiceView(event.service))
                service.status, service.image = ServiceStatus.BUILT, event.image
            case StackServiceStarted() if event.revision == self.revision:
                service = self.services.setdefault(event.service, ServiceView(event.service))
                service.status = ServiceStatus.RUNNING
                service.container, service.host, service.port = (
                    event.container,
                    event.host,
                    event.port,
                )
            case StackReady() if event.revision == self.revision:
                self.status = StackStatus.RUNNING
            case StackFailed() if event.revision == self.revision:
                self.status = StackStatus.FAILED
                self.failed_service, self.failure = event.service, event.reason
                self.logs_tail = event.logs_tail
                for service in self.services.values():
                    failed = service.name == event.service
                    service.status = ServiceStatus.FAILED if failed else ServiceStatus.STOPPED
            case StackStopped() if event.revision == self.revision:
                self.status = StackStatus.STOPPED
                for service in self.services.values():
                    service.status = ServiceStatus.STOPPED

    @classmethod
    def fold(cls, events: Iterable[Event]) -> StackView:
        """Replay a stack's resource stream (other events are skipped)."""
        view = cls()
        for event in events:
            view.apply(event)
        return view


#: Events that show a stack's deploy moving: the time of the last one is its progress.
_PROGRESS = (
    ResourceProvisioned,
    StackDeployStarted,
    StackServiceBuilt,
    StackServiceStarted,
    StackReady,
    StackFailed,
    StackStopped,
)
#: A deploy still under way in these: stuck once it stops moving for longer than a build can take.
UNDER_WAY = frozenset({StackStatus.PENDING, StackStatus.BUILDING})


@dataclass(slots=True)
class DeployProgress:
    """Where a stack's deploy is and when it last moved: what tells a deploy whose worker died.

    Folded with the resource into its ``resources`` row, so the reaper finds stuck deploys with
    one query instead of folding every stack's stream.
    """

    view: StackView = field(default_factory=StackView)
    #: The last progress event's time (None: none yet).
    moved_at: datetime | None = None

    def apply(self, event: Event, recorded_at: datetime) -> None:
        """Take one event of the stack's stream into account."""
        if isinstance(event, _PROGRESS):
            self.view.apply(event)
            self.moved_at = recorded_at

    def is_stuck(self, now: datetime, after: timedelta) -> bool:
        """Under way and not moved for ``after``.

        A deploy bounded by the build timeout always ends in ``StackReady`` or ``StackFailed``
        while its worker lives, so one still pending or building past it was interrupted.
        """
        return (
            self.view.status in UNDER_WAY
            and self.moved_at is not None
            and self.moved_at + after <= now
        )
