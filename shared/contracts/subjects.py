"""Every NATS subject, declared once with its types, queue group and timeout.

Nobody builds a subject string anywhere else. Commands: ``prov.v1.<backend>.<verb>``.
Events: the relay's batches on ``EVENT_BATCH_SUBJECT`` of the ``PLATFORM_EVENTS`` JetStream stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from shared.contracts.commands import (
    ClaimResource,
    Command,
    ControlStack,
    DeprovisionResource,
    ExportResource,
    FindDue,
    ProvisionResource,
    RotateCredentials,
    SuspendResource,
    SweepUsage,
)
from shared.contracts.kinds import ResourceKind
from shared.contracts.replies import CredentialsRotated as RotatedReply
from shared.contracts.replies import (
    DueFound,
    ExportStarted,
    Reply,
    StackControlled,
    UsageSwept,
)
from shared.contracts.replies import ResourceClaimed as ClaimedReply
from shared.contracts.replies import ResourceDeprovisioned as DeprovisionedReply
from shared.contracts.replies import ResourceProvisioned as ProvisionedReply
from shared.contracts.replies import ResourceSuspended as SuspendedReply

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
#: One indexed query on the platform Postgres.
FIND_DUE_S = 10.0
#: An export's checks and the start of its dump, before the first chunk is promised.
EXPORT_START_S = 10.0
#: One page of a usage sweep (docs/adr/0049): a batch measured, its quota changes, and the rest
#: after it (three times the measuring at the default duty, docs/adr/0044). Short, because a page
#: lost with a killed worker leaves its kind unswept for this long.
USAGE_PAGE_S = 60.0
#: A streamed export ends when either side hears nothing from the other for this long: the
#: worker waiting for credit (the HTTP client stopped reading), the gateway waiting for a chunk.
EXPORT_IDLE_S = 30.0
#: Chunks a worker may send ahead of the gateway's credit: bounds each side's buffer to
#: ``EXPORT_WINDOW * EXPORT_CHUNK_BYTES`` (2 MiB) per export whatever the export's size.
EXPORT_WINDOW = 8


@dataclass(frozen=True, slots=True)
class KindEndpoints:
    """Every command one kind's worker answers, all in that worker's queue group."""

    provision: Endpoint[ProvisionResource, ProvisionedReply]
    deprovision: Endpoint[DeprovisionResource, DeprovisionedReply]
    claim: Endpoint[ClaimResource, ClaimedReply]
    rotate: Endpoint[RotateCredentials, RotatedReply]
    sweep_usage: Endpoint[SweepUsage, UsageSwept]
    #: The reaper's question each sweep: what is due now (one indexed query, docs/adr/0035).
    find_due: Endpoint[FindDue, DueFound]
    #: At expiry: the credentials stop, the data stays for the grace (docs/adr/0030).
    suspend: Endpoint[SuspendResource, SuspendedReply]
    #: A streamed reply (``Bus.request_stream``): the timeout covers the checks before the first
    #: chunk; the stream itself ends on ``EXPORT_IDLE_S`` of silence, not on a total budget.
    export: Endpoint[ExportResource, ExportStarted]


def _kind_endpoints(
    kind: ResourceKind,
    queue: str,
    *,
    provision_timeout: float,
    deprovision_timeout: float,
) -> KindEndpoints:
    base = f"prov.v1.{kind.value}"
    return KindEndpoints(
        provision=Endpoint(
            f"{base}.provision", ProvisionResource, ProvisionedReply, queue, provision_timeout
        ),
        deprovision=Endpoint(
            f"{base}.deprovision",
            DeprovisionResource,
            DeprovisionedReply,
            queue,
            deprovision_timeout,
        ),
        # A claim or a rotation changes an existing object: no heavier than a create.
        claim=Endpoint(f"{base}.claim", ClaimResource, ClaimedReply, queue, provision_timeout),
        rotate=Endpoint(
            f"{base}.rotate", RotateCredentials, RotatedReply, queue, provision_timeout
        ),
        sweep_usage=Endpoint(f"{base}.sweep_usage", SweepUsage, UsageSwept, queue, USAGE_PAGE_S),
        find_due=Endpoint(f"{base}.find_due", FindDue, DueFound, queue, FIND_DUE_S),
        # Stopping credentials is a role or ACL change, like a rotation.
        suspend=Endpoint(
            f"{base}.suspend", SuspendResource, SuspendedReply, queue, provision_timeout
        ),
        export=Endpoint(f"{base}.export", ExportResource, ExportStarted, queue, EXPORT_START_S),
    )


ENDPOINTS: dict[ResourceKind, KindEndpoints] = {
    ResourceKind.POSTGRES: _kind_endpoints(
        ResourceKind.POSTGRES,
        "pg-provisioner",
        provision_timeout=15.0,
        # DROP DATABASE forces a checkpoint; the first one after a burst of creates took seconds.
        deprovision_timeout=30.0,
    ),
    ResourceKind.REDIS: _kind_endpoints(
        ResourceKind.REDIS,
        "redis-provisioner",
        provision_timeout=10.0,
        # Deleting a tenant's keys is a SCAN over the prefix: proportional to what it stored.
        deprovision_timeout=30.0,
    ),
    ResourceKind.MONGO: _kind_endpoints(
        ResourceKind.MONGO, "mongo-provisioner", provision_timeout=15.0, deprovision_timeout=30.0
    ),
    ResourceKind.NATS: _kind_endpoints(
        ResourceKind.NATS, "queue-provisioner", provision_timeout=10.0, deprovision_timeout=15.0
    ),
    ResourceKind.S3: _kind_endpoints(
        ResourceKind.S3,
        "storage-provisioner",
        provision_timeout=15.0,
        # Emptying a bucket deletes its objects one page at a time.
        deprovision_timeout=60.0,
    ),
    # Webhook receivers live in the platform Redis; the gateway itself serves these commands.
    ResourceKind.WEBHOOK: _kind_endpoints(
        ResourceKind.WEBHOOK, "gateway-webhooks", provision_timeout=5.0, deprovision_timeout=10.0
    ),
    # A stack's create makes its network and queues the build (which goes on after the reply);
    # its delete stops and removes containers, images and the network.
    ResourceKind.STACK: _kind_endpoints(
        ResourceKind.STACK, "stack-deployer", provision_timeout=20.0, deprovision_timeout=60.0
    ),
}

#: Stop, start, restart, redeploy or recover a stack's containers (``POST /stacks/{token}/…``).
STACK_CONTROL = Endpoint(
    "prov.v1.stack.control", ControlStack, StackControlled, "stack-deployer", 60.0
)
#: JetStream object store holding each stack's upload: ``<stack id>/spinup.yaml`` and
#: ``<stack id>/<file>`` for every build context; deleted with the stack.
STACK_UPLOADS_BUCKET = "stack-uploads"
#: JetStream stream of build and container log lines, one subject per stack.
STACK_LOGS_STREAM = "STACK_LOGS"
STACK_LOGS_FILTER = "stacklog.v1.>"


def stack_logs_subject(stack_id: object) -> str:
    """The subject a stack's log lines are published on (``stacklog.v1.<id>``)."""
    return f"stacklog.v1.{stack_id}"


PROVISION_ENDPOINTS = {kind: endpoints.provision for kind, endpoints in ENDPOINTS.items()}
DEPROVISION_ENDPOINTS = {kind: endpoints.deprovision for kind, endpoints in ENDPOINTS.items()}
PROVISION_POSTGRES = PROVISION_ENDPOINTS[ResourceKind.POSTGRES]

EVENTS_STREAM = "PLATFORM_EVENTS"
EVENTS_SUBJECT_FILTER = "evt.v1.>"
#: Core NATS, no stream: "the log has new events", sent by every appender after its commit and
#: heard by the active relay (``shared.eventlog.relay``), whose poll covers a nudge that is lost.
LOG_APPENDED = "log.v1.appended"
#: The relay's messages: each the events of one relay round, in log order (ADR 0031). Older
#: relays published one message per event, on ``evt.v1.<noun>.<verb>`` by its type.
EVENT_BATCH_SUBJECT = "evt.v1.log.relayed"
