"""Neon-compatible claimable Postgres API (`/api/v1/database`), the same pipeline as /db/new.

What Neon's "Claimable Postgres" (neon.new, the ``get-db``/``neon-new`` CLI and SDK) clients send
works here unchanged:

- ``POST /api/v1/database {"ref": …}``: a new database with an id chosen here.
- ``POST /api/v1/database/{uuid}?referrer=…``: the id chosen by the client, as the CLI does
  (it then reads the connection string with the GET). The same id again returns the same
  database (200 instead of 201).
- ``GET /api/v1/database/{id}``: ``id, status, neon_project_id, connection_string, claim_url,
  expires_at, created_at, updated_at``. Once claimed, ``connection_string`` is null, as Neon
  does: the owner reads it with Authorization through ``/resources``.

Like Neon's, these routes are anonymous: an ``Authorization`` header is not read, and every
database is made on the anonymous tier by the same recipe as ``/db/new``
(``resources.routes.provision``: admission, rate limits and caps included).

**The database id is its only key.** Whoever knows it reads the connection string, exactly as
on Neon. So:

- Our resource id is derived from it (UUIDv5 under a fixed namespace), never equal to it.
  Resource ids are not secrets here (the claim preview lists them, connection strings name
  them); were the Neon id the resource id, a client could ``POST`` or ``GET`` any resource's
  id and read its credentials. A derived id cannot be inverted, so only databases made through
  this API, and only by the id they were made with, can be read here.
- A client-chosen id must be a random UUID (version 4 or 7, what ``crypto.randomUUID()`` and
  Neon make). A hand-picked one (nil, version 1/3/5, not a UUID, or one of few distinct digits
  such as ``00000000-0000-4000-8000-000000000000``) is refused: anyone could guess it. A random
  version 4 id has fewer than ``_MIN_DISTINCT_DIGITS`` distinct hex digits about once in 3·10¹¹;
  a patterned id with more (``12345678-…``) is not caught.
- The claim URL in these answers names this one database only (a claim token with ``rid``),
  not every anonymous resource of the caller's network: anyone given the id must not be able
  to claim the creator's other resources.

Deliberate differences from Neon's documented errors: a malformed body or a wrong parameter
type is a 400 here (Neon answers 500 "Failed to create the database."), since a 5xx tells a
client to retry what can never succeed; and ``enable_logical_replication: true`` is refused
(400): logical replication needs the REPLICATION role attribute, which on a shared Postgres
would also let a tenant stream the whole cluster's WAL, every other tenant's data included.
Saying so beats a database whose first ``CREATE_REPLICATION_SLOT`` fails.

Error bodies take Neon's shape, ``{"error": <message>, "hint": …}``, plus this platform's
stable ``code`` and ``request_id``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.types import ExceptionHandlersMap

from gateway.admission.clients import client_ip
from gateway.claims.routes import claim_url
from gateway.context import GatewayContext
from gateway.errors import error_response, error_responses
from gateway.resources.routes import open_credentials, provision
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.events import ClaimCompleted, ClaimStarted
from shared.contracts.kinds import ResourceKind, ResourceStatus, connection_url_of
from shared.crypto.tokens import fingerprint
from shared.eventlog.errors import platform_errors
from shared.naming import tenant_name

if TYPE_CHECKING:
    from shared.resources import ResourceState

# Fixed namespace: the same database id maps to the same resource on every replica, forever.
NEON_NAMESPACE = uuid.UUID("0b9e6c4d-71a2-4f3e-8c5b-d2a4e6f81937")
# Random UUIDs only: v4 is random, v7 is a timestamp plus 74 random bits.
_RANDOM_UUID_VERSIONS = {4, 7}
#: Fewer distinct hex digits than this in an id means it was made by hand, not drawn.
_MIN_DISTINCT_DIGITS = 6
_MAX_REF_LENGTH = 255
_NAME_LENGTH = 64  # the longest resource name /db/new accepts
_empty_body = {b"", b"null"}


class NeonStatus(StrEnum):
    """Neon's claim states."""

    UNCLAIMED = "UNCLAIMED"
    CLAIMING = "CLAIMING"
    CLAIMED = "CLAIMED"


class NeonDatabase(msgspec.Struct, frozen=True, kw_only=True):
    """A database as Neon's ``/api/v1/database`` describes it."""

    id: str
    status: str
    neon_project_id: str
    connection_string: str | None
    claim_url: str | None
    expires_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None


class NeonCreate(msgspec.Struct, frozen=True, kw_only=True):
    """Body of the create routes; unknown fields are ignored, as Neon's clients expect."""

    ref: str | None = None
    enable_logical_replication: bool = False


class NeonError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Neon's error shape, with this platform's stable code and request id."""

    error: str
    code: str
    request_id: str
    hint: str | None = None


def neon_error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[NeonError]:
    """The app's error handling (status, headers, logging), rendered in Neon's shape."""
    standard = error_response(request, exc)
    body = standard.content
    return Response(
        NeonError(
            error=body.message,
            code=body.error,
            request_id=body.request_id,
            hint=body.agent_action,
        ),
        status_code=standard.status_code,
        headers=dict(standard.headers.items()),
    )


_NEON_ERRORS: ExceptionHandlersMap = {Exception: neon_error_response}
_NEON_ERROR_RESPONSES = error_responses(NeonError)


def _database_not_found(raw_id: str) -> SpinupError:
    return SpinupError(
        ErrorCode.NOT_FOUND,
        "Database not found",
        agent_action=f"No database has the id {raw_id!r}: use the id a create call returned.",
    )


def _parse_id(raw_id: str, *, chosen_by_client: bool) -> uuid.UUID:
    """The database id in the path; 400 "Database not found" when it is not one (as Neon)."""
    try:
        parsed = uuid.UUID(raw_id)
    except ValueError:
        parsed = None
    if (
        parsed is None
        or parsed.version not in _RANDOM_UUID_VERSIONS
        or len(set(parsed.hex)) < _MIN_DISTINCT_DIGITS
    ):
        hint = (
            "Choose the id with a random UUID generator (version 4 or 7, e.g."
            " crypto.randomUUID()): it is the only key to the database, so it must be unguessable."
            if chosen_by_client
            else "Database ids are UUIDs, as a create call returned them."
        )
        raise SpinupError(ErrorCode.INVALID_REQUEST, "Database not found", agent_action=hint)
    return parsed


def resource_id_of(database_id: uuid.UUID) -> uuid.UUID:
    """The resource behind a Neon database id (one-way: a resource id gives no database id)."""
    return uuid.uuid5(NEON_NAMESPACE, f"resource|{database_id}")


def _command_id_of(database_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(NEON_NAMESPACE, f"command|{database_id}")


async def _referrer(request: Request[Any, Any, Any]) -> str:
    """The checked ``ref`` from the body, or ``?referrer=`` as the CLI sends it."""
    raw = (await request.body()).strip()
    try:
        options = NeonCreate() if raw in _empty_body else msgspec.json.decode(raw, type=NeonCreate)
    except msgspec.DecodeError as exc:
        msg = f"The request body is not valid JSON or has a field of the wrong type: {exc}"
        hint = 'Send a JSON object such as {"ref": "your-app-name"}.'
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg, agent_action=hint) from exc
    ref = (options.ref or request.query_params.get("referrer") or "").strip()
    if not ref:
        hint = (
            'Send {"ref": "your-app-name"} in the JSON body (or ?referrer=your-app-name):'
            " ref names the app or tool that creates the database."
        )
        raise SpinupError(ErrorCode.INVALID_REQUEST, "Missing referrer", agent_action=hint)
    if len(ref) > _MAX_REF_LENGTH or not ref.isprintable():
        msg = f"ref must be at most {_MAX_REF_LENGTH} printable characters."
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    if options.enable_logical_replication:
        msg = "Logical replication is not available on this platform."
        hint = (
            "Create the database without enable_logical_replication: databases share one"
            " Postgres server, and the REPLICATION privilege would expose every tenant's data."
        )
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg, agent_action=hint)
    return ref


async def _claim_in_progress(ctx: GatewayContext, resource_id: uuid.UUID) -> bool:
    """Whether a started, unfinished claim names this resource (Neon's CLAIMING).

    Claims have no read model of their own; a claim lasts a moment, so this asks the log,
    through the partial index ``events_claim_started`` (its predicate is written out here as a
    literal so every plan can use it).
    """
    async with platform_errors():
        found = await ctx.pool.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM events s WHERE s.event_type = '{ClaimStarted.__name__}'"
            " AND s.data -> 'resource_ids' ? $1 AND NOT EXISTS (SELECT 1 FROM events c"
            " WHERE c.stream_id = s.stream_id AND c.event_type = $2))",
            str(resource_id),
            ClaimCompleted.__name__,
        )
    return bool(found)


async def _describe(
    ctx: GatewayContext, database_id: uuid.UUID, state: ResourceState
) -> NeonDatabase:
    """The Neon view of a live database."""
    if state.claimed_at is not None:
        status = NeonStatus.CLAIMED
    elif await _claim_in_progress(ctx, state.resource_id):
        status = NeonStatus.CLAIMING
    else:
        status = NeonStatus.UNCLAIMED
    credentials = None if status is NeonStatus.CLAIMED else open_credentials(ctx, state)
    return NeonDatabase(
        id=str(database_id),
        status=status.value,
        neon_project_id=tenant_name(state.resource_id),
        connection_string=connection_url_of(credentials) if credentials else None,
        claim_url=(
            None
            if status is NeonStatus.CLAIMED or state.fingerprint is None
            else claim_url(ctx, state.fingerprint, resource_ids=[state.resource_id])
        ),
        expires_at=state.expires_at,
        created_at=state.created_at,
        updated_at=state.updated_at,
    )


async def _live_database(ctx: GatewayContext, database_id: uuid.UUID) -> ResourceState | None:
    """The database's resource when it exists and was made through this API."""
    state = await ctx.resources.by_id(resource_id_of(database_id))
    if state is None or state.kind is not ResourceKind.POSTGRES:
        return None
    return state


def _gone(state: ResourceState) -> SpinupError:
    when = state.expires_at.isoformat() if state.expires_at else "its expiry"
    if state.status is ResourceStatus.EXPIRED:
        msg = f"This database expired at {when} and was deleted."
    else:
        msg = "This database was deleted."
    hint = "Create a new database (with a new id)."
    return SpinupError(ErrorCode.RESOURCE_GONE, msg, agent_action=hint)


async def _create(
    request: Request[Any, Any, Any], ctx: GatewayContext, database_id: uuid.UUID
) -> Response[NeonDatabase]:
    ref = await _referrer(request)
    state = await _live_database(ctx, database_id)
    if state is not None and state.status is ResourceStatus.ACTIVE:
        return Response(await _describe(ctx, database_id, state), status_code=200)
    if state is not None and (state.is_gone or state.status is ResourceStatus.SUSPENDED):
        raise _gone(state)
    address = client_ip(request, ctx.settings.trusted_proxies)
    await provision(
        request,
        ctx,
        kind=ResourceKind.POSTGRES,
        principal=None,
        client=fingerprint(ctx.settings.token_key, address),
        ids=(_command_id_of(database_id), resource_id_of(database_id)),
        name=ref[:_NAME_LENGTH],
    )
    created = await _live_database(ctx, database_id)
    if created is None:  # pragma: no cover  (the reply is sent after the row is written)
        raise _database_not_found(str(database_id))
    return Response(await _describe(ctx, database_id, created), status_code=201)


_CREATE_DESCRIPTION = (
    "Neon-compatible (neon.new): a Postgres database without an account, on the anonymous"
    " tier, claimable with claim_url. `ref` (required) names the app or tool creating it."
    " `enable_logical_replication: true` is refused: databases share one server."
)


@post(
    "/api/v1/database",
    status_code=201,
    summary="Create a claimable database (Neon-compatible)",
    description=_CREATE_DESCRIPTION,
    tags=["neon"],
    exception_handlers=_NEON_ERRORS,
    responses=_NEON_ERROR_RESPONSES,
)
async def create_database(
    request: Request[Any, Any, Any], ctx: GatewayContext
) -> Response[NeonDatabase]:
    """``POST /api/v1/database``: a new id, chosen here."""
    return await _create(request, ctx, uuid.uuid4())


DatabaseIdParam = Parameter(description="The database id: a random UUID (version 4 or 7).")


@post(
    "/api/v1/database/{database_id:str}",
    status_code=201,
    summary="Create a claimable database with a client-chosen id (Neon-compatible)",
    description=_CREATE_DESCRIPTION + " The same id again returns the same database (200).",
    tags=["neon"],
    exception_handlers=_NEON_ERRORS,
    responses={
        **_NEON_ERROR_RESPONSES,
        200: ResponseSpec(NeonDatabase, description="The database this id already names."),
    },
)
async def create_database_with_id(
    request: Request[Any, Any, Any], ctx: GatewayContext, database_id: str = DatabaseIdParam
) -> Response[NeonDatabase]:
    """``POST /api/v1/database/{uuid}``, as the get-db CLI sends it."""
    return await _create(request, ctx, _parse_id(database_id, chosen_by_client=True))


@get(
    "/api/v1/database/{database_id:str}",
    summary="Show a claimable database (Neon-compatible)",
    description="Status UNCLAIMED, CLAIMING or CLAIMED; connection_string is null once claimed.",
    tags=["neon"],
    exception_handlers=_NEON_ERRORS,
    responses=_NEON_ERROR_RESPONSES,
)
async def show_database(ctx: GatewayContext, database_id: str = DatabaseIdParam) -> NeonDatabase:
    """``GET /api/v1/database/{id}``."""
    parsed = _parse_id(database_id, chosen_by_client=False)
    state = await _live_database(ctx, parsed)
    if state is None or state.status in {ResourceStatus.NONE, ResourceStatus.FAILED}:
        raise _database_not_found(database_id)
    if state.is_gone or state.status is ResourceStatus.DELETING:
        raise _gone(state)
    return await _describe(ctx, parsed, state)


NEON_ROUTES: list[HTTPRouteHandler] = [create_database, create_database_with_id, show_database]
