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
PROVISION_REDIS = Endpoint(
    subject="prov.v1.redis.provision",
    command=ProvisionResource,
    reply=ProvisionedReply,
    queue="redis-provisioner",
    timeout=10.0,
)
DEPROVISION_REDIS = Endpoint(
    subject="prov.v1.redis.deprovision",
    command=DeprovisionResource,
    reply=DeprovisionedReply,
    queue="redis-provisioner",
    # Deleting a tenant's keys is a SCAN over the prefix: proportional to what it stored.
    timeout=30.0,
)
PROVISION_MONGO = Endpoint(
    subject="prov.v1.mongo.provision",
    command=ProvisionResource,
    reply=ProvisionedReply,
    queue="mongo-provisioner",
    timeout=15.0,
)
DEPROVISION_MONGO = Endpoint(
    subject="prov.v1.mongo.deprovision",
    command=DeprovisionResource,
    reply=DeprovisionedReply,
    queue="mongo-provisioner",
    timeout=30.0,
)
PROVISION_NATS = Endpoint(
    subject="prov.v1.nats.provision",
    command=ProvisionResource,
    reply=ProvisionedReply,
    queue="queue-provisioner",
    timeout=10.0,
)
DEPROVISION_NATS = Endpoint(
    subject="prov.v1.nats.deprovision",
    command=DeprovisionResource,
    reply=DeprovisionedReply,
    queue="queue-provisioner",
    timeout=15.0,
)
PROVISION_S3 = Endpoint(
    subject="prov.v1.s3.provision",
    command=ProvisionResource,
    reply=ProvisionedReply,
    queue="storage-provisioner",
    timeout=15.0,
)
DEPROVISION_S3 = Endpoint(
    subject="prov.v1.s3.deprovision",
    command=DeprovisionResource,
    reply=DeprovisionedReply,
    queue="storage-provisioner",
    # Emptying a bucket deletes its objects one page at a time.
    timeout=60.0,
)
# Webhook receivers live in the platform Redis; the gateway itself serves these commands.
PROVISION_WEBHOOK = Endpoint(
    subject="prov.v1.webhook.provision",
    command=ProvisionResource,
    reply=ProvisionedReply,
    queue="gateway-webhooks",
    timeout=5.0,
)
DEPROVISION_WEBHOOK = Endpoint(
    subject="prov.v1.webhook.deprovision",
    command=DeprovisionResource,
    reply=DeprovisionedReply,
    queue="gateway-webhooks",
    timeout=10.0,
)

PROVISION_ENDPOINTS: dict[ResourceKind, Endpoint[ProvisionResource, ProvisionedReply]] = {
    ResourceKind.POSTGRES: PROVISION_POSTGRES,
    ResourceKind.REDIS: PROVISION_REDIS,
    ResourceKind.MONGO: PROVISION_MONGO,
    ResourceKind.NATS: PROVISION_NATS,
    ResourceKind.S3: PROVISION_S3,
    ResourceKind.WEBHOOK: PROVISION_WEBHOOK,
}
DEPROVISION_ENDPOINTS: dict[ResourceKind, Endpoint[DeprovisionResource, DeprovisionedReply]] = {
    ResourceKind.POSTGRES: DEPROVISION_POSTGRES,
    ResourceKind.REDIS: DEPROVISION_REDIS,
    ResourceKind.MONGO: DEPROVISION_MONGO,
    ResourceKind.NATS: DEPROVISION_NATS,
    ResourceKind.S3: DEPROVISION_S3,
    ResourceKind.WEBHOOK: DEPROVISION_WEBHOOK,
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
