"""Stacks over HTTP: deploy an uploaded app, follow its logs, control it, serve its URLs.

``POST /stacks/new`` takes a ``spinup.yaml`` and one tarball per ``build``; ``POST /deploy/new``
the one-service form. Everything is checked (manifest, plan limits, upload size, caps) before
anything is stored or provisioned. The upload goes to the JetStream object store, the backing
resources are provisioned as children of the stack (``parent_id``) through the same path as any
create, then the stack-deployer gets the stack's own provision command and builds in the
background: the answer is 202 with the URLs that will serve once it runs.

Public URLs are path-based (ADR 0011): ``/apps/<stack id>/<service>/<path>`` is proxied to the
port the service's container publishes on the engine's loopback address.
"""

from __future__ import annotations

import contextlib
import io
import re
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import structlog
import yaml
from litestar import Request, Response, get, post, route
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import UploadFile
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter, QueryParameter
from litestar.response import Redirect, ServerSentEvent, ServerSentEventMessage, Stream
from nats.js.api import DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError as JsNotFoundError

from gateway.accounts.auth import Scope
from gateway.admission.clients import client_ip
from gateway.admission.policy import admit_several
from gateway.claims.routes import claim_url
from gateway.console.links import console_url
from gateway.context import GatewayContext
from gateway.http.cleanup import finish_shielded
from gateway.http.middleware import request_id_of
from gateway.http.schemas import BackingResourceInfo, StackControlledView, StackCreated
from gateway.resources.lifetime import expires_at_for, ttl_seconds_param
from gateway.resources.routes import (
    IDEMPOTENCY_NAMESPACE,
    KIND_ROUTES,
    StackPart,
    TokenOrIdParam,
    _command_ids,
    _limits_view,
    backing_info,
    creating_caller,
    deprovision,
    provision,
    resource_for,
)
from gateway.stacks.plumbing import StackPlumbing
from gateway.webhooks.routes import HOP_BY_HOP_HEADERS, KEEPALIVE_S, RECEIVE_METHODS
from shared.contracts.commands import ControlStack, StackAction
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import ResourceKind, ResourceStatus, StackCredentials, StackLimits
from shared.contracts.stacks import (
    MANIFEST_NAME,
    ManifestError,
    StackManifest,
    backing_resource_id,
    check_manifest,
    parse_manifest,
)
from shared.contracts.subjects import (
    STACK_CONTROL,
    STACK_LOGS_STREAM,
    stack_logs_subject,
)
from shared.naming import resource_stream
from shared.plans import Plans
from shared.resources import ResourceState
from shared.stacks.state import ServiceStatus, StackView
from shared.stacks.uploads import put_upload, remove_upload

log = structlog.get_logger("gateway.stacks")

MIB = 1024 * 1024
# Uploaded file names become object names and `build:` values: kept plain.
_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Control actions a client may ask for (``recover`` is the reaper's).
CLIENT_ACTIONS = (StackAction.STOP, StackAction.START, StackAction.RESTART, StackAction.REDEPLOY)
# `POST /deploy/new` names each backing resource after its kind's create route (db, cache...).
_BACKING_NAMES = {route.kind: route.path for route in KIND_ROUTES}
# Headers the gateway sets itself on a proxied request.
_FORWARDED_HEADERS = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix", "host"}
)


def largest_upload(plans: Plans) -> int:
    """The largest stack upload any tier accepts, in bytes: the stack routes' body cap."""
    # A little room for the multipart framing around the files.
    return max(tier.stack.upload_mb for tier in plans.tiers.values()) * MIB + MIB


# -- the upload --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Upload:
    """A checked upload: the manifest's text and every build context by file name."""

    manifest_text: bytes
    manifest: StackManifest
    files: dict[str, bytes]


async def _form(request: Request[Any, Any, Any]) -> dict[str, bytes | str]:
    """The multipart form: files by field name (their content), plain fields as text."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        msg = (
            "Send multipart/form-data: the manifest as field spinup.yaml and each build context"
            " as a tarball field named as in its `build:` (curl -F spinup.yaml=@spinup.yaml"
            " -F web.tar=@web.tar)."
        )
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    form = await request.form()
    fields: dict[str, bytes | str] = {}
    for name, value in form.multi_items():
        if name in fields:
            msg = f"The form has field {name!r} twice; send each file once."
            raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
        fields[name] = await value.read() if isinstance(value, UploadFile) else str(value)
    return fields


def _check_upload(manifest_text: bytes, files: dict[str, bytes], limits: StackLimits) -> Upload:
    """Parse the manifest and hold the upload to the plan: nothing is stored before this."""
    total = len(manifest_text) + sum(len(data) for data in files.values())
    if total > limits.upload_mb * MIB:
        msg = (
            f"The upload is {total / MIB:.1f} MiB; the plan allows {limits.upload_mb} MiB per"
            " stack (stack.upload_mb). Leave build outputs and dependencies out of the tarballs."
        )
        raise SpinupError(ErrorCode.PAYLOAD_TOO_LARGE, msg)
    for name in files:
        if not _FILE_NAME_RE.match(name):
            msg = (
                f"The uploaded file {name!r} needs a plain name (letters, digits, '.', '_', '-',"
                " at most 64): it is what `build:` names."
            )
            raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    manifest = parse_manifest(manifest_text)
    check_manifest(manifest, limits, {name: len(data) for name, data in files.items()})
    return Upload(manifest_text=manifest_text, manifest=manifest, files=files)


async def _stack_upload(request: Request[Any, Any, Any], limits: StackLimits) -> Upload:
    """``POST /stacks/new``'s form: ``spinup.yaml`` and one tarball per ``build``."""
    fields = await _form(request)
    manifest_text = fields.pop(MANIFEST_NAME, None)
    if manifest_text is None:
        msg = (
            f"The form has no {MANIFEST_NAME} field: send the manifest with"
            f" -F {MANIFEST_NAME}=@{MANIFEST_NAME}."
        )
        raise SpinupError(ErrorCode.INVALID_MANIFEST, msg)
    text = manifest_text if isinstance(manifest_text, bytes) else manifest_text.encode()
    files: dict[str, bytes] = {}
    for name, value in fields.items():
        if not isinstance(value, bytes):
            msg = (
                f"The form field {name!r} is not a file; only {MANIFEST_NAME} and tarballs go here."
            )
            raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
        files[name] = value
    return _check_upload(text, files, limits)


def _single_service_manifest(fields: Mapping[str, bytes | str], context_name: str) -> str:
    """The manifest ``POST /deploy/new`` stands for, from its plain form fields."""
    service: dict[str, Any] = {"build": context_name}
    port = fields.get("port")
    if isinstance(port, str) and port.strip():
        if not port.strip().isdigit():
            raise ManifestError("services.app.port", 0, f"must be a TCP port; got {port!r}")
        service["port"] = int(port)
    env = fields.get("env")
    if isinstance(env, str) and env.strip():
        pairs = [line.strip() for line in re.split(r"[\n;]", env) if line.strip()]
        bad = [pair for pair in pairs if "=" not in pair]
        if bad:
            raise ManifestError("services.app.env", 0, f"takes KEY=VALUE pairs; got {bad[0]!r}")
        service["env"] = dict(pair.split("=", 1) for pair in pairs)
    command = fields.get("command")
    if isinstance(command, str) and command.strip():
        service["command"] = ["/bin/sh", "-c", command]
    resources: dict[str, dict[str, str]] = {}
    wanted = fields.get("resources")
    if isinstance(wanted, str):
        for kind_name in (part.strip() for part in wanted.split(",") if part.strip()):
            try:
                kind = ResourceKind(kind_name)
            except ValueError:
                problem = f"names {kind_name!r}; use postgres, redis, mongo, nats or s3"
                raise ManifestError("resources", 0, problem) from None
            resources[_BACKING_NAMES.get(kind, kind.value)] = {"type": kind.value}
    manifest: dict[str, Any] = {"services": {"app": service}}
    if resources:
        manifest["resources"] = resources
    return yaml.safe_dump(manifest, sort_keys=False)


def _dockerfile_context(dockerfile: bytes) -> bytes:
    """A build context holding just this Dockerfile (for apps that need nothing else)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(dockerfile))
    return buffer.getvalue()


async def _single_service_upload(request: Request[Any, Any, Any], limits: StackLimits) -> Upload:
    """``POST /deploy/new``'s form: ``context`` (a tarball) or ``Dockerfile``, and fields.

    The fields: ``port``, ``env`` (KEY=VALUE lines), ``command`` and ``resources`` (kinds,
    comma-separated).
    """
    fields = await _form(request)
    context = fields.get("context")
    dockerfile = fields.get("Dockerfile")
    if isinstance(context, bytes) == isinstance(dockerfile, bytes):
        msg = (
            "Send exactly one of the files `context` (a tarball with a Dockerfile:"
            " -F context=@app.tar) or `Dockerfile` (-F Dockerfile=@Dockerfile)."
        )
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    unknown = sorted(set(fields) - {"context", "Dockerfile", "port", "env", "command", "resources"})
    if unknown:
        msg = (
            f"Unknown form field {unknown[0]!r}; this route takes context or Dockerfile, port,"
            " env, command, resources."
        )
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    if isinstance(context, bytes):
        data = context
    else:
        data = _dockerfile_context(dockerfile if isinstance(dockerfile, bytes) else b"")
    manifest_text = _single_service_manifest(fields, "app.tar").encode()
    return _check_upload(manifest_text, {"app.tar": data}, limits)


async def store_upload(ctx: GatewayContext, stack_id: uuid.UUID, upload: Upload) -> None:
    """Put the upload where the stack-deployer reads it: ``<stack id>/<file>`` objects."""
    await put_upload(ctx.bus.nc.jetstream(), stack_id, upload.manifest_text, upload.files)


async def discard_upload(ctx: GatewayContext, stack_id: uuid.UUID, upload: Upload) -> None:
    """Remove a stored upload's objects (a create that failed after storing it)."""
    await remove_upload(ctx.bus.nc.jetstream(), stack_id, [MANIFEST_NAME, *upload.files])


# -- create ------------------------------------------------------------------------------------


def _stack_note(tier: str, expires_at: datetime | None) -> str:
    keep = (
        "Keep the token: GET /resources/{token} shows the deploy, GET /resources/{token}/logs"
        " streams its logs, POST /stacks/{token}/stop|start|restart|redeploy controls it and"
        " DELETE /resources/{token} deletes it with its backing resources."
    )
    if expires_at is None:
        return f"Permanent stack on the {tier} plan, building now. {keep}"
    when = expires_at.strftime("%Y-%m-%d %H:%M UTC")
    return f"Temporary stack, building now; it is deleted at {when}. {keep}"


async def _undo(ctx: GatewayContext, made: list[ResourceState], correlation_id: str) -> None:
    """Delete what a failed create had made, so a failed create leaves nothing behind."""
    for state in made:
        try:
            await deprovision(ctx, state, correlation_id)
        except SpinupError as exc:  # the reaper deletes it at its expiry anyway
            log.warning("stack.undo.failed", resource_id=str(state.resource_id), error=exc.code)


async def _create(
    request: Request[Any, Any, Any],
    ctx: GatewayContext,
    route_key: str,
    read_upload: Callable[[Request[Any, Any, Any], StackLimits], Awaitable[Upload]],
) -> Response[StackCreated]:
    principal, client, account_id, holder = await creating_caller(request, ctx)
    tier_name = principal.tier if principal else ctx.plans.anonymous_tier
    tier = ctx.plans.tiers[tier_name]
    # ``?ttl_seconds=N``: the body is the upload. Checked first: a 400 costs nothing.
    expires_at = expires_at_for(
        tier_name, tier, ResourceKind.STACK, ttl_seconds_param(request), datetime.now(UTC)
    )
    upload: Upload = await read_upload(request, tier.stack)
    command_id, stack_id = _command_ids(request, route_key, holder)
    retried = "idempotency-key" in request.headers and await ctx.resources.by_id(stack_id)
    if not retried:
        await admit_several(
            ctx,
            kinds=[
                ResourceKind.STACK,
                *(resource.type for resource in upload.manifest.resources.values()),
            ],
            tier_name=tier_name,
            tier=tier,
            account_id=account_id,
            fingerprint=client,
        )
    await store_upload(ctx, stack_id, upload)
    correlation_id = request_id_of(request.scope)
    made: list[ResourceState] = []
    backing: dict[str, BackingResourceInfo] = {}
    try:
        # The backing resources first: the deploy starts right after the stack's create and
        # reads their credentials.
        for name, resource in sorted(upload.manifest.resources.items()):
            resource_id = backing_resource_id(stack_id, name)
            await provision(
                request,
                ctx,
                kind=resource.type,
                principal=principal,
                client=client,
                ids=(
                    uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"backing|{command_id}|{name}"),
                    resource_id,
                ),
                name=name,
                part_of_stack=StackPart(expires_at=expires_at, parent_id=stack_id),
            )
            state = await ctx.resources.by_id(resource_id)
            if state is not None:
                made.append(state)
                backing[name] = backing_info(ctx, state)
        reply, token = await provision(
            request,
            ctx,
            kind=ResourceKind.STACK,
            principal=principal,
            client=client,
            ids=(command_id, stack_id),
            name=None,
            part_of_stack=StackPart(expires_at=expires_at, parent_id=None),
        )
    except SpinupError:
        await _undo(ctx, made, correlation_id)
        await discard_upload(ctx, stack_id, upload)
        raise
    urls = reply.credentials.urls if isinstance(reply.credentials, StackCredentials) else {}
    base = ctx.settings.public_url
    body = StackCreated(
        id=reply.resource_id,
        kind=ResourceKind.STACK.value,
        token=token,
        status="building",
        status_url=f"{base}/resources/{token}",
        logs_url=f"{base}/resources/{token}/logs",
        urls=urls,
        resources=backing,
        tier=reply.tier,
        limits=_limits_view(reply.limits, reply.expires_at),
        expires_at=reply.expires_at,
        claim_url=(
            claim_url(ctx, client, made_with=(reply.resource_id, reply.created_at))
            if account_id is None
            else None
        ),
        note=_stack_note(reply.tier, reply.expires_at),
        console_url=console_url(base, ResourceKind.STACK, token),
    )
    headers = {"Idempotent-Replayed": "true"} if reply.replayed else {}
    return Response(body, status_code=202, headers=headers)


def create_routes(plans: Plans) -> list[HTTPRouteHandler]:
    """``POST /stacks/new`` and ``POST /deploy/new``; their body cap comes from the plans."""
    body_cap = largest_upload(plans)

    async def create_stack(
        request: Request[Any, Any, Any], ctx: GatewayContext
    ) -> Response[StackCreated]:
        return await _create(request, ctx, "POST /stacks/new", _stack_upload)

    async def deploy_app(
        request: Request[Any, Any, Any], ctx: GatewayContext
    ) -> Response[StackCreated]:
        return await _create(request, ctx, "POST /deploy/new", _single_service_upload)

    return [
        post(
            "/stacks/new",
            status_code=202,
            request_max_body_size=body_cap,
            summary="Deploy a multi-service app (a stack)",
            description="multipart/form-data: `spinup.yaml` (the manifest) and one tarball per"
            " service `build` (a build context with a Dockerfile), each as a field named as in"
            " the manifest. Backing `resources:` are provisioned and injected as environment"
            " variables. Answers 202 while it builds: follow `status_url`. An invalid manifest"
            " is a 400 naming the field and line; an upload over the plan's `upload_mb` a 413.",
            tags=["stacks"],
            operation_id="create_stack",
        )(create_stack),
        post(
            "/deploy/new",
            status_code=202,
            request_max_body_size=body_cap,
            summary="Deploy one service",
            description="multipart/form-data: `context` (a tarball with a Dockerfile) or just a"
            " `Dockerfile`, and optional fields `port` (the HTTP port to serve), `env`"
            " (KEY=VALUE lines), `command` (a shell command) and `resources` (comma-separated"
            " kinds: postgres, redis, mongo, nats, s3). The service is named `app`.",
            tags=["stacks"],
            operation_id="deploy_app",
        )(deploy_app),
    ]


# -- logs --------------------------------------------------------------------------------------


async def _stack_of(
    request: Request[Any, Any, Any], ctx: GatewayContext, token: str, scope: Scope
) -> ResourceState:
    state = await resource_for(request, ctx, token, scope)
    if state.kind is not ResourceKind.STACK:
        kind = state.kind.value if state.kind else "unknown"
        msg = f"This is a {kind} resource; only stacks (POST /stacks/new) have this route."
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    return state


async def _log_messages(
    ctx: GatewayContext, stack_id: uuid.UUID, *, follow: bool
) -> AsyncIterator[ServerSentEventMessage]:
    """Every stored line of the stack, then (``follow``) new ones as they come."""
    js = ctx.bus.nc.jetstream()
    subject = stack_logs_subject(stack_id)
    try:
        last = (await js.get_last_msg(STACK_LOGS_STREAM, subject)).seq or 0
    except JsNotFoundError:
        last = 0
    if last == 0 and not follow:
        return
    subscription = await js.subscribe(
        subject,
        stream=STACK_LOGS_STREAM,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    plumbing: StackPlumbing = ctx.stacks
    try:
        while not plumbing.stopping.is_set():
            try:
                message = await subscription.next_msg(timeout=KEEPALIVE_S)
            except TimeoutError:
                if not follow:
                    return
                state = await ctx.resources.by_id(stack_id)
                if state is None or state.is_gone:
                    yield ServerSentEventMessage(event="closed", data="The stack was deleted.")
                    return
                yield ServerSentEventMessage(data=None, comment="keep-alive")
                continue
            sequence = message.metadata.sequence.stream or 0
            yield ServerSentEventMessage(
                event="log", id=str(sequence), data=message.data.decode(errors="replace")
            )
            if not follow and sequence >= last:
                return
    finally:
        # The client may have hung up: unshielded, the subscription could stay on the server.
        await finish_shielded(_unsubscribe(subscription))


async def _unsubscribe(subscription: JetStreamContext.PushSubscription) -> None:
    with contextlib.suppress(Exception):
        await subscription.unsubscribe()


@get(
    "/resources/{token:str}/logs",
    summary="A stack's build and container logs",
    description="Server-Sent Events, one `log` event per line: JSON with `at`, `source`"
    " (`deploy`, `build:<service>` or `<service>`) and `line`. Without `follow` the stream ends"
    " after the stored lines; with `?follow=1` it stays open for new ones (a comment every 15 s"
    " keeps it alive) and ends with a `closed` event when the stack is deleted. Only stacks have"
    " logs: another kind is a 400.",
    media_type="text/event-stream",
    tags=["stacks"],
)
async def stack_logs(
    request: Request[Any, Any, Any],
    ctx: GatewayContext,
    token: str = TokenOrIdParam,
    follow: Annotated[bool, QueryParameter(name="follow", description="Keep streaming.")] = False,
) -> ServerSentEvent:
    """``GET /resources/{token}/logs``."""
    state = await _stack_of(request, ctx, token, Scope.READ)
    return ServerSentEvent(_log_messages(ctx, state.resource_id, follow=follow))


# -- control -----------------------------------------------------------------------------------


async def _redeploy_upload(
    request: Request[Any, Any, Any], ctx: GatewayContext, state: ResourceState
) -> None:
    """A redeploy's new upload, stored over the old one; its resources must be the same."""
    limits = state.limits if isinstance(state.limits, StackLimits) else ctx.plans.anonymous.stack
    upload = await _stack_upload(request, limits)
    children = await ctx.resources.children_of(state.resource_id)
    before = {child.name: child.kind for child in children}
    after = {name: resource.type for name, resource in upload.manifest.resources.items()}
    if before != after:
        had = ", ".join(
            f"{n}: {k.value if k else '?'}"
            for n, k in sorted(before.items(), key=lambda i: str(i[0]))
        )
        msg = (
            f"must stay as deployed ({had or 'none'}) on a redeploy; make a new stack to"
            " change them"
        )
        raise ManifestError("resources", 0, msg)
    await store_upload(ctx, state.resource_id, upload)


def _control_handler(max_body_bytes: int) -> HTTPRouteHandler:
    async def control_stack(
        request: Request[Any, Any, Any],
        ctx: GatewayContext,
        action: str = Parameter(description="stop, start, restart or redeploy"),
        token: str = TokenOrIdParam,
    ) -> StackControlledView:
        """``POST /stacks/{token}/{action}``."""
        try:
            wanted = StackAction(action)
        except ValueError:
            wanted = None
        if wanted not in CLIENT_ACTIONS or wanted is None:
            names = ", ".join(a.value for a in CLIENT_ACTIONS)
            msg = f"Unknown action {action!r}: one of {names}."
            raise SpinupError(ErrorCode.NOT_FOUND, msg)
        state = await _stack_of(request, ctx, token, Scope.PROVISION)
        if state.status is not ResourceStatus.ACTIVE:
            msg = f"The stack is {state.status.value}; it can be controlled once it is active."
            raise SpinupError(ErrorCode.STACK_BUSY, msg, retryable=True)
        if wanted is StackAction.REDEPLOY and request.headers.get("content-type", "").startswith(
            "multipart/form-data"
        ):
            await _redeploy_upload(request, ctx, state)
        command = ControlStack(
            command_id=uuid.uuid4(),
            correlation_id=request_id_of(request.scope),
            deadline=time.time() + STACK_CONTROL.timeout,
            resource_id=state.resource_id,
            action=wanted,
        )
        reply = await ctx.bus.request(STACK_CONTROL, command)
        return StackControlledView(
            id=reply.resource_id,
            action=wanted.value,
            status=reply.status,
            revision=reply.revision,
            status_url=f"{ctx.settings.public_url}/resources/{token}",
        )

    return post(
        "/stacks/{token:str}/{action:str}",
        status_code=200,
        request_max_body_size=max_body_bytes,
        summary="Stop, start, restart or redeploy a stack",
        description="`stop` stops its containers (the backing resources and their data stay),"
        " `start` starts them again, `restart` both, `redeploy` builds and starts a new revision"
        " from the stored upload, or from a new one sent as multipart/form-data like"
        " POST /stacks/new (same backing resources). A redeploy answers `building`: follow the"
        " status URL. 409 `stack_busy` while another deploy of the stack runs.",
        tags=["stacks"],
    )(control_stack)


# -- the public URLs ---------------------------------------------------------------------------


async def _upstream(ctx: GatewayContext, stack_id: uuid.UUID, service: str) -> str:
    """``http://host:port`` where the stack's running service listens, or the right error."""
    state = await ctx.resources.by_id(stack_id)
    if state is None or state.kind is not ResourceKind.STACK or state.is_gone:
        msg = "No stack has this id (or it was deleted)."
        raise SpinupError(ErrorCode.NOT_FOUND, msg)
    view = StackView.fold(entry.event for entry in await ctx.store.load(resource_stream(stack_id)))
    running = view.services.get(service)
    if running is None and view.services:
        msg = f"The stack has no service {service!r}; it has {', '.join(sorted(view.services))}."
        raise SpinupError(ErrorCode.NOT_FOUND, msg)
    if running is None or running.status is not ServiceStatus.RUNNING:
        status = running.status.value if running else view.status.value
        msg = (
            f"The service {service!r} is not running (stack {view.status.value}, service"
            f" {status}). GET /resources/{{token}} shows why; its logs say more."
        )
        raise SpinupError(ErrorCode.APP_NOT_RUNNING, msg, retryable=True)
    if running.port is None or running.host is None:
        msg = f"The service {service!r} has no `port` in its manifest: it serves nothing."
        raise SpinupError(ErrorCode.NOT_FOUND, msg)
    return f"http://{running.host}:{running.port}"


def _forwarded_headers(
    request: Request[Any, Any, Any], ctx: GatewayContext, prefix: str
) -> list[tuple[str, str]]:
    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in request.scope["headers"]
        if name.decode("latin-1").lower() not in HOP_BY_HOP_HEADERS | _FORWARDED_HEADERS
    ]
    public = httpx.URL(ctx.settings.public_url)
    headers += [
        ("Host", request.headers.get("host", public.netloc.decode())),
        ("X-Forwarded-For", client_ip(request, ctx.settings.trusted_proxies)),
        ("X-Forwarded-Proto", public.scheme),
        ("X-Forwarded-Host", request.headers.get("host", public.netloc.decode())),
        ("X-Forwarded-Prefix", prefix),
    ]
    return headers


def _proxy_handler(max_body_bytes: int) -> HTTPRouteHandler:
    async def proxy_to_app(
        request: Request[Any, Any, Any],
        ctx: GatewayContext,
        stack_id: uuid.UUID,
        service: str,
        path: str = "/",
    ) -> Response[Any]:
        prefix = f"/apps/{stack_id}/{service}"
        # The router strips a trailing slash from scope["path"]; the raw path keeps it.
        raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
        if (
            raw.decode("latin-1").split("?", 1)[0] == prefix
        ):  # relative links in the app need the trailing slash
            query = request.scope.get("query_string", b"").decode("latin-1")
            return Redirect(f"{prefix}/" + (f"?{query}" if query else ""), status_code=308)
        upstream = await _upstream(ctx, stack_id, service)
        headers = _forwarded_headers(request, ctx, prefix)
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        outgoing = ctx.stacks.http.build_request(
            request.method,
            upstream + "/" + path.lstrip("/"),
            params=request.scope.get("query_string", b"").decode("latin-1") or None,
            headers=headers,
            content=request.stream() if has_body else None,
        )
        try:
            answer = await ctx.stacks.http.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            msg = f"The service {service!r} did not answer ({type(exc).__name__}); see its logs."
            raise SpinupError(ErrorCode.APP_UNREACHABLE, msg, retryable=True) from exc
        reply_headers: dict[str, str] = {}
        for name, value in answer.headers.multi_items():
            lower = name.lower()
            if lower in HOP_BY_HOP_HEADERS:
                continue
            reply_headers[lower] = (
                f"{reply_headers[lower]}, {value}" if lower in reply_headers else value
            )
        return Stream(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers=reply_headers,
            background=BackgroundTask(answer.aclose),
        )

    return route(
        [
            "/apps/{stack_id:uuid}/{service:str}",
            "/apps/{stack_id:uuid}/{service:str}/{path:path}",
        ],
        # Every method a webhook receiver takes, for the same reason: the app decides.
        http_method=RECEIVE_METHODS,
        request_max_body_size=max_body_bytes,
        summary="A stack service's public URL",
        description="Proxied to the service's container: any method, path and body. The app"
        " sees X-Forwarded-Prefix (/apps/<id>/<service>), -For, -Proto and -Host. 503"
        " `app_not_running` while the service is not running, 502 `app_unreachable` when it"
        " does not answer.",
        tags=["stacks"],
        include_in_schema=True,
    )(proxy_to_app)


def stack_routes(plans: Plans) -> list[HTTPRouteHandler]:
    """Every stack route."""
    return [
        *create_routes(plans),
        stack_logs,
        _control_handler(largest_upload(plans)),
        _proxy_handler(largest_upload(plans)),
    ]
