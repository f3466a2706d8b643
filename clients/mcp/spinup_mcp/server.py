"""The MCP tools: each one call of the Spinup HTTP API, described for a coding agent."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import asyncpg
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.context import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import Field, ValidationError
from spinup_cli.api import CliError
from spinup_cli.main import stack_upload

from spinup_mcp.api import ApiError, SpinupApi, segment
from spinup_mcp.data import DEFAULT_ROWS, MAX_ROWS, run_sql, sql_error_body

INSTRUCTIONS = """\
Spinup gives real, isolated backing services in one call: Postgres (create_database), Redis
(create_cache), MongoDB (create_nosql), NATS JetStream (create_queue), S3 (create_storage) and
webhook receivers (create_webhook). Each create returns a connection_url and credentials to use
at once, and a token (spn_...) to keep: it is the key to get_resource, rotate_credentials and
delete_resource; query_database runs SQL on a Postgres database. Without SPINUP_TOKEN resources
are anonymous and are deleted at expires_at unless claimed into an account with the claim tool.
Whole apps: deploy_stack builds and runs a local directory's spinup.yaml with its own databases;
read_logs and control_stack manage it. Errors say what to do next (agent_action).
"""

_CREATE_ANSWER = (
    " Returns JSON: id, kind, token, connection_url, credentials {type, ...}, tier, limits"
    " {..., expires_in}, expires_at, claim_url, note. KEEP the token (spn_...): it is shown"
    " only in this answer and is what get_resource, rotate_credentials and delete_resource"
    " take; store it next to the connection string (e.g. as a comment in .env)."
    " Without SPINUP_TOKEN the resource is anonymous: it expires at expires_at (24 hours on the"
    " shipped plans) and is deleted with its data unless claimed into an account (claim tool,"
    " with claim_url). With SPINUP_TOKEN it belongs to that account and does not expire."
    " Caps and sizes come from the plan (get_plans)."
)

ResourceName = Annotated[
    str | None,
    Field(
        description="Optional label shown in listings (1-64 characters: letters, digits,"
        " space and _ . : / @ -, not starting or ending with a space).",
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Field(
        description="Optional. Send the same key again (e.g. after a timeout) to get the same"
        " resource back instead of a second one; the retry must repeat the other arguments"
        " (another name with the same key is refused: idempotency_key_mismatch). 1-255 visible"
        " ASCII characters; a UUID is ideal.",
    ),
]
TokenOrId = Annotated[
    str,
    Field(
        description="The resource's token (spn_...) from its create answer; or its id when"
        " SPINUP_TOKEN is the account that owns it.",
    ),
]
BackingResource = Annotated[
    str | None,
    Field(
        description="When resource is a stack: one of its backing resources, by its name in the"
        " manifest (e.g. db); a stack's resources have no tokens of their own.",
    ),
]

_READS = ToolAnnotations(read_only_hint=True, open_world_hint=True)
#: How each kind's export is loaded back (docs/adr/0030); a stack has none.
_EXPORT_RESTORE = {
    "postgres": (
        "custom: pg_restore (18 or later) --no-owner --no-acl -d NEW_URL FILE;"
        " sql: psql NEW_URL -f FILE"
    ),
    "redis": "one JSON line per key (base64 key and values, type, ttl_ms): write each back",
    "mongo": "tar of <collection>.json: mongoimport --uri NEW_URL -c NAME --file NAME.json",
    "s3": "tar of the objects at their keys: upload each (.spinup-metadata.jsonl has metadata)",
    "nats": "JSON lines: each stream's config, then its messages (base64 data) to republish",
    "webhook": "JSON lines: the captured requests, as GET /webhook/{token}/requests shows them",
}
_CREATES = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
)


@dataclass(frozen=True, slots=True)
class KindTool:
    """One create tool: ``POST /<path>/new``, and what to tell the agent about the result."""

    name: str
    path: str
    title: str
    what: str


KIND_TOOLS = [
    KindTool(
        "create_database",
        "db",
        "Create a Postgres database",
        "Creates a real Postgres database with a login role that owns it. connection_url is a"
        " postgresql:// URL for any driver (psql, psycopg, asyncpg, Prisma, SQLAlchemy);"
        " credentials also has host, port, database, username, password.",
    ),
    KindTool(
        "create_cache",
        "cache",
        "Create a Redis cache",
        "Creates a Redis ACL user on a shared Redis. connection_url is a redis:// URL; every key"
        " and pub/sub channel MUST start with credentials.key_prefix, other keys are refused."
        " redis-py's Lock works; EVAL, SCRIPT LOAD (BullMQ, Lua rate limiters), SCAN, KEYS, INFO"
        " and DBSIZE are refused: keep a set of your keys instead of scanning.",
    ),
    KindTool(
        "create_nosql",
        "nosql",
        "Create a MongoDB database",
        "Creates a MongoDB database and a user with readWrite on it only. connection_url is a"
        " mongodb:// URL (with authSource) for any MongoDB driver.",
    ),
    KindTool(
        "create_queue",
        "queue",
        "Create a NATS JetStream account",
        "Creates a NATS account of its own with JetStream enabled. connection_url is a nats://"
        " URL; authenticate with credentials.creds (the text of a standard .creds file; also"
        " user_jwt and user_seed). Streams and KV buckets need no max_bytes (together they"
        " stop at the account's storage).",
    ),
    KindTool(
        "create_storage",
        "storage",
        "Create an S3 bucket",
        "Creates an S3 bucket and an access key that can use only that bucket. credentials has"
        " endpoint, region, bucket, access_key, secret_key and s3_url; connection_url is null."
        " Use path-style addressing with the endpoint.",
    ),
    KindTool(
        "create_webhook",
        "webhook",
        "Create a webhook receiver",
        "Creates a webhook receiver: credentials.receive_url accepts any HTTP method and records"
        " each request (method, path, query, headers, body). Read them back with"
        " read_webhook_requests and the token. The receive_url does not contain the token, so it"
        " is safe to give to the sender.",
    ),
]


def _ok(body: dict[str, Any]) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(body, indent=2))],
        structured_content=body,
    )


def _error(error: ApiError) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=str(error))],
        structured_content=error.body,
        is_error=True,
    )


async def _answer(call: Awaitable[dict[str, Any]]) -> CallToolResult:
    """The API's answer as a tool result; its errors as error results the agent can act on."""
    try:
        return _ok(await call)
    except ApiError as error:
        return _error(error)


def _refused(code: str, text: str) -> CallToolResult:
    """An error result the tool itself gives, shaped as the API's errors are."""
    return _error(ApiError(text, {"ok": False, "error": code, "message": text}))


def _backing_of(shown: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A stack's backing resources by name, as ``GET /resources/{token}`` shows them."""
    resources: dict[str, dict[str, Any]] = (shown.get("stack") or {}).get("resources") or {}
    return resources


def _named_backing(shown: dict[str, Any], name: str | None) -> dict[str, Any] | CallToolResult:
    """What ``backing_resource`` names: the resource itself when None, else one of a stack's."""
    if name is None:
        return shown
    backing = _backing_of(shown)
    if name not in backing:
        text = f"This is not a stack with a backing resource {name!r}; it has {sorted(backing)}."
        return _refused("not_found", text)
    return backing[name]


def _needs_account(api: SpinupApi, what: str) -> CallToolResult | None:
    """An error result when no account token is configured, else None."""
    if api.token:
        return None
    text = (
        f"{what} needs an account, and this MCP server has no SPINUP_TOKEN.\nWhat to do: the user"
        " registers (POST /auth/register) or logs in (POST /auth/login) at the Spinup API,"
        " creates an access token (POST /auth/tokens) and sets it as SPINUP_TOKEN in this MCP"
        " server's configuration. Until then, manage each resource with its own token."
    )
    return _refused("unauthorized", text)


def _create_tool(
    api: SpinupApi, kind: KindTool
) -> Callable[[str | None, str | None], Awaitable[CallToolResult]]:
    async def create(
        name: ResourceName = None, idempotency_key: IdempotencyKey = None
    ) -> CallToolResult:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        body = {"name": name} if name else None
        return await _answer(api.call("POST", f"/{kind.path}/new", json=body, headers=headers))

    create.__name__ = kind.name
    return create


_ToolT = TypeVar("_ToolT", bound=Callable[..., Awaitable[CallToolResult]])


def _tool(
    server: MCPServer, *, title: str, annotations: ToolAnnotations
) -> Callable[[_ToolT], _ToolT]:
    """Register a tool whose docstring, without its indentation, is the description."""

    def register(fn: _ToolT) -> _ToolT:
        server.add_tool(
            fn,
            title=title,
            description=inspect.cleandoc(fn.__doc__ or ""),
            annotations=annotations,
            structured_output=False,
        )
        return fn

    return register


class SpinupMCPServer(MCPServer):
    """The MCP server, answering wrong tool arguments in words an agent can act on.

    The SDK answers them with pydantic's own text (``1 validation error for ...Arguments``,
    ``Field required [type=missing, input_value=...]``), which names neither the tool's
    arguments nor what they take.
    """

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        """Call the tool; a validation failure becomes one clear sentence per problem."""
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            tool = self._tool_manager.get_tool(name)
            if tool is None or not isinstance(exc.__cause__, ValidationError):
                raise
            raise ToolError(
                wrong_arguments(name, tool.parameters, arguments, exc.__cause__)
            ) from exc


def wrong_arguments(
    name: str, schema: dict[str, Any], arguments: dict[str, Any], error: ValidationError
) -> str:
    """What was wrong with a tool call's arguments, and what the tool takes."""
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    problems = [
        f"`{argument}` is not an argument of {name}"
        for argument in sorted(set(arguments) - set(properties))
    ]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "arguments"
        if item["type"] == "missing":
            problems.append(f"`{field}` is required")
        else:
            # pydantic's msg says the rule ("Input should be greater than or equal to 1"); the
            # rejected value is the caller's own and stays out of the answer.
            problems.append(f"`{field}`: {item['msg'].replace('Input should', 'it should')}")
    takes = "; ".join(
        f"`{arg}`{' (required)' if arg in required else ''}: {spec.get('description', '')}"
        for arg, spec in properties.items()
    )
    listed = takes or "no arguments"
    return f"Wrong arguments for {name}: {', '.join(problems)}. It takes: {listed}."


def build_server(api: SpinupApi) -> MCPServer:
    """The MCP server with every tool, each calling the API at ``api``."""
    server = SpinupMCPServer(
        "spinup",
        title="Spinup",
        instructions=INSTRUCTIONS,
        version=version("spinup"),
    )
    _add_create_tools(server, api)
    _add_resource_tools(server, api)
    _add_export_tool(server, api)
    _add_data_tools(server, api)
    _add_account_tools(server, api)
    _add_stack_tools(server, api)
    _add_webhook_tools(server, api)
    return server


def _add_create_tools(server: MCPServer, api: SpinupApi) -> None:
    for kind in KIND_TOOLS:
        server.add_tool(
            _create_tool(api, kind),
            name=kind.name,
            title=kind.title,
            description=kind.what + _CREATE_ANSWER,
            annotations=_CREATES,
            structured_output=False,
        )


def _add_resource_tools(server: MCPServer, api: SpinupApi) -> None:
    @_tool(
        server,
        title="List the account's resources",
        annotations=_READS,
    )
    async def list_resources(
        kind: Annotated[
            str | None,
            Field(description="Only this kind: postgres, redis, mongo, nats, s3 or webhook."),
        ] = None,
    ) -> CallToolResult:
        """Lists every resource of the account SPINUP_TOKEN belongs to (needs SPINUP_TOKEN).

        Returns JSON {resources: [...]}, oldest first; each has id, kind, status, tier, name,
        limits, usage {bytes, quota_bytes, over_quota, note}, created_at, expires_at, claimed,
        connection_url and credentials. Anonymous resources are not listed: they are reached
        only through their own tokens (get_resource).
        """
        if (refused := _needs_account(api, "Listing resources")) is not None:
            return refused
        return await _answer(api.call("GET", "/resources", params={"kind": kind} if kind else None))

    @_tool(server, title="Show a resource", annotations=_READS)
    async def get_resource(resource: TokenOrId) -> CallToolResult:
        """Shows one resource: its status, limits, usage, expiry and current credentials.

        Returns JSON: id, kind, status (active, ...), tier, name, limits {..., expires_in},
        usage {bytes, quota_bytes, measured_at, over_quota, note}, created_at, expires_at,
        claimed, connection_url and credentials (only while active). When usage.over_quota is
        true the server refuses writes until data is deleted; usage.note says how. A deleted
        resource is a not_found error, an expired one resource_gone.
        """
        return await _answer(api.call("GET", f"/resources/{segment(resource)}"))

    @_tool(
        server,
        title="Delete a resource",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True
        ),
    )
    async def delete_resource(resource: TokenOrId) -> CallToolResult:
        """Deletes a resource now, with all its data; this cannot be undone.

        Open connections are cut and its credentials stop working at once. Returns JSON
        {id, status: "deleted"}. Deleting frees a place under the plan's cap on live resources
        of that kind.
        """
        return await _answer(api.call("DELETE", f"/resources/{segment(resource)}"))

    @_tool(
        server,
        title="Rotate a resource's credentials",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True
        ),
    )
    async def rotate_credentials(resource: TokenOrId) -> CallToolResult:
        """Issues new credentials for a resource; the old ones stop working before this returns.

        Returns JSON: id, kind, connection_url, credentials, note. Update every place that
        holds the old connection string (e.g. .env). The resource's token does not change; its
        data stays.
        """
        return await _answer(api.call("POST", f"/resources/{segment(resource)}/rotate"))

    @_tool(server, title="Fork a Postgres database", annotations=_CREATES)
    async def fork_resource(
        resource: TokenOrId, name: ResourceName = None, idempotency_key: IdempotencyKey = None
    ) -> CallToolResult:
        """Makes a new Postgres database holding a copy of this one's data, with its own login.

        Try a migration or a risky change on the copy and keep the original. Only Postgres
        databases (create_database) can be forked. The source is only read: its connections
        keep working. The fork counts as a create for the caller (caps, rate limits, the plan
        of SPINUP_TOKEN or anonymous) and lives on its own from then on: writes to either never
        reach the other. Returns JSON as create_database does (id, token, connection_url,
        credentials, tier, limits, expires_at, claim_url, note) plus forked_from (the source's
        id). KEEP the new token: it is shown only here.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        body = {"name": name} if name else None
        path = f"/resources/{segment(resource)}/fork"
        return await _answer(api.call("POST", path, json=body, headers=headers))

    @_tool(server, title="Read a webhook's requests", annotations=_READS)
    async def read_webhook_requests(
        resource: Annotated[
            str, Field(description="The webhook receiver's token (spn_...) from create_webhook.")
        ],
        limit: Annotated[
            int | None,
            Field(ge=1, description="At most this many requests, newest first."),
        ] = None,
    ) -> CallToolResult:
        """Reads the requests a webhook receiver (create_webhook) has captured, newest first.

        Returns JSON {id, count, requests_kept, requests: [...]}; each request has id,
        received_at, method, path (after the receive_url), query, query_params, headers,
        body, body_encoding ("utf-8", or "base64" for binary bodies), size and client_ip. The
        receiver keeps only the newest requests_kept requests.
        """
        params = {"limit": limit} if limit else None
        return await _answer(
            api.call("GET", f"/webhook/{segment(resource)}/requests", params=params)
        )


def _add_export_tool(server: MCPServer, api: SpinupApi) -> None:
    @_tool(server, title="Export a resource's data", annotations=_READS)
    async def export_resource(
        resource: TokenOrId,
        format: Annotated[  # noqa: A002  (the API's own query parameter name)
            str | None,
            Field(
                description="postgres: custom (default) or sql; redis, queue, webhook: jsonl;"
                " nosql, storage: tar. Leave out for the kind's default."
            ),
        ] = None,
        backing_resource: BackingResource = None,
    ) -> CallToolResult:
        """How to download a complete copy of a resource's data (a file too large for a reply).

        Returns JSON: url, format, kind, size_hint_bytes (last measured usage, may be null),
        curl (a command that saves the file), restore (how the kind's own tools load it) and
        note. Works after expiry too while the data is kept (GET /resources/{token} then says
        until when). A stack's backing resources are exported one at a time with the stack's
        token (backing_resource). Each download counts against the plan's export.per_hour:
        download once.
        """
        kind: str | None = None
        size: int | None = None
        try:
            shown = await api.call("GET", f"/resources/{segment(resource)}")
        except ApiError as error:
            # Expired but kept for its grace: GET says so (410 whose agent_action is export).
            if "/export" not in str(error.body.get("agent_action") or ""):
                return _error(error)
        else:
            target = _named_backing(shown, backing_resource)
            if isinstance(target, CallToolResult):
                return target
            kind = str(target.get("kind"))
            size = (target.get("usage") or {}).get("bytes")
            if kind not in _EXPORT_RESTORE:
                note = f"A {kind} is exported one backing resource at a time: set backing_resource"
                return _ok({"ok": False, "note": f"{note} to one of {sorted(_backing_of(shown))}."})
        params = {"format": format, "resource": backing_resource}
        query = "&".join(f"{name}={segment(value)}" for name, value in params.items() if value)
        query = f"?{query}" if query else ""
        url = f"{api.base_url}/resources/{segment(resource)}/export{query}"
        auth = "" if resource.startswith("spn_") else ' -H "Authorization: Bearer $SPINUP_TOKEN"'
        return _ok(
            {
                "url": url,
                "format": format or "default",
                "kind": kind,
                "size_hint_bytes": size,
                "curl": f'curl -fSL --remote-header-name -O "{url}"{auth}',
                "restore": _EXPORT_RESTORE.get(kind or "", "see GET /llms.txt, Export"),
                "note": "Run the curl command to save the file; `spinup export TOKEN -o FILE`"
                " does the same.",
            }
        )


def _add_data_tools(server: MCPServer, api: SpinupApi) -> None:
    @_tool(
        server,
        title="Run SQL on a Postgres database",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True
        ),
    )
    async def query_database(
        resource: TokenOrId,
        sql: Annotated[
            str,
            Field(
                min_length=1,
                description="One statement (its rows come back), or several separated by ;"
                " (run as one script; only the last status comes back).",
            ),
        ],
        max_rows: Annotated[
            int,
            Field(ge=1, le=MAX_ROWS, description=f"Rows returned at most (1-{MAX_ROWS})."),
        ] = DEFAULT_ROWS,
        backing_resource: BackingResource = None,
    ) -> CallToolResult:
        """Runs SQL on a Postgres database with the database's own credentials.

        For an agent without psql: create tables, insert, select. Returns JSON: status (e.g.
        "SELECT 3", "INSERT 0 1"), columns, rows (lists in column order; bytea as hex the way
        psql shows it, numeric, times and UUIDs as text), row_count and truncated (more rows
        than max_rows).
        A refusal comes back as an error with Postgres's message, sqlstate, detail, hint and
        position. The plan's limits apply as for any client (statement timeout, quota). A
        stack's database is named by the stack's token and backing_resource.
        """
        try:
            shown = await api.call("GET", f"/resources/{segment(resource)}")
        except ApiError as error:
            return _error(error)
        target = _named_backing(shown, backing_resource)
        if isinstance(target, CallToolResult):
            return target
        if target.get("kind") != "postgres" or not target.get("connection_url"):
            text = f"query_database runs on Postgres databases; this is a {target.get('kind')}."
            return _refused("invalid_request", text)
        try:
            result = await run_sql(target["connection_url"], sql, max_rows=max_rows)
        except asyncpg.PostgresError as exc:
            body = sql_error_body(exc)
            return _error(ApiError(body["message"], body))
        except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
            text = f"The database did not answer ({type(exc).__name__}: {exc}); try again."
            return _refused("unreachable", text)
        return _ok(result)


def _add_account_tools(server: MCPServer, api: SpinupApi) -> None:
    @_tool(
        server,
        title="Claim anonymous resources into the account",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True
        ),
    )
    async def claim(
        claim_url: Annotated[
            str,
            Field(
                description="The claim_url of an anonymous create answer (or just its t parameter)."
            ),
        ],
    ) -> CallToolResult:
        """Moves anonymous resources into the account of SPINUP_TOKEN, so they stop expiring.

        A claim_url names the unclaimed anonymous resources made from the same network up to
        the moment it was issued. After the claim they have no expiry, get the account plan's
        limits, and keep their connection URLs, credentials and tokens. Returns JSON {claim_id,
        account_id, resources: [{id, kind, name, tier, limits, expires_at}], note}. A claim
        link works once. Needs SPINUP_TOKEN.
        """
        if (refused := _needs_account(api, "Claiming")) is not None:
            return refused
        return await _answer(api.call("POST", "/claim", json={"token": claim_url}))

    @_tool(server, title="Show the plans", annotations=_READS)
    async def get_plans() -> CallToolResult:
        """Shows every plan tier: resource lifetime, caps, rate limit and each kind's limits.

        ttl_seconds is how long a resource lives (null: permanent). Returns JSON
        {anonymous_tier, tiers: {<name>: {ttl_seconds, caps {active_per_kind,
        provisions_per_day}, rate_limit {provisions_per_minute}, postgres {...}, redis {...},
        ...}}}. anonymous_tier is the tier of resources made without SPINUP_TOKEN.
        """
        return await _answer(api.call("GET", "/plans"))


StackAction = Annotated[
    Literal["stop", "start", "restart", "redeploy"],
    Field(
        description="stop: containers stopped, data kept; start: started again; restart: stop"
        " then start; redeploy: build again from the stored upload (a new revision)."
    ),
]


def _pack(directory: str) -> dict[str, tuple[str, bytes]]:
    """The upload of the app in ``directory``, packed as ``spinup deploy`` packs it."""
    return stack_upload(Path(directory).expanduser())


def _add_stack_tools(server: MCPServer, api: SpinupApi) -> None:
    @_tool(server, title="Deploy an app (stack)", annotations=_CREATES)
    async def deploy_stack(
        directory: Annotated[
            str,
            Field(
                description="A local directory holding spinup.yaml and, for each service's"
                " `build:`, that tarball or a directory of that name (or named after the"
                " service) with a Dockerfile."
            ),
        ],
    ) -> CallToolResult:
        """Deploys a multi-service app from a local directory: builds, runs, serves it.

        spinup.yaml lists `services` (build or image, port, env, command, depends_on, limits)
        and `resources` (postgres, redis, mongo, nats, s3), whose credentials reach every
        container as DATABASE_URL, REDIS_URL, MONGODB_URL, NATS_URL, S3_*. Dockerfiles build
        FROM spinup/base:bookworm (nothing is pulled). Returns JSON: id, token, status
        ("building"), status_url, urls {service: public URL}, resources, expires_at, claim_url.
        Building goes on after the answer: poll get_resource until stack.status is running or
        failed (then stack.failure and stack.logs_tail say why), and read_logs for the output.
        """
        try:
            files = await asyncio.to_thread(_pack, directory)
        except CliError as exc:
            text = f"{exc}\nWhat to do: fix the directory, then call deploy_stack again."
            return _error(
                ApiError(text, {"ok": False, "error": "invalid_request", "message": text})
            )
        return await _answer(api.call("POST", "/stacks/new", files=files))

    @_tool(server, title="Read a stack's logs", annotations=_READS)
    async def read_logs(resource: TokenOrId) -> CallToolResult:
        """Reads a stack's build and container logs stored so far, oldest first.

        Returns JSON {events: [{event: "log", data: {at, source, line}}, ...]}; source is
        "deploy", "build:<service>" or the service name. Only stacks have logs.
        """
        return await _answer(api.call("GET", f"/resources/{segment(resource)}/logs"))

    @_tool(
        server,
        title="Stop, start, restart or redeploy a stack",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True
        ),
    )
    async def control_stack(resource: TokenOrId, action: StackAction) -> CallToolResult:
        """Stops, starts, restarts or redeploys a stack; backing resources and data stay.

        Returns JSON {id, status, revision}. A stack that is still building answers stack_busy:
        wait until get_resource shows running or failed, then try again.
        """
        return await _answer(api.call("POST", f"/stacks/{segment(resource)}/{action}"))


WebhookToken = Annotated[
    str, Field(description="The webhook receiver's token (spn_...) from create_webhook.")
]
VerifyScheme = Annotated[
    Literal["stripe", "github", "slack", "shopify", "standard-webhooks", "off"],
    Field(
        description="The provider's signing scheme (standard-webhooks: webhook-id,"
        " webhook-timestamp and webhook-signature headers); off stops checking."
    ),
]


def _add_webhook_tools(server: MCPServer, api: SpinupApi) -> None:
    @_tool(server, title="Find a webhook's requests", annotations=_READS)
    async def find_webhook_requests(  # noqa: PLR0917  (one argument per filter)
        resource: WebhookToken,
        method: Annotated[
            str | None, Field(description="Only these methods, e.g. POST or POST,PUT.")
        ] = None,
        path_prefix: Annotated[
            str | None,
            Field(description="Only paths (after the receive_url) starting so, e.g. /stripe."),
        ] = None,
        header: Annotated[
            str | None,
            Field(
                description="Only requests with a header line `name: value` containing this"
                " (any case), e.g. 'x-github-event: push' or 'stripe-signature'."
            ),
        ] = None,
        body: Annotated[
            str | None, Field(description="Only bodies containing this, e.g. invoice.paid.")
        ] = None,
        since: Annotated[
            str | None, Field(description="Received at or after this ISO 8601 time.")
        ] = None,
        until: Annotated[
            str | None, Field(description="Received before this ISO 8601 time.")
        ] = None,
        limit: Annotated[
            int | None, Field(ge=1, description="At most this many in this page.")
        ] = None,
        cursor: Annotated[
            str | None,
            Field(description="next_cursor of the previous page, for the older requests."),
        ] = None,
    ) -> CallToolResult:
        """Finds captured requests of a webhook receiver, newest first, a page at a time.

        All filters given must hold. Returns JSON {id, count, requests_kept, requests: [...],
        next_cursor, latest_cursor}; each request has id, seq, received_at, method, path,
        query, query_params, headers, body, body_encoding ("utf-8", or "base64" for binary),
        size, client_ip and signature (valid|invalid|missing with a reason, once
        set_webhook_verification is set). While next_cursor is not null, call again with it as
        cursor (a page may be short). To re-send a request to local code, the user runs
        `spinup webhook replay TOKEN ID --to URL` (or `spinup webhook forward TOKEN URL` for all
        of them, live): the server never sends captured requests anywhere itself.
        """
        given = {
            "method": method,
            "path_prefix": path_prefix,
            "header": header,
            "body": body,
            "since": since,
            "until": until,
            "limit": limit,
            "cursor": cursor,
        }
        params = {name: value for name, value in given.items() if value is not None}
        path = f"/webhook/{segment(resource)}/requests"
        return await _answer(api.call("GET", path, params=params or None))

    @_tool(
        server,
        title="Set what a webhook answers",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True
        ),
    )
    async def set_webhook_response(  # noqa: PLR0917  (one argument per field)
        resource: WebhookToken,
        status: Annotated[int, Field(ge=200, le=599, description="HTTP status.")] = 200,
        headers: Annotated[
            dict[str, str] | None,
            Field(description='Response headers, e.g. {"Content-Type": "application/json"}.'),
        ] = None,
        body: Annotated[str, Field(description="Response body (text).")] = "",
        delay_ms: Annotated[
            int, Field(ge=0, description="Wait this long before answering (plan-bounded).")
        ] = 0,
        reset: Annotated[
            bool, Field(description="True: answer the default {ok, id} again (others ignored).")
        ] = False,
    ) -> CallToolResult:
        """Sets what the receive_url answers from the next request on, like the real endpoint.

        E.g. a provider that retries unless it gets 2xx, or expects a JSON acknowledgement.
        Requests are still captured. Headers may not be hop-by-hop, Content-Length or
        Set-Cookie; the body is at most the plan's max_body_kb and delay_ms at most its
        response_delay_ms_max (get_plans). Returns JSON {id, custom, response}.
        """
        path = f"/webhook/{segment(resource)}/response"
        if reset:
            return await _answer(api.call("DELETE", path))
        response = {"status": status, "headers": headers or {}, "body": body, "delay_ms": delay_ms}
        return await _answer(api.call("PUT", path, json=response))

    @_tool(
        server,
        title="Check a webhook's signatures",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True
        ),
    )
    async def set_webhook_verification(
        resource: WebhookToken,
        scheme: VerifyScheme,
        secret: Annotated[
            str | None,
            Field(
                description="The provider's signing secret (e.g. whsec_... for Stripe); needed"
                " unless scheme is off. Stored sealed, never shown again."
            ),
        ] = None,
        tolerance_s: Annotated[
            int | None,
            Field(ge=1, description="Accepted timestamp age; the provider's default otherwise."),
        ] = None,
    ) -> CallToolResult:
        """Checks the signature of every request received from now on, as the provider signs.

        Requests read back (find_webhook_requests) then carry signature {status: valid |
        invalid | missing, reason: signature_mismatch (wrong secret or changed body) |
        timestamp_outside_tolerance | malformed_header}. Returns JSON {id, scheme,
        tolerance_s, since}; scheme off stops checking (scheme null).
        """
        path = f"/webhook/{segment(resource)}/verify"
        if scheme == "off":
            return await _answer(api.call("DELETE", path))
        if not secret:
            text = "set_webhook_verification needs the provider's secret unless scheme is off."
            return _error(
                ApiError(text, {"ok": False, "error": "invalid_request", "message": text})
            )
        verify: dict[str, Any] = {"scheme": scheme, "secret": secret}
        if tolerance_s is not None:
            verify["tolerance_s"] = tolerance_s
        return await _answer(api.call("PUT", path, json=verify))
