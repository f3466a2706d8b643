"""Every NATS subject, declared once with its types, queue group and timeout.

Nobody builds a subject string anywhere else. Commands: ``prov.v1.<backend>.<verb>``.
Events: ``evt.v1.<noun>.<past_verb>`` on the ``PLATFORM_EVENTS`` JetStream stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from shared.contracts.commands import Command, DeprovisionResource, ProvisionResource
from shared.contracts.events import (
    Event,
    ResourceDeprovisioned,
    ResourceDeprovisionRequested,
    ResourceProvisioned,
    ResourceProvisionFailed,
    ResourceProvisionRequested,
)
from shared.contracts.kinds import ResourceKind
from shared.contracts.replies import Reply
from shared.contracts.replies import ResourceDeprovisioned as DeprovisionedReply
from shared.contracts.replies import ResourceProvisioned as ProvisionedReply

C = TypeVar("C", bound=Command)
R = TypeVar("R", bound=Reply)


@dataclass(frozen=True, slots=True)
class Endpoint(Generic[C, R]):
    """One request-reply subject.

    ``timeout`` is the worker's budget in seconds and becomes the command's deadline; the caller
    waits a little longer (``REPLY_GRACE_S``) so a reply sent just inside the deadline arrives.
    """

    subject: str
    command: type[C]
    reply: type[R]
    queue: str
    timeout: float


REPLY_GRACE_S = 1.0

PROVISION_POSTGRES = Endpoint(
    subject="prov.v1.postgres.provision",
    command=ProvisionResource,
    reply=ProvisionedReply,
    queue="pg-provisioner",
    timeout=15.0,
)
DEPROVISION_POSTGRES = Endpoint(
    subject="prov.v1.postgres.deprovision",
    command=DeprovisionResource,
    reply=DeprovisionedReply,
    queue="pg-provisioner",
    # DROP DATABASE forces a checkpoint; the first one after a burst of creates took seconds.
    timeout=30.0,
)

PROVISION_ENDPOINTS: dict[ResourceKind, Endpoint[ProvisionResource, ProvisionedReply]] = {
    ResourceKind.POSTGRES: PROVISION_POSTGRES,
}
DEPROVISION_ENDPOINTS: dict[ResourceKind, Endpoint[DeprovisionResource, DeprovisionedReply]] = {
    ResourceKind.POSTGRES: DEPROVISION_POSTGRES,
}

EVENTS_STREAM = "PLATFORM_EVENTS"
EVENTS_SUBJECT_FILTER = "evt.v1.>"
RESOURCE_EVENTS_FILTER = "evt.v1.resource.>"

EVENT_SUBJECTS: dict[type[Event], str] = {
    ResourceProvisionRequested: "evt.v1.resource.provision_requested",
    ResourceProvisioned: "evt.v1.resource.provisioned",
    ResourceProvisionFailed: "evt.v1.resource.provision_failed",
    ResourceDeprovisionRequested: "evt.v1.resource.deprovision_requested",
    ResourceDeprovisioned: "evt.v1.resource.deprovisioned",
}


def event_subject(event: Event) -> str:
    """The JetStream subject an event is relayed on."""
    return EVENT_SUBJECTS[type(event)]
