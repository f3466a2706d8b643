"""A stack's deploys and controls: build, start, settle, record; or fail with nothing running.

A deploy runs in the background after the command that began it was answered. Its first event
(``StackDeployStarted``, revision n+1) is appended with the stream's version, so two replicas
cannot both begin one; every later event is appended only while the stack is live and still at
that revision (re-read and retried on a version conflict, as the lifecycle does), so a deploy
superseded by a redeploy or a delete stops without touching the newer one's containers.

Any failure removes every container of the stack and records ``StackFailed`` with the log tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec
import structlog
from aiodocker.exceptions import DockerError

from shared.contracts.commands import StackAction
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.events import (
    ResourceEvent,
    StackDeployStarted,
    StackFailed,
    StackReady,
    StackServiceBuilt,
    StackServiceStarted,
    StackStopped,
)
from shared.contracts.kinds import Credentials, ResourceStatus, StackLimits
from shared.contracts.replies import StackControlled
from shared.contracts.stacks import (
    ServiceManifest,
    StackManifest,
    backing_resource_id,
    injected_env,
)
from shared.eventlog.errors import ConcurrencyConflictError
from shared.naming import resource_stream
from shared.resources import ResourceState
from shared.stacks.state import StackStatus, StackView
from stack_deployer.build_rules import build_refusal
from stack_deployer.engine import BuildFailedError, ContainerSpec
from stack_deployer.firewall import Egress, endpoints_of
from stack_deployer.jetstream import TAIL_LINES, StackLog, purge_logs

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

    from shared.contracts.commands import ControlStack
    from shared.crypto.sealing import Keyring
    from shared.eventlog.store import EventStore
    from stack_deployer.engine import Engine
    from stack_deployer.firewall import Firewall
    from stack_deployer.jetstream import Uploads

log = structlog.get_logger("stack_deployer.deploy")
_credentials = msgspec.json.Decoder(Credentials)
_APPEND_ATTEMPTS = 5
#: Where a container's published port is reached (the gateway proxies to it).
PUBLISHED_HOST = "127.0.0.1"


# A loopback host in a URL (``…@127.0.0.1:5432``, ``http://localhost:8333``): inside a container
# it would name the container itself.
_LOOPBACK = re.compile(r"(?<=[/@])(?:127\.0\.0\.1|localhost)(?=[:/]|$)")


@dataclass(frozen=True, slots=True)
class CommandIds:
    """The command a deploy's events are recorded under."""

    command_id: UUID
    correlation_id: str


class SupersededError(Exception):
    """The stack was deleted or a newer revision began: this deploy stops quietly."""


class ServiceFailedError(Exception):
    """One service could not be built or started, or did not keep running."""

    def __init__(self, service: str | None, reason: str, logs_tail: str | None = None) -> None:
        super().__init__(reason)
        self.service = service
        self.reason = reason
        self.logs_tail = logs_tail


class Deployer:
    """Runs deploys and control actions for the stacks of this replica's engine."""

    def __init__(
        self,
        *,
        store: EventStore,
        keyring: Keyring,
        engine: Engine,
        firewall: Firewall,
        uploads: Uploads,
        nc: NatsClient,
        build_timeout_s: float,
        settle_s: float,
        max_parallel_builds: int,
        stop_timeout_s: int,
        loopback_alias: str = "",
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._engine = engine
        self._firewall = firewall
        self._uploads = uploads
        self._nc = nc
        self._build_timeout_s = build_timeout_s
        self._settle_s = settle_s
        self._build_slots = asyncio.Semaphore(max_parallel_builds)
        self._stop_timeout_s = stop_timeout_s
        self._loopback_alias = loopback_alias
        self._locks: dict[UUID, asyncio.Lock] = {}
        #: Deploys running on this replica, by stack.
        self._running: dict[UUID, asyncio.Task[None]] = {}
        #: Log followers by container id, with their stack.
        self._followers: dict[str, tuple[UUID, asyncio.Task[None]]] = {}
        self._background: set[asyncio.Task[None]] = set()

    # -- reading and appending ---------------------------------------------------------------

    async def load(self, stack_id: UUID) -> tuple[ResourceState, StackView]:
        """The stack's resource state and deploy view, from its stream."""
        events = await self._store.load(resource_stream(stack_id))
        state = ResourceState.fold(
            stack_id, ((e.event, e.command_id, e.recorded_at) for e in events)
        )
        return state, StackView.fold(e.event for e in events)

    async def _append(
        self,
        stack_id: UUID,
        revision: int,
        events: list[ResourceEvent],
        ids: CommandIds,
    ) -> None:
        """Append while the stack is live and at ``revision``; raise ``SupersededError`` if not."""
        for _ in range(_APPEND_ATTEMPTS):
            state, view = await self.load(stack_id)
            if state.status is not ResourceStatus.ACTIVE or view.revision != revision:
                raise SupersededError
            try:
                await self._store.append(
                    resource_stream(stack_id),
                    state.version,
                    events,
                    command_id=ids.command_id,
                    correlation_id=ids.correlation_id,
                )
            except ConcurrencyConflictError:
                continue
            return
        msg = "The stack changed too often to record its progress; try again."
        raise SpinupError(ErrorCode.STACK_BUSY, msg, retryable=True)

    def _lock(self, stack_id: UUID) -> asyncio.Lock:
        return self._locks.setdefault(stack_id, asyncio.Lock())

    # -- beginning a deploy -----------------------------------------------------------------

    def after_provision(self, stack_id: UUID, command_id: UUID, correlation_id: str) -> None:
        """The stack was just provisioned: deploy its first revision in the background."""

        async def first_deploy() -> None:
            try:
                ids = CommandIds(command_id, correlation_id)
                await self.begin_deploy(stack_id, ids=ids, when={StackStatus.PENDING})
            except Exception:
                log.exception("stack.deploy.not_begun", stack_id=str(stack_id))

        self._spawn(first_deploy())

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def begin_deploy(
        self,
        stack_id: UUID,
        *,
        ids: CommandIds,
        when: set[StackStatus],
    ) -> StackControlled:
        """Start revision n+1 in the background if the stack's status is in ``when``.

        Otherwise (or when a deploy already runs here) answer the status as it is.
        """
        async with self._lock(stack_id):
            for _ in range(_APPEND_ATTEMPTS):
                state, view = await self.load(stack_id)
                _ensure_live(state)
                if stack_id in self._running or view.status not in when:
                    return _controlled(stack_id, view)
                revision = view.revision + 1
                try:
                    manifest = await self._uploads.manifest(stack_id)
                except SpinupError as exc:
                    events: list[ResourceEvent] = [
                        StackDeployStarted(resource_id=stack_id, revision=revision, services=[]),
                        StackFailed(
                            resource_id=stack_id,
                            revision=revision,
                            service=None,
                            reason=exc.message,
                            logs_tail="",
                        ),
                    ]
                    started = False
                else:
                    events = [
                        StackDeployStarted(
                            resource_id=stack_id,
                            revision=revision,
                            services=manifest.start_order(),
                        )
                    ]
                    started = True
                try:
                    await self._store.append(
                        resource_stream(stack_id),
                        state.version,
                        events,
                        command_id=ids.command_id,
                        correlation_id=ids.correlation_id,
                    )
                except ConcurrencyConflictError:
                    continue
                if not started:
                    return StackControlled(
                        resource_id=stack_id, status=StackStatus.FAILED.value, revision=revision
                    )
                limits = state.limits
                if not isinstance(limits, StackLimits):
                    msg = "this resource is not a stack"
                    raise SpinupError(ErrorCode.INVALID_COMMAND, msg)
                task = asyncio.create_task(self._run(stack_id, revision, manifest, limits, ids))
                self._running[stack_id] = task
                task.add_done_callback(lambda _: self._running.pop(stack_id, None))
                return StackControlled(
                    resource_id=stack_id, status=StackStatus.BUILDING.value, revision=revision
                )
        msg = "The stack is changing right now; try again in a moment."
        raise SpinupError(ErrorCode.STACK_BUSY, msg, retryable=True)

    # -- the deploy itself ------------------------------------------------------------------

    async def _run(
        self,
        stack_id: UUID,
        revision: int,
        manifest: StackManifest,
        limits: StackLimits,
        ids: CommandIds,
    ) -> None:
        stack_log = StackLog(self._nc, stack_id)
        try:
            async with asyncio.timeout(self._build_timeout_s):
                await self._deploy(
                    stack_id, revision, manifest, limits, stack_log=stack_log, ids=ids
                )
        except SupersededError:
            log.info("stack.deploy.superseded", stack_id=str(stack_id), revision=revision)
            with contextlib.suppress(DockerError):
                await self._engine.remove_containers(str(stack_id), keep_revision=revision + 1)
        except TimeoutError:
            reason = f"The deploy took longer than {self._build_timeout_s:g} s and was stopped."
            await self._fail(stack_id, revision, None, reason, stack_log=stack_log, ids=ids)
        except ServiceFailedError as exc:
            await self._fail(
                stack_id, revision, exc.service, exc.reason, stack_log=stack_log, ids=ids, error=exc
            )
        except SpinupError as exc:
            await self._fail(stack_id, revision, None, exc.message, stack_log=stack_log, ids=ids)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stack.deploy.crashed", stack_id=str(stack_id), revision=revision)
            reason = "The deployer hit an unexpected error; it has been logged. Redeploy to retry."
            await self._fail(stack_id, revision, None, reason, stack_log=stack_log, ids=ids)

    async def _deploy(
        self,
        stack_id: UUID,
        revision: int,
        manifest: StackManifest,
        limits: StackLimits,
        *,
        stack_log: StackLog,
        ids: CommandIds,
    ) -> None:
        sid = str(stack_id)
        order = manifest.start_order()
        await stack_log.line("deploy", f"revision {revision}: deploying {', '.join(order)}")
        backing = await self._backing_env(stack_id, manifest)
        # Only what Spinup injected names an endpoint: a manifest's own env allows nothing.
        egress = Egress(
            endpoints=endpoints_of(backing.values()),
            internet=limits.internet,
            connections_per_endpoint=(
                limits.connections_per_endpoint if limits.connections_per_endpoint > 0 else None
            ),
        )
        # Before the builds and the containers: neither ever runs without its rules.
        await self._firewall.allow(sid, egress)
        await self._engine.ensure_network(sid)
        images = dict(
            await asyncio.gather(
                *(
                    self._image(
                        stack_id, revision, name, manifest, limits, stack_log=stack_log, ids=ids
                    )
                    for name in order
                )
            )
        )
        # The previous revision's containers go only now: a failed build leaves them running
        # until the failure removes them all (nothing half-alive either way).
        self._stop_following(stack_id)
        await self._engine.remove_containers(sid, keep_revision=revision)
        for name in order:
            service = manifest.services[name]
            memory_mb, cpu_millis, pids = _service_limits(service, limits)
            spec = ContainerSpec(
                stack_id=sid,
                service=name,
                revision=revision,
                image=images[name],
                command=service.command,
                # PORT as Heroku-style platforms set it; the manifest's own env may override it.
                env={**_port_env(service.port), **service.env, **backing},
                port=service.port,
                memory_mb=memory_mb,
                cpu_millis=cpu_millis,
                pids=pids,
                egress=egress,
                read_only=service.read_only,
            )
            try:
                started = await self._engine.run(spec)
            except DockerError as exc:
                raise ServiceFailedError(name, f"could not start: {exc.message}") from exc
            self._follow(stack_id, started.container_id, name, since=int(time.time()) - 1)
            await stack_log.line("deploy", f"{name}: started")
            await self._append(
                stack_id,
                revision,
                [
                    StackServiceStarted(
                        resource_id=stack_id,
                        revision=revision,
                        service=name,
                        container=started.container_id,
                        host=PUBLISHED_HOST if started.host_port else None,
                        port=started.host_port,
                    )
                ],
                ids,
            )
        await self._settle(sid, revision)
        await self._engine.remove_images(sid, keep_revision=revision)
        await self._append(
            stack_id, revision, [StackReady(resource_id=stack_id, revision=revision)], ids
        )
        await stack_log.line("deploy", f"revision {revision}: running")
        log.info("stack.deploy.ready", stack_id=sid, revision=revision)

    async def _image(
        self,
        stack_id: UUID,
        revision: int,
        name: str,
        manifest: StackManifest,
        limits: StackLimits,
        *,
        stack_log: StackLog,
        ids: CommandIds,
    ) -> tuple[str, str]:
        service = manifest.services[name]
        if service.image is not None:
            if not await self._engine.image_exists(service.image):
                reason = (
                    f"image {service.image!r} is not on the engine (nothing is pulled):"
                    " use `build` with a Dockerfile FROM an image that is"
                )
                raise ServiceFailedError(name, reason)
            image = service.image
        else:
            context = await self._uploads.read(stack_id, service.build or "")
            source = f"build:{name}"
            refusal = build_refusal(context)
            if refusal is not None:
                await stack_log.line(source, f"ERROR: {refusal}")
                raise ServiceFailedError(name, f"build refused: {refusal}")

            async def on_line(text: str) -> None:
                await stack_log.line(source, text)

            async with self._build_slots:
                try:
                    memory_mb, cpu_millis, _pids = _service_limits(service, limits)
                    image = await self._engine.build(
                        str(stack_id),
                        name,
                        revision,
                        context,
                        on_line,
                        memory_mb=memory_mb,
                        cpu_millis=cpu_millis,
                    )
                except BuildFailedError as exc:
                    await stack_log.line(source, f"ERROR: {exc}")
                    raise ServiceFailedError(name, f"build failed: {exc}") from exc
        await self._append(
            stack_id,
            revision,
            [StackServiceBuilt(resource_id=stack_id, revision=revision, service=name, image=image)],
            ids,
        )
        return name, image

    async def _settle(self, sid: str, revision: int) -> None:
        """Wait the settle period; a container that exited or restarted in it is a failure."""
        await asyncio.sleep(self._settle_s)
        for container_id in await self._engine.containers(sid, revision=revision):
            state = await self._engine.state(container_id)
            if state.running and state.restarts == 0:
                continue
            tail = await self._engine.logs_tail(container_id, TAIL_LINES)
            # Inspected between two restarts, the engine may not show the exit code yet.
            reason = "exited while starting"
            if state.exit_code:
                reason = f"exited with code {state.exit_code} while starting"
            if state.restarts:
                reason += f" (restarted {state.restarts} times: a crash loop)"
            if state.error:
                reason += f": {state.error}"
            raise ServiceFailedError(state.service, reason, "\n".join(tail))

    async def _fail(
        self,
        stack_id: UUID,
        revision: int,
        service: str | None,
        reason: str,
        *,
        stack_log: StackLog,
        ids: CommandIds,
        error: ServiceFailedError | None = None,
    ) -> None:
        """Remove every container of the stack, then record the failure."""
        self._stop_following(stack_id)
        try:
            await self._engine.remove_containers(str(stack_id))
        except DockerError:
            log.warning("stack.fail.cleanup_failed", stack_id=str(stack_id))
        where = f"{service}: " if service else ""
        await stack_log.line("deploy", f"revision {revision} failed: {where}{reason}")
        tail = error.logs_tail if error is not None and error.logs_tail else stack_log.tail_text()
        event = StackFailed(
            resource_id=stack_id,
            revision=revision,
            service=service,
            reason=reason,
            logs_tail=tail,
        )
        try:
            await self._append(stack_id, revision, [event], ids=ids)
        except SupersededError:
            return
        log.info("stack.deploy.failed", stack_id=str(stack_id), revision=revision, reason=reason)

    async def _backing_env(self, stack_id: UUID, manifest: StackManifest) -> dict[str, str]:
        """The variables of every backing resource, from its latest credentials in the log."""
        credentials: dict[str, Credentials] = {}
        for name in manifest.resources:
            resource_id = backing_resource_id(stack_id, name)
            events = await self._store.load(resource_stream(resource_id))
            state = ResourceState.fold(
                resource_id, ((e.event, e.command_id, e.recorded_at) for e in events)
            )
            if state.status is not ResourceStatus.ACTIVE or state.credentials_sealed is None:
                reason = f"backing resource {name!r} is not available ({state.status.value})"
                raise ServiceFailedError(None, reason)
            plain = self._keyring.open(state.credentials_sealed, aad=resource_id.bytes)
            credentials[name] = _credentials.decode(plain)
        env = injected_env(manifest, credentials)
        if not self._loopback_alias:
            return env
        return {key: _LOOPBACK.sub(self._loopback_alias, value) for key, value in env.items()}

    # -- logs ---------------------------------------------------------------------------------

    def _follow(self, stack_id: UUID, container_id: str, service: str, *, since: int) -> None:
        """Publish the container's output while it runs."""
        stack_log = StackLog(self._nc, stack_id)

        async def follow() -> None:
            try:
                async for line in self._engine.follow_logs(container_id, since=since):
                    await stack_log.line(service, line)
            except (DockerError, OSError):
                return
            finally:
                self._followers.pop(container_id, None)

        self._stop_following_container(container_id)
        self._followers[container_id] = (stack_id, asyncio.create_task(follow()))

    def _stop_following_container(self, container_id: str) -> None:
        entry = self._followers.pop(container_id, None)
        if entry is not None:
            entry[1].cancel()

    def _stop_following(self, stack_id: UUID) -> None:
        for container_id, (owner, _) in list(self._followers.items()):
            if owner == stack_id:
                self._stop_following_container(container_id)

    async def resume_logs(self) -> None:
        """After a restart: follow the output of every running container of this scope again."""
        for container_id, stack in await self._engine.running_in_scope():
            state = await self._engine.state(container_id)
            with contextlib.suppress(ValueError):
                stack_id = uuid.UUID(stack)
                self._follow(stack_id, container_id, state.service, since=int(time.time()))

    # -- control --------------------------------------------------------------------------

    async def control(self, command: ControlStack) -> StackControlled:  # noqa: PLR0911  (one answer per action and status)
        """Stop, start, restart, redeploy or recover the stack's containers."""
        stack_id = command.resource_id
        ids = CommandIds(command.command_id, command.correlation_id)
        action = command.action
        if action is StackAction.REDEPLOY:
            _, view = await self.load(stack_id)
            if stack_id in self._running or view.status is StackStatus.BUILDING:
                raise _busy()
            every = set(StackStatus) - {StackStatus.BUILDING}
            return await self.begin_deploy(stack_id, when=every, ids=ids)
        if action is StackAction.RECOVER:
            when = {StackStatus.PENDING, StackStatus.BUILDING}
            return await self.begin_deploy(stack_id, when=when, ids=ids)
        async with self._lock(stack_id):
            state, view = await self.load(stack_id)
            _ensure_live(state)
            if stack_id in self._running or view.status is StackStatus.BUILDING:
                raise _busy()
            sid = str(stack_id)
            containers = await self._engine.containers(sid, revision=view.revision)
            if action is StackAction.STOP:
                if view.status is not StackStatus.RUNNING:
                    return _controlled(stack_id, view)
                self._stop_following(stack_id)
                await self._engine.stop(containers, timeout_s=self._stop_timeout_s)
                event = StackStopped(resource_id=stack_id, revision=view.revision)
                await self._append(stack_id, view.revision, [event], ids=ids)
                return StackControlled(
                    resource_id=stack_id, status=StackStatus.STOPPED.value, revision=view.revision
                )
            if action is StackAction.START and view.status is StackStatus.RUNNING:
                return _controlled(stack_id, view)
            usable = view.status in {StackStatus.RUNNING, StackStatus.STOPPED} and containers
        if not usable:
            # Failed or never deployed: nothing to start, so build it again.
            every = set(StackStatus) - {StackStatus.BUILDING}
            return await self.begin_deploy(stack_id, when=every, ids=ids)
        async with self._lock(stack_id):
            return await self._start_again(stack_id, view.revision, containers, action, ids)

    async def _start_again(
        self,
        stack_id: UUID,
        revision: int,
        containers: list[str],
        action: StackAction,
        ids: CommandIds,
    ) -> StackControlled:
        stack_log = StackLog(self._nc, stack_id)
        self._stop_following(stack_id)
        if action is StackAction.RESTART:
            await self._engine.restart(containers, timeout_s=self._stop_timeout_s)
        else:
            await self._engine.start(containers)
        await stack_log.line("deploy", f"revision {revision}: {action.value}")
        events: list[ResourceEvent] = []
        for container_id in containers:
            state = await self._engine.state(container_id)
            self._follow(stack_id, container_id, state.service, since=int(time.time()) - 1)
            events.append(
                StackServiceStarted(
                    resource_id=stack_id,
                    revision=revision,
                    service=state.service,
                    container=container_id,
                    host=PUBLISHED_HOST if state.host_port else None,
                    port=state.host_port,
                )
            )
        await self._append(stack_id, revision, events, ids=ids)
        try:
            await self._settle(str(stack_id), revision)
        except ServiceFailedError as exc:
            await self._fail(
                stack_id, revision, exc.service, exc.reason, stack_log=stack_log, ids=ids, error=exc
            )
            return StackControlled(
                resource_id=stack_id, status=StackStatus.FAILED.value, revision=revision
            )
        await self._append(
            stack_id, revision, [StackReady(resource_id=stack_id, revision=revision)], ids
        )
        return StackControlled(
            resource_id=stack_id, status=StackStatus.RUNNING.value, revision=revision
        )

    # -- teardown ---------------------------------------------------------------------------

    async def teardown(self, stack_id: UUID) -> None:
        """Remove everything of the stack: deploy, containers, network, images, upload, logs."""
        task = self._running.pop(stack_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._stop_following(stack_id)
        sid = str(stack_id)
        await self._engine.remove_containers(sid)
        await self._engine.remove_network(sid)
        await self._firewall.forget(sid)
        await self._engine.remove_images(sid)
        await self._uploads.delete(stack_id)
        await purge_logs(self._nc.jetstream(), stack_id)
        self._locks.pop(stack_id, None)

    async def close(self) -> None:
        """Stop following logs and cancel background work (deploys are recovered later)."""
        tasks = [task for _, task in self._followers.values()]
        tasks += list(self._running.values()) + list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _ensure_live(state: ResourceState) -> None:
    if state.status is ResourceStatus.ACTIVE:
        return
    if state.status in {ResourceStatus.NONE, ResourceStatus.PROVISIONING, ResourceStatus.FAILED}:
        raise SpinupError(ErrorCode.NOT_FOUND, "No such stack (or it never started).")
    raise SpinupError(ErrorCode.NOT_FOUND, "No such stack (or it was deleted).")


def _busy() -> SpinupError:
    msg = "The stack is being deployed; wait until it is running or failed, then try again."
    return SpinupError(ErrorCode.STACK_BUSY, msg, retryable=True)


def _controlled(stack_id: UUID, view: StackView) -> StackControlled:
    return StackControlled(resource_id=stack_id, status=view.status.value, revision=view.revision)


def _port_env(port: int | None) -> dict[str, str]:
    """``PORT`` for a service with an HTTP port: where the proxy sends its requests."""
    return {} if port is None else {"PORT": str(port)}


def _service_limits(service: ServiceManifest, plan: StackLimits) -> tuple[int, int, int]:
    """Memory (MB), CPU (thousandths of a core) and pids of the service's containers and build.

    Its own where the manifest sets them (``check_manifest`` holds them to the plan), else the
    plan's.
    """
    own = service.limits
    return (
        own.memory_mb or plan.memory_mb,
        own.cpu_millis or plan.cpu_millis,
        own.pids or plan.pids,
    )
