"""The provision / deprovision algorithm every worker runs, whatever its backend.

Rules it keeps (DESIGN.md): intent is appended before the backend is touched and the outcome
after; no database transaction spans a backend call; a command that finishes past its deadline
undoes its work and records that; a duplicate command (same id, any replica, even concurrently)
gets the resource made already, as it is now, instead of a second one; a failed create removes
what it made.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import msgspec
import structlog

from shared.caps import OverCapsError, over_active_cap, over_daily_cap
from shared.contracts.commands import DeprovisionResource
from shared.contracts.errors import ErrorCode, PlatformUnavailableError, SpinupError
from shared.contracts.events import CredentialsRotated as CredentialsRotatedEvent
from shared.contracts.events import (
    QuotaExceeded,
    QuotaRestored,
    ResourceDeprovisionRequested,
    ResourceEvent,
    ResourceProvisionFailed,
    ResourceProvisionRequested,
)
from shared.contracts.events import ResourceClaimed as ResourceClaimedEvent
from shared.contracts.events import (
    ResourceDeprovisioned as DeprovisionedEvent,
)
from shared.contracts.events import (
    ResourceProvisioned as ProvisionedEvent,
)
from shared.contracts.events import ResourceSuspended as SuspendedEvent
from shared.contracts.kinds import (
    EXPORT_FORMATS,
    LIMITS_BY_KIND,
    Credentials,
    DeprovisionReason,
    Limits,
    ResourceKind,
    ResourceStatus,
    quota_bytes,
)
from shared.contracts.replies import (
    CredentialsRotated,
    DueFound,
    DueResource,
    ResourceClaimed,
    ResourceDeprovisioned,
    ResourceProvisioned,
    ResourceSuspended,
    StuckDeploy,
    UsageSwept,
)
from shared.eventlog.errors import AppendRefusedError, ConcurrencyConflictError
from shared.eventlog.projections import caps_precondition, held
from shared.naming import resource_stream
from shared.resources import ResourceState

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from uuid import UUID

    from shared.contracts.commands import (
        ClaimResource,
        Command,
        ExportResource,
        FindDue,
        ProvisionResource,
        RotateCredentials,
        SuspendResource,
        SweepUsage,
    )
    from shared.contracts.events import RecordedEvent
    from shared.crypto.sealing import Keyring
    from shared.eventlog.projections import ResourceReadModel
    from shared.eventlog.store import EventStore, Precondition

log = structlog.get_logger("shared.lifecycle")
_encoder = msgspec.json.Encoder()
_credentials_decoder: msgspec.json.Decoder[Credentials] = msgspec.json.Decoder(Credentials)
# A claim or rotation that loses a race with another event re-reads and tries again this often.
_APPEND_ATTEMPTS = 5
#: ``restore_forgotten`` reads and writes again while the log moved under its last pass; more
#: passes than this means commands keep changing the same tenants, and the next check goes on.
_RESTORE_PASSES = 5
#: A tenant's credentials must exist in these, as the log recorded them (docs/adr/0030, 0045).
_HOLD_CREDENTIALS = (ResourceStatus.ACTIVE, ResourceStatus.SUSPENDED)
#: A tenant's credentials must not exist in these: a restore drops any it finds. Not an active
#: or suspended one a pass did not read (made since its read), nor one still being created.
_NO_CREDENTIALS = frozenset(
    {
        ResourceStatus.FAILED,
        ResourceStatus.DELETING,
        ResourceStatus.DELETED,
        ResourceStatus.EXPIRED,
    }
)
# Resources measured per page of a usage sweep, in one driver call (a Redis call scans the
# whole keyspace once, however many it measures).
USAGE_BATCH = 500
# Quota changes applied at once.
_SWEEP_CONCURRENCY = 8
# A page of a usage sweep is answered this long before its deadline at the latest.
_PAGE_ANSWER_MARGIN_S = 2.0
#: The share of a usage sweep's time spent measuring; it rests for the rest (docs/adr/0044).
USAGE_SWEEP_DUTY = 0.25


def rest_after(measured_for_s: float, duty: float) -> float:
    """How long to rest after a batch that took ``measured_for_s``, to measure ``duty`` of the time.

    Raises:
        ValueError: ``duty`` is not in (0, 1].
    """
    if not 0 < duty <= 1:
        msg = f"a usage sweep's duty must be in (0, 1], got {duty}"
        raise ValueError(msg)
    return measured_for_s * (1 / duty - 1)


L_contra = TypeVar("L_contra", bound=Limits, contravariant=True)
#: How long ``reconcile`` sees an object nobody owns before deleting it: far past any create's
#: deadline and its append (docs/adr/0032).
ORPHAN_GRACE = timedelta(minutes=5)


class ResourceDriver(Protocol[L_contra]):
    """One backend, taking the limits of its own kind.

    Both operations are idempotent: create twice gives the same resource (with the new
    credentials), delete of a missing one succeeds.
    """

    @property
    def kind(self) -> ResourceKind:
        """The kind this driver makes; commands of any other kind are refused."""
        ...

    async def create(self, resource_id: UUID, limits: L_contra) -> Credentials:
        """Make the resource (or bring an existing one to these limits) and fresh credentials."""
        ...

    async def delete(self, resource_id: UUID) -> None:
        """Remove the resource and cut its open connections."""
        ...

    async def set_limits(self, resource_id: UUID, limits: L_contra) -> None:
        """Bring the existing resource to ``limits`` (a claim); credentials stay as they are."""
        ...

    async def rotate(self, resource_id: UUID, limits: L_contra) -> Credentials:
        """New credentials for the existing resource; the old ones stop working at once."""
        ...

    async def usage(
        self, resource_ids: Sequence[UUID], *, sweep_id: UUID | None = None
    ) -> dict[UUID, int]:
        """Bytes used by each of these resources that exists in the backend.

        ``sweep_id`` names the usage sweep the call is a page of: a driver that must read its
        whole backend to answer any page (Redis's keyspace, MongoDB's ``top``) reads it once
        per sweep.
        """
        ...

    async def block_writes(self, resource_id: UUID, *, usage: int, quota: int) -> None:
        """Over quota: the backend refuses writes that add data. Called on every pass while over."""
        ...

    async def allow_writes(self, resource_id: UUID) -> None:
        """Back under quota: undo ``block_writes`` (harmless when not blocked)."""
        ...


@runtime_checkable
class ForkingDriver(Protocol[L_contra]):
    """A driver that can also make a resource starting with a copy of another's data."""

    async def fork(
        self, resource_id: UUID, limits: L_contra, source_id: UUID, *, deadline: float
    ) -> Credentials:
        """Make ``resource_id`` (as ``create``) holding a copy of ``source_id``'s data.

        The source is only read, its sessions are left alone; the copy is done by
        ``deadline`` (Unix seconds) or the call fails. Idempotent like ``create``: on failure the
        lifecycle deletes ``resource_id`` (never the source).
        """
        ...


@runtime_checkable
class ExportingDriver(Protocol):
    """A driver whose resources can be copied out and whose credentials can be stopped."""

    def export(self, resource_id: UUID, fmt: str) -> AsyncIterator[bytes]:
        """Yield a complete copy of the resource's data in ``fmt``.

        In chunks of at most ``EXPORT_CHUNK_BYTES`` (shared/contracts/kinds.py), holding bounded
        memory whatever the size. Reads with the driver's admin access (works while suspended).
        """
        ...

    async def suspend(self, resource_id: UUID) -> None:
        """Credentials stop working at once (new logins refused, open sessions cut).

        The data stays intact for export and is deleted later by ``delete``. Idempotent; a
        missing resource is not an error. ``delete`` must still work after it.
        """
        ...


@runtime_checkable
class FreshCreate(Protocol[L_contra]):
    """A driver with a cheaper create for a resource nothing was ever made for.

    ``create`` must first find what an earlier try left (a retried command, a keyed duplicate)
    to reset it rightly. A command whose ids were made for it alone (``new_ids``) has no earlier
    try and no duplicate, so its driver may skip that look.
    """

    async def create_fresh(self, resource_id: UUID, limits: L_contra) -> Credentials:
        """``create``, for a ``resource_id`` the backend has never held anything of."""
        ...


@dataclass(frozen=True, slots=True)
class Taken:
    """A resource made from a warm-pool member: its credentials and the member it was."""

    credentials: Credentials
    member_id: UUID


@runtime_checkable
class PooledCreate(Protocol[L_contra]):
    """A driver whose create can take something scarce, made ahead (a warm pool's database).

    A holder at its cap must not make it take and drop such a thing on every refused try:
    holders at their caps would drain the pool. So the lifecycle counts the caps before a take,
    and a refused create takes nothing (docs/adr/0040, 0041, 0047). The take is recorded by the
    resource's ``ResourceProvisioned``, which names the member.
    """

    async def take(self, resource_id: UUID, limits: L_contra) -> Taken | None:
        """The resource made from a member taken for it; None when there was nothing to take.

        The caller then makes it with ``create``.
        """
        ...


@runtime_checkable
class TenantInventory(Protocol):
    """A driver that can list what its backend holds.

    Its resources may be made before the log records them (one append, docs/adr/0032), since
    ``ResourceLifecycle.reconcile`` finds any such object left behind.
    """

    async def tenants(self) -> set[UUID]:
        """The ids of every resource that has an object in the backend now."""
        ...


@runtime_checkable
class ForgetfulBackend(TenantInventory, Protocol):
    """A backend whose server holds its tenants' credentials in memory only (docs/adr/0045).

    A restart of the server forgets them, and ``ResourceLifecycle.restore_after_restart`` puts
    them back from the log, comparing with the tenants the backend lists.
    """

    async def server_run(self) -> str:
        """What names the server's current run: it changes each time the server starts."""
        ...

    async def restore_credentials(
        self,
        resource_id: UUID,
        credentials: Credentials,
        *,
        writes_blocked: bool,
        suspended: bool,
    ) -> None:
        """Give the tenant these credentials, with its write block and suspension as recorded."""
        ...

    async def drop_credentials(self, resource_id: UUID) -> None:
        """Remove the tenant's credentials (ending its sessions); its data stays."""
        ...


class Ceiling(StrEnum):
    """A limit one shared server has for all its tenants together (``SharedServer.capacity``)."""

    #: Client connections, open or authenticating: past it the server refuses every new one.
    CONNECTIONS = "connections"
    #: Memory the server may hold data in: past it writes are refused (Redis's ``maxmemory``).
    MEMORY_BYTES = "memory_bytes"
    #: JetStream memory and file storage promised to the accounts that use JetStream, against
    #: what the server may promise: past either a new tenant's JetStream is refused (ADR 0050).
    JETSTREAM_MEMORY_RESERVED_BYTES = "jetstream_memory_reserved_bytes"
    JETSTREAM_STORAGE_RESERVED_BYTES = "jetstream_storage_reserved_bytes"
    #: Volumes allocated, against the slots the volume servers have: past it no bucket can grow.
    VOLUMES = "volumes"


@runtime_checkable
class SharedServer(Protocol):
    """A driver whose tenants share one server, whose ceilings every tenant counts against.

    Every backend overcommits by design (quotas add up to more than a server has; ADR 0050):
    what keeps it safe is an operator adding capacity before a ceiling is reached, which the
    worker's report of these figures (``spinup_backend_capacity_*``) and its alert are for.
    """

    async def capacity(self) -> dict[Ceiling, tuple[int, int]]:
        """What the server uses of each ceiling it has, as ``(used, limit)``, asked now.

        Cheap (one or two admin round trips, no walk of tenants): asked every half minute.
        """
        ...


class ResourceLifecycle:
    """Runs commands for one driver against the event log."""

    def __init__(
        self,
        store: EventStore,
        keyring: Keyring,
        driver: ResourceDriver[Any],
        *,
        resources: ResourceReadModel,
        create_concurrency: int,
        delete_concurrency: int,
        poll_interval: float = 0.05,
        orphan_grace: timedelta = ORPHAN_GRACE,
        usage_sweep_duty: float = USAGE_SWEEP_DUTY,
        usage_batch: int = USAGE_BATCH,
        restore_recheck: timedelta = timedelta(seconds=20),
    ) -> None:
        """Run commands against the log with ``driver``.

        ``orphan_grace``: how long ``reconcile`` sees an object nobody owns before it deletes
        it; longer than any create takes to record its outcome (its deadline, and the append).
        ``usage_sweep_duty``: the share of a usage sweep's time spent measuring (``rest_after``).
        ``usage_batch``: resources measured per page of a usage sweep.
        ``restore_recheck``: after restoring a restarted backend, how long until it is checked
        once more; longer than a command takes from its backend call to its append.
        """
        rest_after(0.0, usage_sweep_duty)  # refuses a duty out of range at start, not mid-sweep
        self._store = store
        self._resources = resources
        self._keyring = keyring
        self._driver = driver
        # Asked on every create, so decided once: an isinstance against a runtime-checkable
        # protocol looks up each of its members on every call (3-7 us each).
        self._lists_tenants = isinstance(driver, TenantInventory)
        self._fresh_create = driver.create_fresh if isinstance(driver, FreshCreate) else None
        self._take = driver.take if isinstance(driver, PooledCreate) else None
        self._create_slots = asyncio.Semaphore(create_concurrency)
        self._delete_slots = asyncio.Semaphore(delete_concurrency)
        self._poll_interval = poll_interval
        self._orphan_grace = orphan_grace
        self._usage_sweep_duty = usage_sweep_duty
        self._usage_batch = usage_batch
        #: Objects ``reconcile`` found nobody owning, and when it first did.
        self._unowned_since: dict[UUID, datetime] = {}
        self._forgetful = driver if isinstance(driver, ForgetfulBackend) else None
        self._restore_recheck_s = restore_recheck.total_seconds()
        #: The backend server's run the last restore was for, and when to check it once more.
        self._server_run: str | None = None
        self._recheck_at: float | None = None
        #: What the restores since that run began wrote for each tenant (``_Restored``).
        self._restored: dict[UUID, _Restored] = {}

    async def _state(self, resource_id: UUID) -> ResourceState:
        events = await self._store.load(resource_stream(resource_id))
        return ResourceState.fold(
            resource_id, ((e.event, e.command_id, e.recorded_at) for e in events)
        )

    def _sealed(self, resource_id: UUID, credentials: Credentials) -> str:
        """``credentials`` as the log holds them: sealed, bound to their resource."""
        return self._keyring.seal(_encoder.encode(credentials), aad=resource_id.bytes)

    def _opened(self, resource_id: UUID, sealed: str) -> Credentials:
        """What ``_sealed`` sealed for ``resource_id``."""
        return _credentials_decoder.decode(self._keyring.open(sealed, aad=resource_id.bytes))

    # -- provision ---------------------------------------------------------------------------

    def _ensure_own_kind(self, kind: ResourceKind | None, limits: Limits | None) -> None:
        expected = LIMITS_BY_KIND[self._driver.kind]
        if kind is not self._driver.kind or not isinstance(limits, expected):
            named = kind.value if kind else "unknown"
            msg = f"this worker makes {self._driver.kind.value} resources, not {named}"
            raise SpinupError(ErrorCode.INVALID_COMMAND, msg)

    async def provision(self, command: ProvisionResource) -> ResourceProvisioned:
        """Create the resource named by the command, or return what an earlier try created."""
        self._ensure_own_kind(command.kind, command.limits)
        if command.new_ids and command.fork_of is None and self._lists_tenants:
            return await self._provision_in_one_append(command)
        # Nearly every command names a resource nobody has seen: record the intent at version 0
        # straight away, and read the stream only when that loses (a retry, a duplicate).
        refused: OverCapsError | None = None
        if time.time() < command.deadline:
            try:
                recorded = await self._record_intent(command, 0)
            except ConcurrencyConflictError:
                pass
            except OverCapsError as exc:
                # Decided once the stream is read: a retry of a create that succeeded replays
                # it, even with its holder now at a cap.
                refused = exc
            else:
                return await self._carry_out(command, 1, recorded[0].recorded_at, intent=recorded)
        state = await self._state(command.resource_id)
        if refused is not None and state.version == 0:
            raise refused
        return await self._provision_as_recorded(command, state)

    async def _provision_as_recorded(
        self, command: ProvisionResource, state: ResourceState
    ) -> ResourceProvisioned:
        """What a create whose intent could not be recorded first does, given its stream.

        Replays one made already, waits for one in progress, refuses a resource that is gone,
        or makes one that failed before again.
        """
        if state.status is ResourceStatus.ACTIVE:
            return self._replay(state)
        if state.is_gone or state.status in {ResourceStatus.DELETING, ResourceStatus.SUSPENDED}:
            raise _reused_error()
        if state.status is ResourceStatus.PROVISIONING:
            return await self._await_outcome(command)
        _ensure_before_deadline(command, "The request waited too long to be picked up")
        # A create that failed before: this try makes it again, after the failure.
        try:
            recorded = await self._record_intent(command, state.version)
        except ConcurrencyConflictError:
            return await self._await_outcome(command)
        return await self._carry_out(
            command, state.version + 1, state.created_at or recorded[0].recorded_at
        )

    async def _provision_in_one_append(self, command: ProvisionResource) -> ResourceProvisioned:
        """Create first, then record the intent and the outcome together (docs/adr/0032).

        Only for a command no other names (``new_ids``), so no duplicate can be creating the
        same object meanwhile, and for a driver ``reconcile`` can sweep: a crash between the
        backend call and the append leaves an object no row owns, which it removes. The
        objects a failure leaves are deleted here, and the failure recorded with its intent.
        Once the append was sent, nothing is deleted: if it committed, the log vouches for the
        credentials; if not, ``reconcile`` finds the object.
        """
        _ensure_before_deadline(command, "The request waited too long to be picked up")
        stream = resource_stream(command.resource_id)
        intent = _intent(command)
        caps = _caps_of(command)
        try:
            made = await self._create(command, 0, intent=intent, caps=caps)
        except AppendRefusedError as exc:  # counted before a take or a costly create
            raise _over_caps(command, exc) from exc
        credentials = made.credentials
        # Otherwise the caps are counted by the append, after the object is made: a refused one
        # is deleted below. The gateway remembers the refusal for a minute (docs/adr/0041), so a
        # holder at a cap costs that at most once a minute per kind.
        sealed = self._sealed(command.resource_id, credentials)
        created_at = datetime.now(UTC)
        reply = ResourceProvisioned(
            resource_id=command.resource_id,
            kind=command.kind,
            tier=command.tier,
            limits=command.limits,
            credentials=credentials,
            created_at=created_at,
            expires_at=command.expires_at,
        )
        outcome = ProvisionedEvent(
            resource_id=command.resource_id,
            credentials_sealed=sealed,
            pool_member=made.pool_member,
        )
        try:
            await self._store.append(
                stream,
                0,
                [intent, outcome],
                command_id=command.command_id,
                correlation_id=command.correlation_id,
                recorded_at=created_at,
                precondition=caps,
            )
        except AppendRefusedError as exc:
            # Refused, so certainly not recorded: what was made for it goes now.
            await self._cleanup(command.resource_id)
            raise _over_caps(command, exc) from exc
        except ConcurrencyConflictError as exc:
            msg = "Another request recorded this resource first; nothing of this one was kept."
            raise SpinupError(ErrorCode.COMMAND_IN_PROGRESS, msg, retryable=True) from exc
        except PlatformUnavailableError as exc:
            msg = (
                "The platform could not confirm that the new resource was recorded; try again."
                " If it was not, what was made for it is removed within minutes."
            )
            raise SpinupError(ErrorCode.PLATFORM_UNAVAILABLE, msg, retryable=True) from exc
        return reply

    async def _record_intent(
        self, command: ProvisionResource, expected_version: int
    ) -> list[RecordedEvent]:
        """Record the create's intent, within its holder's caps.

        Raises:
            OverCapsError: the holder is at a cap; nothing was recorded.
            ConcurrencyConflictError: the stream is past ``expected_version``.
        """
        try:
            return await self._store.append(
                resource_stream(command.resource_id),
                expected_version,
                [_intent(command)],
                command_id=command.command_id,
                correlation_id=command.correlation_id,
                precondition=_caps_of(command),
            )
        except AppendRefusedError as exc:
            raise _over_caps(command, exc) from exc

    async def _carry_out(
        self,
        command: ProvisionResource,
        version: int,
        created_at: datetime,
        intent: Sequence[RecordedEvent] | None = None,
    ) -> ResourceProvisioned:
        """The intent is recorded at ``version``: create, then record the outcome.

        ``intent``: the whole stream so far, when this command began it (saves a read).
        """
        stream = resource_stream(command.resource_id)
        made = await self._create(command, version)
        credentials = made.credentials
        reply = ResourceProvisioned(
            resource_id=command.resource_id,
            kind=command.kind,
            tier=command.tier,
            limits=command.limits,
            credentials=credentials,
            created_at=created_at,
            expires_at=command.expires_at,
        )
        sealed = self._sealed(command.resource_id, credentials)
        try:
            await self._store.append(
                stream,
                version,
                [
                    ProvisionedEvent(
                        resource_id=command.resource_id,
                        credentials_sealed=sealed,
                        pool_member=made.pool_member,
                    )
                ],
                command_id=command.command_id,
                correlation_id=command.correlation_id,
                prior=intent,
            )
        except (ConcurrencyConflictError, PlatformUnavailableError) as exc:
            # Deprovisioning began meanwhile, or the outcome cannot be recorded: never hand out
            # credentials the log does not vouch for. The reaper finishes any cleanup.
            await self._cleanup(command.resource_id)
            msg = "The resource could not be recorded; nothing was kept. Try again."
            raise SpinupError(ErrorCode.PLATFORM_UNAVAILABLE, msg, retryable=True) from exc
        return reply

    async def _create(
        self,
        command: ProvisionResource,
        version: int,
        intent: ResourceProvisionRequested | None = None,
        caps: Precondition | None = None,
    ) -> _Made:
        """Call the driver within the deadline; on any failure record it and remove leftovers.

        ``intent``: not recorded yet; a failure is recorded after it, at ``version``. ``caps``:
        not counted yet; where the create takes something scarce, they are counted before.

        Raises:
            AppendRefusedError: ``caps`` refused before anything was taken or made; nothing
                was recorded.
        """
        try:
            async with self._create_slots:
                # Waiting for a slot may use up the budget: then don't create just to drop it.
                _ensure_before_deadline(
                    command, "The backend is busy and the request ran out of time"
                )
                made = await self._make(command, caps)
        except AppendRefusedError:
            raise  # nothing was taken or made, so nothing to record or remove
        except SpinupError as exc:
            await self._record_failure(command, version, exc, intent)
            raise
        except Exception as exc:
            log.exception("lifecycle.create.crashed", resource_id=str(command.resource_id))
            error = SpinupError(
                ErrorCode.BACKEND_ERROR, "The backend failed unexpectedly; nothing was kept."
            )
            await self._record_failure(command, version, error, intent)
            raise error from exc
        if time.time() > command.deadline:
            error = SpinupError(
                ErrorCode.DEADLINE_EXCEEDED,
                "The backend was too slow to answer in time; what was made has been removed.",
                retryable=True,
            )
            await self._record_failure(command, version, error, intent)
            raise error
        return made

    async def _make(self, command: ProvisionResource, caps: Precondition | None) -> _Made:
        """A new resource, or a fork of a live one of the same kind (``fork_of``).

        With ``caps`` and a driver that takes something scarce, they are counted first, so a
        holder at its cap takes nothing.
        """
        if command.fork_of is not None:
            return _Made(await self._fork(command, command.fork_of))
        if self._take is not None:
            if caps is not None:
                await self._store.check(caps)
            taken = await self._take(command.resource_id, command.limits)
            if taken is not None:
                return _Made(taken.credentials, pool_member=taken.member_id)
        if command.new_ids and self._fresh_create is not None:
            return _Made(await self._fresh_create(command.resource_id, command.limits))
        return _Made(await self._driver.create(command.resource_id, command.limits))

    async def _fork(self, command: ProvisionResource, source_id: UUID) -> Credentials:
        """A copy of the live resource ``source_id`` of the command's kind."""
        source = await self._state(source_id)
        if source_id == command.resource_id or source.kind is not command.kind:
            msg = f"The resource to fork is not a live {command.kind.value} resource."
            raise SpinupError(ErrorCode.INVALID_COMMAND, msg)
        if source.status is ResourceStatus.PROVISIONING:
            msg = "The resource to fork is still being created; try again in a moment."
            raise SpinupError(ErrorCode.COMMAND_IN_PROGRESS, msg, retryable=True)
        if source.status is not ResourceStatus.ACTIVE:
            raise _gone_error(source)
        if _has_expired(source):
            msg = "The resource to fork has expired."
            raise SpinupError(ErrorCode.RESOURCE_GONE, msg)
        if not isinstance(self._driver, ForkingDriver):
            msg = f"{command.kind.value} resources cannot be forked."
            raise SpinupError(ErrorCode.INVALID_COMMAND, msg)
        return await self._driver.fork(
            command.resource_id, command.limits, source_id, deadline=command.deadline
        )

    def _replay(self, state: ResourceState) -> ResourceProvisioned:
        """The answer to a create made already: the resource as it is now (docs/adr/0048).

        Its current credentials, tier, limits and expiry, not a copy of the first answer, which
        a rotation would have left with a refused password and a claim or an extension with a
        tier or an expiry that no longer hold.
        """
        if (
            state.kind is None
            or state.tier is None
            or state.limits is None
            or state.created_at is None
            or state.credentials_sealed is None
        ):
            msg = "active resource without what its create recorded"
            raise SpinupError(ErrorCode.INTERNAL_ERROR, msg)
        return ResourceProvisioned(
            resource_id=state.resource_id,
            kind=state.kind,
            tier=state.tier,
            limits=state.limits,
            credentials=self._opened(state.resource_id, state.credentials_sealed),
            created_at=state.created_at,
            expires_at=state.expires_at,
            replayed=True,
        )

    async def _await_outcome(self, command: ProvisionResource) -> ResourceProvisioned:
        """Another handler owns this command: wait for its outcome until the deadline."""
        async for state in self._states_until(command.resource_id, command.deadline):
            if state.status is ResourceStatus.ACTIVE:
                return self._replay(state)
            if state.status is ResourceStatus.FAILED:
                msg = "An identical request failed just now; try again."
                raise SpinupError(_recorded_code(state), msg, retryable=True)
            if state.is_gone or state.status is ResourceStatus.DELETING:
                raise _reused_error()
        msg = "An identical request is still being processed; retry with the same Idempotency-Key."
        raise SpinupError(ErrorCode.COMMAND_IN_PROGRESS, msg, retryable=True)

    async def _states_until(
        self, resource_id: UUID, deadline: float
    ) -> AsyncIterator[ResourceState]:
        """The resource's state, re-read every poll interval until ``deadline``."""
        while time.time() < deadline:
            await asyncio.sleep(self._poll_interval)
            yield await self._state(resource_id)

    async def _cleanup(self, resource_id: UUID) -> bool:
        try:
            async with self._delete_slots:
                await self._driver.delete(resource_id)
        except Exception:  # noqa: BLE001  (reported through the failure event; the reaper retries)
            log.warning("lifecycle.cleanup.failed", resource_id=str(resource_id))
            return False
        return True

    async def _record_failure(
        self,
        command: ProvisionResource,
        version: int,
        error: SpinupError,
        intent: ResourceProvisionRequested | None = None,
    ) -> None:
        cleaned_up = await self._cleanup(command.resource_id)
        failed = ResourceProvisionFailed(
            resource_id=command.resource_id,
            code=error.code.value,
            message=error.message,
            cleaned_up=cleaned_up,
        )
        try:
            await self._store.append(
                resource_stream(command.resource_id),
                version,
                [*([intent] if intent else []), failed],
                command_id=command.command_id,
                correlation_id=command.correlation_id,
            )
        except (ConcurrencyConflictError, PlatformUnavailableError):
            # The Requested event stays without an outcome; the reaper's orphan sweep finds it.
            log.warning("lifecycle.failure.unrecorded", resource_id=str(command.resource_id))

    # -- deprovision -------------------------------------------------------------------------

    async def deprovision(
        self, command: DeprovisionResource, *, keep_grace: bool = True
    ) -> ResourceDeprovisioned:
        """Remove the resource; a second request for the same resource succeeds with ``already``.

        ``keep_grace`` False: an expired resource goes now even within its export grace (its
        driver cannot stop credentials and keep data).
        """
        state = await self._state(command.resource_id)
        if state.status is ResourceStatus.NONE:
            msg = "No such resource."
            raise SpinupError(ErrorCode.NOT_FOUND, msg)
        if state.is_gone:
            return _already_gone(state, command)
        stream = resource_stream(command.resource_id)
        version = state.version
        reason = command.reason
        if state.status is ResourceStatus.DELETING and state.deprovision_reason is not None:
            reason = state.deprovision_reason
        else:
            # The reaper's view trails the log by the relay's lag: an extension (or a claim,
            # which drops the expiry) appended since may have saved it. The append below is
            # conditional on this version, so one that lands after this read fails it instead.
            if reason is DeprovisionReason.EXPIRED and not _has_expired(state):
                msg = f"Not expired: it now expires at {state.expires_at or 'never'}."
                raise SpinupError(ErrorCode.INVALID_COMMAND, msg)
            # Its data is kept for an export until the grace ends (ADR 0030): whatever sent
            # this early (a reaper of an older version, a clock running ahead) deletes nothing.
            ends = state.grace_ends_at
            if (
                keep_grace
                and reason is DeprovisionReason.EXPIRED
                and ends
                and datetime.now(UTC) < ends
            ):
                msg = f"Expired, but kept for an export until {ends.isoformat()}."
                raise SpinupError(ErrorCode.INVALID_COMMAND, msg)
            try:
                await self._store.append(
                    stream,
                    version,
                    [ResourceDeprovisionRequested(resource_id=command.resource_id, reason=reason)],
                    command_id=command.command_id,
                    correlation_id=command.correlation_id,
                )
            except ConcurrencyConflictError:
                return await self._await_gone(command)
            version += 1

        async with self._delete_slots:
            await self._driver.delete(command.resource_id)

        reply = ResourceDeprovisioned(resource_id=command.resource_id, reason=reason)
        try:
            await self._store.append(
                stream,
                version,
                [DeprovisionedEvent(resource_id=command.resource_id, reason=reason)],
                command_id=command.command_id,
                correlation_id=command.correlation_id,
            )
        except ConcurrencyConflictError:
            return msgspec.structs.replace(reply, already=True)
        return reply

    async def _await_gone(self, command: DeprovisionResource) -> ResourceDeprovisioned:
        async for state in self._states_until(command.resource_id, command.deadline):
            if state.is_gone:
                return _already_gone(state, command)
        msg = "The resource is still being removed; try again shortly."
        raise SpinupError(ErrorCode.COMMAND_IN_PROGRESS, msg, retryable=True)

    # -- claim, rotate -------------------------------------------------------------------------

    async def claim(self, command: ClaimResource) -> ResourceClaimed:
        """Give the resource to the account: the backend gets the new limits, the TTL goes.

        Claiming again for the same account answers ``already``; another account is refused.
        """
        for _ in range(_APPEND_ATTEMPTS):
            state = await self._live_state(command.resource_id)
            self._ensure_own_kind(state.kind, command.limits)
            if state.account_id == command.account_id and state.claimed_at is not None:
                return _claimed(state, command, already=True)
            if state.account_id is not None:
                msg = "This resource already belongs to another account."
                raise SpinupError(ErrorCode.FORBIDDEN, msg)
            async with self._create_slots:
                await self._driver.set_limits(command.resource_id, command.limits)
            claimed = ResourceClaimedEvent(
                resource_id=command.resource_id,
                account_id=command.account_id,
                claim_id=command.claim_id,
                tier=command.tier,
                limits=command.limits,
            )
            try:
                await self._append_after(state, claimed, command)
            except ConcurrencyConflictError:
                continue  # a sweep or a rotation got in first: decide again on the new state
            return _claimed(state, command, already=False)
        raise _busy_error()

    async def rotate(self, command: RotateCredentials) -> CredentialsRotated:
        """New credentials; the old ones stop working before this answers."""
        state = await self._live_state(command.resource_id)
        self._ensure_own_kind(state.kind, state.limits)
        async with self._create_slots:
            credentials = await self._driver.rotate(command.resource_id, state.limits)
        sealed = self._sealed(command.resource_id, credentials)
        event = CredentialsRotatedEvent(resource_id=command.resource_id, credentials_sealed=sealed)
        # The backend already changed: record it even if other events landed meanwhile.
        for _ in range(_APPEND_ATTEMPTS):
            try:
                await self._append_after(state, event, command)
            except ConcurrencyConflictError:
                state = await self._state(command.resource_id)
                if state.is_gone or state.status is ResourceStatus.DELETING:
                    raise _gone_error(state) from None
                continue
            return CredentialsRotated(resource_id=command.resource_id, credentials=credentials)
        raise _busy_error()

    async def _live_state(self, resource_id: UUID) -> ResourceState:
        state = await self._state(resource_id)
        if state.status is ResourceStatus.ACTIVE:
            return state
        if state.status is ResourceStatus.PROVISIONING:
            msg = "The resource is still being created; try again in a moment."
            raise SpinupError(ErrorCode.COMMAND_IN_PROGRESS, msg, retryable=True)
        raise _gone_error(state)

    # -- suspend at expiry, export (docs/adr/0030) ----------------------------------------------

    async def suspend(self, command: SuspendResource) -> ResourceSuspended:
        """At expiry: the credentials stop now, the data stays until the grace ends.

        Refused for a resource the log says has not expired (an extension or a claim may have
        landed after the reaper's view), as for an expiry delete. A kind that keeps nothing after
        expiry (no grace, or a driver that cannot stop credentials alone) is deleted instead.
        Idempotent: the reaper sends it again until the event is back in its view.
        """
        state = await self._state(command.resource_id)
        if state.status is ResourceStatus.SUSPENDED and state.delete_at is not None:
            return ResourceSuspended(
                resource_id=command.resource_id, delete_at=state.delete_at, already=True
            )
        if state.status is not ResourceStatus.ACTIVE:
            raise _gone_error(state)
        if not _has_expired(state):
            msg = f"Not expired: it now expires at {state.expires_at or 'never'}."
            raise SpinupError(ErrorCode.INVALID_COMMAND, msg)
        delete_at = state.grace_ends_at
        if (
            delete_at is None
            or state.export_grace_seconds <= 0
            or not isinstance(self._driver, ExportingDriver)
        ):
            await self.deprovision(_expiry_delete(command), keep_grace=False)
            return ResourceSuspended(
                resource_id=command.resource_id, delete_at=datetime.now(UTC), deleted=True
            )
        async with self._delete_slots:
            await self._driver.suspend(command.resource_id)
        event = SuspendedEvent(resource_id=command.resource_id, delete_at=delete_at)
        try:
            await self._append_after(state, event, command)
        except ConcurrencyConflictError:
            # Something landed since the read: a second suspend (fine), a delete (fine), or an
            # extension that raced the expiry, which the next pass of the reaper sorts out; the
            # credentials stay stopped meanwhile, which only errs on the side of safety.
            latest = await self._state(command.resource_id)
            if latest.status is ResourceStatus.SUSPENDED and latest.delete_at is not None:
                return ResourceSuspended(
                    resource_id=command.resource_id, delete_at=latest.delete_at, already=True
                )
            raise _busy_error() from None
        log.info(
            "lifecycle.resource.suspended",
            resource_id=str(command.resource_id),
            delete_at=delete_at.isoformat(),
        )
        return ResourceSuspended(resource_id=command.resource_id, delete_at=delete_at)

    async def start_export(self, command: ExportResource) -> AsyncIterator[bytes]:
        """Check the log, then the driver's copy of the data in ``command.format``.

        Live, or suspended within its grace, and of this worker's kind; otherwise the matching
        error before any byte. The checks read the stream (not the read model), so a delete that
        began is seen.
        """
        state = await self._state(command.resource_id)
        if state.kind is not self._driver.kind:
            raise _gone_error(state) if state.kind is None else _wrong_kind(self._driver.kind)
        if state.status is ResourceStatus.PROVISIONING:
            msg = "The resource is still being created; try again in a moment."
            raise SpinupError(ErrorCode.COMMAND_IN_PROGRESS, msg, retryable=True)
        suspended_in_grace = (
            state.status is ResourceStatus.SUSPENDED
            and state.delete_at is not None
            and datetime.now(UTC) < state.delete_at
        )
        if state.status is not ResourceStatus.ACTIVE and not suspended_in_grace:
            raise _gone_error(state)
        formats = [fmt.name for fmt in EXPORT_FORMATS.get(self._driver.kind, ())]
        if not formats or not isinstance(self._driver, ExportingDriver):
            msg = f"{self._driver.kind.value} resources cannot be exported."
            raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
        if command.format not in formats:
            named = ", ".join(formats)
            msg = f"{self._driver.kind.value} exports in these formats: {named}."
            raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
        return self._driver.export(command.resource_id, command.format)

    # -- what the reaper must do --------------------------------------------------------------

    async def reconcile(self) -> int:
        """Delete the backend's objects that no resource owns; how many were deleted.

        What a create in one append (``_provision_in_one_append``) leaves when its process dies
        between the backend call and the append: an object with no row at all. One is deleted
        when two passes at least ``orphan_grace`` apart both found it unowned, so a create still
        under way (its append not committed yet) is never touched. Objects of resources that
        have a row are the reaper's concern (``find_due``), as before. A driver that cannot list
        its tenants is not reconciled, and its creates keep the intent first.
        """
        if not isinstance(self._driver, TenantInventory):
            return 0
        now = datetime.now(UTC)
        found = await self._driver.tenants()
        unowned = found - await self._resources.with_rows(found)
        self._unowned_since = {rid: self._unowned_since.get(rid, now) for rid in unowned}
        due = [
            rid for rid, since in self._unowned_since.items() if now - since >= self._orphan_grace
        ]
        deleted = 0
        for resource_id in due:
            if await self._cleanup(resource_id):
                log.warning("lifecycle.orphan.deleted", resource_id=str(resource_id))
                del self._unowned_since[resource_id]
                deleted += 1
        return deleted

    async def restore_after_restart(self) -> int:
        """Restore a forgetful backend whose server has started since the last call; how many.

        Called every few seconds by the worker. The first call restores whatever the server
        lacks (a worker starting after a restart finds it so). A new run of the server (its
        ``server_run`` changed) restores again; so does one more call once ``restore_recheck``
        has passed, for the commands that were between their backend call and their append
        while the server restarted. Backend or log errors propagate: the next call tries again.
        """
        if self._forgetful is None:
            return 0
        run = await self._forgetful.server_run()
        if run != self._server_run:
            self._restored = {}
            restored = await self.restore_forgotten()
            self._server_run = run
            self._recheck_at = time.monotonic() + self._restore_recheck_s
            return restored
        if self._recheck_at is not None and time.monotonic() >= self._recheck_at:
            self._recheck_at = None
            return await self.restore_forgotten()
        return 0

    async def restore_forgotten(self) -> int:
        """Make the backend's credentials what the log says; how many tenants were restored.

        A pass reads every resource whose credentials the backend must hold (active or
        suspended), then which tenants the backend has. It restores the missing ones with the
        credentials the log holds, and those it restored before whose record has changed since
        (a rotation, a suspension, a quota block). It drops the credentials of any tenant whose
        row says it must have none (``_NO_CREDENTIALS``). A tenant with no row is
        ``reconcile``'s, one still being created is left to its create, and one that became
        active after the pass's read is left as it is.

        A pass that wrote anything is followed by another, because the log may have moved
        between its read and its writes. A delete records ``ResourceDeprovisionRequested``
        before it removes the user, so a user restored after that removal is seen, and dropped,
        by the next pass. A rotation or suspension records its event after its backend call:
        what a pass restored over it is corrected by the next pass once the event is in, or by
        the recheck ``restore_after_restart`` makes ``restore_recheck`` later.
        """
        backend = self._forgetful
        if backend is None:
            return 0
        kind = self._driver.kind
        restored = 0
        for _ in range(_RESTORE_PASSES):
            held = {
                s.resource_id: s for s in await self._resources.of_kind(kind, _HOLD_CREDENTIALS)
            }
            present = await backend.tenants()
            stale = [
                state
                for rid, state in held.items()
                if rid not in present
                or self._restored.get(rid, _restored(state)) != _restored(state)
            ]
            unwanted = [
                state.resource_id
                for state in await self._resources.by_ids(present - held.keys())
                if state.status in _NO_CREDENTIALS
            ]
            if not stale and not unwanted:
                return restored
            for resource_id in unwanted:
                await backend.drop_credentials(resource_id)
                self._restored.pop(resource_id, None)
            await asyncio.gather(*(self._restore_one(backend, state) for state in stale))
            restored += len(stale)
            log.warning(
                "lifecycle.credentials.restored",
                kind=kind.value,
                restored=len(stale),
                dropped=len(unwanted),
            )
        log.warning("lifecycle.credentials.still_changing", kind=kind.value)
        return restored

    async def _restore_one(self, backend: ForgetfulBackend, state: ResourceState) -> None:
        """Give ``backend`` the tenant of ``state`` as the log holds it, among create slots."""
        if state.credentials_sealed is None:
            return
        async with self._create_slots:
            await backend.restore_credentials(
                state.resource_id,
                self._opened(state.resource_id, state.credentials_sealed),
                writes_blocked=state.quota_exceeded,
                suspended=state.status is ResourceStatus.SUSPENDED,
            )
        self._restored[state.resource_id] = _restored(state)

    async def find_due(self, command: FindDue) -> DueFound:
        """This kind's resources due for the reaper now, and, for stacks, deploys that stalled.

        The reaper acts on the answer with its own commands; this only reads the projection.
        """
        self._check_kind(command.kind)
        now = datetime.now(UTC)
        found, backlog = await self._resources.due(
            command.kind, now, timedelta(seconds=command.orphan_grace_s), command.limit
        )
        stuck = []
        if command.kind is ResourceKind.STACK:
            stalled = await self._resources.stuck_stacks(
                now, timedelta(seconds=command.stuck_after_s)
            )
            stuck = [StuckDeploy(resource_id=rid, revision=rev) for rid, rev in stalled]
        return DueFound(
            kind=command.kind,
            due=[
                DueResource(
                    resource_id=state.resource_id,
                    reason=due.reason,
                    suspend=due.suspend,
                    expires_at=state.expires_at,
                )
                for state, due in found
            ],
            backlog=backlog,
            stuck=stuck,
        )

    def _check_kind(self, kind: ResourceKind) -> None:
        if kind is not self._driver.kind:
            msg = f"this worker serves {self._driver.kind.value} resources, not {kind.value}"
            raise SpinupError(ErrorCode.INVALID_COMMAND, msg)

    # -- usage sweep -------------------------------------------------------------------------

    async def sweep_usage(self, command: SweepUsage) -> UsageSwept:
        """Measure one page of this kind's live resources; block writes at quota, lift them under.

        A page is the next ``usage_batch`` resources by id after ``command.after``; the reaper
        asks for the next until an answer has no ``next_after`` (docs/adr/0049). Each is one
        short request, so a page lost with a killed worker costs only its own timeout. Before
        answering a page that is not the last, the worker rests, so that measuring takes at
        most the duty's share of the sweep's time: measuring thousands of tenants at once
        (``pg_database_size`` of every database, a ``MEMORY USAGE`` per key) took the backend and
        the machine's cores for seconds each minute, and every create on them waited meanwhile
        (docs/adr/0044).

        The fact goes into the log before a block (a failed block is retried next pass, as the
        block is re-applied on every pass while over) and after a lift (a failed lift leaves the
        log saying "exceeded", so the next pass lifts again): the backend is never left blocked
        with the log saying otherwise.
        """
        self._check_kind(command.kind)
        page = await self._resources.active_page(
            self._driver.kind, after=command.after, limit=self._usage_batch
        )
        quotas = {
            state.resource_id: (state, quota)
            for state in page
            if state.limits is not None and (quota := quota_bytes(state.limits)) is not None
        }
        began = time.monotonic()
        measured = (
            await self._driver.usage(list(quotas), sweep_id=command.sweep_id) if quotas else {}
        )
        took = time.monotonic() - began
        if measured:
            await self._resources.record_usage(measured)
        slots = asyncio.Semaphore(_SWEEP_CONCURRENCY)

        async def enforce(resource_id: UUID, usage: int) -> str | None:
            state, quota = quotas[resource_id]
            async with slots:
                try:
                    return await self._enforce(state, usage, quota, command)
                except (SpinupError, ConcurrencyConflictError) as exc:
                    log.warning(
                        "lifecycle.quota.skipped", resource_id=str(resource_id), error=repr(exc)
                    )
                    return None

        outcomes = await asyncio.gather(*(enforce(rid, used) for rid, used in measured.items()))
        next_after = page[-1].resource_id if len(page) == self._usage_batch else None
        if next_after is not None:
            # Never past the command's deadline: the reaper would stop waiting for the page.
            before_deadline = command.deadline - time.time() - _PAGE_ANSWER_MARGIN_S
            await asyncio.sleep(
                max(0.0, min(rest_after(took, self._usage_sweep_duty), before_deadline))
            )
        return UsageSwept(
            kind=self._driver.kind,
            measured=len(measured),
            over_quota=sum(1 for rid, used in measured.items() if used >= quotas[rid][1]),
            blocked=outcomes.count("blocked"),
            unblocked=outcomes.count("unblocked"),
            next_after=next_after,
        )

    async def _enforce(
        self, state: ResourceState, usage: int, quota: int, command: SweepUsage
    ) -> str | None:
        if usage >= quota:
            if not state.quota_exceeded:
                exceeded = QuotaExceeded(
                    resource_id=state.resource_id, usage_bytes=usage, quota_bytes=quota
                )
                await self._append_after(state, exceeded, command)
            await self._driver.block_writes(state.resource_id, usage=usage, quota=quota)
            return None if state.quota_exceeded else "blocked"
        if state.quota_exceeded:
            await self._driver.allow_writes(state.resource_id)
            restored = QuotaRestored(
                resource_id=state.resource_id, usage_bytes=usage, quota_bytes=quota
            )
            await self._append_after(state, restored, command)
            return "unblocked"
        return None

    async def _append_after(
        self, state: ResourceState, event: ResourceEvent, command: Command
    ) -> None:
        """Record ``event`` right after ``state``; ``ConcurrencyConflictError`` if it moved on."""
        await self._store.append(
            resource_stream(state.resource_id),
            state.version,
            [event],
            command_id=command.command_id,
            correlation_id=command.correlation_id,
        )


_Restored = tuple[str | None, ResourceStatus, bool]


@dataclass(frozen=True, slots=True)
class _Made:
    """What a create made: its credentials, and the warm-pool member it was, if it was one."""

    credentials: Credentials
    pool_member: UUID | None = None


def _restored(state: ResourceState) -> _Restored:
    """What a restore writes for ``state``: credentials, suspension, write block."""
    return (state.credentials_sealed, state.status, state.quota_exceeded)


def _has_expired(state: ResourceState) -> bool:
    return state.expires_at is not None and state.expires_at <= datetime.now(UTC)


def _expiry_delete(command: SuspendResource) -> DeprovisionResource:
    return DeprovisionResource(
        command_id=command.command_id,
        correlation_id=command.correlation_id,
        deadline=command.deadline,
        resource_id=command.resource_id,
        reason=DeprovisionReason.EXPIRED,
    )


def _wrong_kind(kind: ResourceKind) -> SpinupError:
    return SpinupError(ErrorCode.INVALID_COMMAND, f"this worker exports {kind.value} resources")


def _already_gone(state: ResourceState, command: DeprovisionResource) -> ResourceDeprovisioned:
    return ResourceDeprovisioned(
        resource_id=command.resource_id,
        reason=state.deprovision_reason or command.reason,
        already=True,
    )


def _recorded_code(state: ResourceState) -> ErrorCode:
    """The error code the failed attempt recorded, or a generic one from an unknown version."""
    try:
        return ErrorCode(state.failure_code or "")
    except ValueError:
        return ErrorCode.BACKEND_UNAVAILABLE


def _intent(command: ProvisionResource) -> ResourceProvisionRequested:
    """What ``command`` asks for, as the event that records it."""
    return ResourceProvisionRequested(
        resource_id=command.resource_id,
        kind=command.kind,
        tier=command.tier,
        limits=command.limits,
        token_hash=command.token_hash,
        fingerprint=command.fingerprint,
        name=command.name,
        expires_at=command.expires_at,
        deadline=datetime.fromtimestamp(command.deadline, UTC),
        account_id=command.account_id,
        parent_id=command.parent_id,
        fork_of=command.fork_of,
        export_grace_seconds=command.export_grace_seconds,
    )


def _ensure_before_deadline(command: ProvisionResource, why: str) -> None:
    if time.time() >= command.deadline:
        msg = f"{why}; nothing was created. Try again."
        raise SpinupError(ErrorCode.DEADLINE_EXCEEDED, msg, retryable=True)


def _caps_of(command: ProvisionResource) -> Precondition | None:
    """What the append recording ``command`` checks: its holder's caps, when it carries them."""
    return caps_precondition(command, command.caps) if command.caps is not None else None


def _over_caps(command: ProvisionResource, refused: AppendRefusedError) -> OverCapsError:
    """The refusal of a create whose append its holder's caps refused, in the plan's words."""
    caps = command.caps
    if caps is None:  # pragma: no cover  (only a create with caps has a caps precondition)
        raise refused
    live, today = held(refused)
    anonymous = command.account_id is None
    if live >= caps.active_per_kind:
        return over_active_cap(
            command.tier, caps.active_per_kind, command.kind, live, anonymous=anonymous
        )
    return over_daily_cap(command.tier, caps.provisions_per_day, today, anonymous=anonymous)


def _reused_error() -> SpinupError:
    msg = (
        "The resource this request created has since been deleted or has expired."
        " Send a new Idempotency-Key to create another."
    )
    return SpinupError(ErrorCode.IDEMPOTENCY_KEY_REUSED, msg)


def _gone_error(state: ResourceState) -> SpinupError:
    if state.status is ResourceStatus.SUSPENDED:
        until = state.delete_at.isoformat() if state.delete_at else "soon"
        msg = f"This resource expired; its data is kept for an export until {until}."
        return SpinupError(
            ErrorCode.RESOURCE_GONE,
            msg,
            agent_action=f"Export it with GET /resources/{{token}}/export before {until}.",
        )
    if state.status is ResourceStatus.EXPIRED:
        return SpinupError(ErrorCode.RESOURCE_GONE, "This resource expired and was deleted.")
    return SpinupError(ErrorCode.NOT_FOUND, "No such resource (or it was deleted).")


def _busy_error() -> SpinupError:
    msg = "The resource is changing right now; try again in a moment."
    return SpinupError(ErrorCode.COMMAND_IN_PROGRESS, msg, retryable=True)


def _claimed(state: ResourceState, command: ClaimResource, *, already: bool) -> ResourceClaimed:
    return ResourceClaimed(
        resource_id=state.resource_id,
        account_id=command.account_id,
        tier=state.tier if already and state.tier else command.tier,
        limits=state.limits if already and state.limits else command.limits,
        already=already,
    )
