"""The OpenAPI document and its docs page: complete, served as JSON, readable offline (ADR 0026).

Litestar builds the document from the route handlers. What it cannot see is added here, in one
table: the errors each operation can actually return (by code, so the status follows the one
table in ``gateway.errors``), the ``Idempotency-Key`` header of the create routes, and the
request body of the routes that read their body themselves (multipart uploads, webhook captures,
the proxy to a stack's services). The docs page at ``/schema`` is rendered here, on the server,
from the same document: no script, stylesheet or font from anywhere else, so it works offline
and in a terminal browser; agents read ``/schema/openapi.json``.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litestar.enums import MediaType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin, YamlRenderPlugin

from shared.contracts.errors import ErrorCode
from shared.contracts.kinds import EXPORT_FORMATS

if TYPE_CHECKING:
    from litestar import Litestar, Request

SCHEMA_PATH = "/schema"
JSON_PATH = f"{SCHEMA_PATH}/openapi.json"
IDEMPOTENCY_HEADER = "Idempotency-Key"

# ---------------------------------------------------------------- what each route returns ----

#: Any route: an unexpected failure (logged; a generic message), or a head over the bound.
_SERVER = (ErrorCode.INTERNAL_ERROR, ErrorCode.REQUEST_HEADERS_TOO_LARGE)
#: Routes with path or query parameters the framework checks.
_PARAMS = (ErrorCode.INVALID_REQUEST,)
#: Routes reading a JSON body.
_JSON_BODY = (ErrorCode.INVALID_JSON, ErrorCode.INVALID_REQUEST, ErrorCode.PAYLOAD_TOO_LARGE)
#: Routes that read the platform database or bus.
_PLATFORM = (ErrorCode.PLATFORM_UNAVAILABLE,)
#: A Bearer credential, optional or required: unknown, expired or lacking the scope.
_BEARER = (ErrorCode.UNAUTHORIZED, ErrorCode.INSUFFICIENT_SCOPE, ErrorCode.FORBIDDEN)
#: A resource named by its token (or its id for its account).
_LOOKUP = (ErrorCode.NOT_FOUND, ErrorCode.RESOURCE_GONE, *_BEARER)
#: A command a worker carries out.
_WORKER = (
    ErrorCode.WORKER_UNAVAILABLE,
    ErrorCode.WORKER_TIMEOUT,
    ErrorCode.COMMAND_IN_PROGRESS,
    ErrorCode.DEADLINE_EXCEEDED,
    ErrorCode.BACKEND_UNAVAILABLE,
    ErrorCode.BACKEND_ERROR,
)
#: A create: admission (caps, rate limits), the Idempotency-Key, then a worker.
_PROVISION = (
    ErrorCode.PLAN_LIMIT_REACHED,
    ErrorCode.RATE_LIMITED,
    ErrorCode.INVALID_IDEMPOTENCY_KEY,
    ErrorCode.IDEMPOTENCY_KEY_REUSED,
    ErrorCode.IDEMPOTENCY_KEY_MISMATCH,
    *_BEARER,
    *_WORKER,
)
_CLAIM = (
    ErrorCode.INVALID_CLAIM_TOKEN,
    ErrorCode.CLAIM_TOKEN_EXPIRED,
    ErrorCode.CLAIM_ALREADY_USED,
    ErrorCode.NOTHING_TO_CLAIM,
)
_UPLOAD = (ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_MANIFEST, ErrorCode.PAYLOAD_TOO_LARGE)


@dataclass(frozen=True, slots=True)
class OperationDoc:
    """What the handler's signature does not tell the OpenAPI document about one operation.

    ``errors``: every code it can answer with (``internal_error`` is added to all);
    ``idempotent``: it honours an ``Idempotency-Key`` header; ``body``: the OpenAPI
    ``requestBody`` of a route that reads its body itself; ``own``: error statuses it answers
    with a body of its own, declared on its handler (``/readyz``'s 503 is its ``Health``);
    ``answers``: the content of a 200 that is not JSON (a file, by its media types).
    """

    errors: tuple[ErrorCode, ...]
    idempotent: bool = False
    body: dict[str, Any] | None = None
    own: tuple[int, ...] = ()
    answers: dict[str, Any] | None = None


def _create(*extra: ErrorCode) -> OperationDoc:
    return OperationDoc((*_JSON_BODY, *_PLATFORM, *_PROVISION, *extra), idempotent=True)


_ANY_BODY = {
    "description": "Any body, in any content type; it is passed on as sent.",
    "required": False,
    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
}
_FILE = {"type": "string", "format": "binary"}
#: An export's 200: a file in one of the kinds' formats (EXPORT_FORMATS, the one table).
_EXPORT_FILE = {
    export.media_type: {"schema": _FILE}
    for formats in EXPORT_FORMATS.values()
    for export in formats
}
_STACK_FORM = {
    "description": "The manifest as the file field `spinup.yaml`, and one tarball (a build"
    " context with a Dockerfile) for each `build:` it names, under that name.",
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["spinup.yaml"],
                "properties": {"spinup.yaml": _FILE},
                "additionalProperties": _FILE,
            }
        }
    },
}
_DEPLOY_FORM = {
    "description": "One service: exactly one of `context` (a tarball with a Dockerfile) or"
    " `Dockerfile`, and optionally `port`, `env` (KEY=VALUE lines), `command` and `resources`"
    " (kinds, comma-separated).",
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "context": _FILE,
                    "Dockerfile": _FILE,
                    "port": {"type": "integer"},
                    "env": {"type": "string"},
                    "command": {"type": "string"},
                    "resources": {"type": "string", "example": "postgres,redis"},
                },
            }
        }
    },
}
_REDEPLOY_FORM = {
    **_STACK_FORM,
    "description": "Only for `redeploy`, and optional: a new upload, as for POST /stacks/new."
    " Without one the stored upload is built again.",
    "required": False,
}
_NEON_BODY = {
    "description": "`ref` names the app or tool creating the database (or send ?referrer=).",
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "ref": {"type": "string", "maxLength": 255},
                    "enable_logical_replication": {"type": "boolean", "default": False},
                },
                "additionalProperties": False,
            }
        }
    },
}

#: Every operation of the API, as ``"METHOD /path"`` (``*``: every method of the handler).
OPERATIONS: dict[str, OperationDoc] = {
    **{f"POST /{path}/new": _create() for path in ("db", "cache", "nosql", "queue", "storage")},
    "POST /webhook/new": _create(),
    "POST /stacks/new": OperationDoc(
        (*_UPLOAD, *_PLATFORM, *_PROVISION), idempotent=True, body=_STACK_FORM
    ),
    "POST /deploy/new": OperationDoc(
        (*_UPLOAD, *_PLATFORM, *_PROVISION), idempotent=True, body=_DEPLOY_FORM
    ),
    "GET /resources/{token}": OperationDoc((*_PARAMS, *_PLATFORM, *_LOOKUP)),
    "DELETE /resources/{token}": OperationDoc((*_PARAMS, *_PLATFORM, *_LOOKUP, *_WORKER)),
    "GET /resources": OperationDoc((*_PARAMS, *_PLATFORM, *_BEARER)),
    "POST /resources/{token}/rotate": OperationDoc(
        (*_PARAMS, *_PLATFORM, *_LOOKUP, *_WORKER, ErrorCode.RATE_LIMITED)
    ),
    "GET /resources/{token}/logs": OperationDoc((*_PARAMS, *_PLATFORM, *_LOOKUP)),
    "POST /resources/{token}/extend": OperationDoc(
        (*_JSON_BODY, *_PLATFORM, *_LOOKUP, *_WORKER, ErrorCode.PLAN_LIMIT_REACHED)
    ),
    "POST /resources/{token}/fork": _create(ErrorCode.NOT_FOUND, ErrorCode.RESOURCE_GONE),
    "GET /resources/{token}/export": OperationDoc(
        (*_PARAMS, *_PLATFORM, *_LOOKUP, *_WORKER, ErrorCode.RATE_LIMITED), answers=_EXPORT_FILE
    ),
    "PUT /resources/{token}/notify": OperationDoc((*_JSON_BODY, *_PLATFORM, *_LOOKUP)),
    "GET /resources/{token}/events": OperationDoc((*_PARAMS, *_PLATFORM, *_LOOKUP)),
    "POST /stacks/{token}/{action}": OperationDoc(
        (*_PARAMS, *_PLATFORM, *_LOOKUP, *_WORKER, *_UPLOAD, ErrorCode.STACK_BUSY),
        body=_REDEPLOY_FORM,
    ),
    "* /apps/{stack_id}/{service}": OperationDoc(
        (
            *_PARAMS,
            ErrorCode.NOT_FOUND,
            ErrorCode.APP_NOT_RUNNING,
            ErrorCode.APP_UNREACHABLE,
            ErrorCode.PAYLOAD_TOO_LARGE,
        ),
        body=_ANY_BODY,
    ),
    "GET /plans": OperationDoc(()),
    "GET /healthz": OperationDoc(()),
    "GET /readyz": OperationDoc((), own=(503,)),
    "GET /llms.txt": OperationDoc(()),
    "* /webhook/receive/{key}": OperationDoc(
        (
            *_PARAMS,
            ErrorCode.NOT_FOUND,
            ErrorCode.RESOURCE_GONE,
            ErrorCode.PAYLOAD_TOO_LARGE,
            ErrorCode.BACKEND_ERROR,
            ErrorCode.RATE_LIMITED,
        ),
        body=_ANY_BODY,
    ),
    "GET /webhook/{token}/requests": OperationDoc(
        (*_PARAMS, ErrorCode.NOT_FOUND, ErrorCode.RESOURCE_GONE, ErrorCode.BACKEND_ERROR)
    ),
    "DELETE /webhook/{token}/requests": OperationDoc(
        (*_PARAMS, ErrorCode.NOT_FOUND, ErrorCode.RESOURCE_GONE, ErrorCode.BACKEND_ERROR)
    ),
    "GET /webhook/{token}/requests/{request_id}": OperationDoc(
        (*_PARAMS, ErrorCode.NOT_FOUND, ErrorCode.RESOURCE_GONE, ErrorCode.BACKEND_ERROR)
    ),
    "GET /webhook/{token}/stream": OperationDoc(
        (
            *_PARAMS,
            ErrorCode.NOT_FOUND,
            ErrorCode.RESOURCE_GONE,
            ErrorCode.BACKEND_ERROR,
            ErrorCode.BACKEND_UNAVAILABLE,
        )
    ),
    **{
        f"{method} /webhook/{{token}}/{what}": OperationDoc(
            (
                *(_JSON_BODY if method == "PUT" else _PARAMS),
                ErrorCode.NOT_FOUND,
                ErrorCode.RESOURCE_GONE,
                ErrorCode.BACKEND_ERROR,
            )
        )
        for method in ("GET", "PUT", "DELETE")
        for what in ("response", "verify")
    },
    "POST /auth/register": OperationDoc(
        (*_JSON_BODY, *_PLATFORM, ErrorCode.EMAIL_TAKEN, ErrorCode.COMMAND_IN_PROGRESS)
    ),
    "POST /auth/login": OperationDoc((*_JSON_BODY, *_PLATFORM, ErrorCode.INVALID_CREDENTIALS)),
    "POST /auth/logout": OperationDoc((*_PLATFORM, *_BEARER)),
    "GET /auth/user": OperationDoc((*_PLATFORM, *_BEARER)),
    "GET /auth/tokens": OperationDoc((*_PLATFORM, *_BEARER)),
    "POST /auth/tokens": OperationDoc((*_JSON_BODY, *_PLATFORM, *_BEARER)),
    "DELETE /auth/tokens/{token_id}": OperationDoc(
        (*_PARAMS, *_PLATFORM, *_BEARER, ErrorCode.NOT_FOUND)
    ),
    "GET /claim/preview": OperationDoc((*_PARAMS, *_PLATFORM, *_CLAIM)),
    "GET /claim": OperationDoc((*_PARAMS, *_PLATFORM, *_CLAIM)),
    "POST /claim": OperationDoc((*_JSON_BODY, *_PLATFORM, *_BEARER, *_CLAIM, *_WORKER)),
    "POST /api/v1/database": OperationDoc(
        (*_JSON_BODY, *_PLATFORM, *_WORKER, ErrorCode.PLAN_LIMIT_REACHED, ErrorCode.RATE_LIMITED),
        body=_NEON_BODY,
    ),
    "POST /api/v1/database/{database_id}": OperationDoc(
        (
            *_JSON_BODY,
            *_PLATFORM,
            *_WORKER,
            ErrorCode.PLAN_LIMIT_REACHED,
            ErrorCode.RATE_LIMITED,
            ErrorCode.NOT_FOUND,
            ErrorCode.RESOURCE_GONE,
        ),
        body=_NEON_BODY,
    ),
    "GET /api/v1/database/{database_id}": OperationDoc(
        (*_PARAMS, *_PLATFORM, ErrorCode.NOT_FOUND, ErrorCode.RESOURCE_GONE)
    ),
}


#: The operations served on the content host (ADR 0067), in OpenAPI form.
_CONTENT_PATHS = ("/webhook/receive/{key}", "/apps/{stack_id}/{service}")
_ON_THE_API_HOST = {
    "description": "Asked on the API's host: the same request belongs on the content host, this"
    " `Location` (the method and body kept). Use the URL the create answer gave."
}


def _key_path(path: str) -> str:
    """``/webhook/receive/{key}/{subpath}`` → ``/webhook/receive/{key}``: one handler, one doc."""
    for prefix in _CONTENT_PATHS:
        if path.startswith(prefix):
            return prefix
    return path


def operation_doc(method: str, path: str) -> OperationDoc | None:
    """The table's entry for this operation (``path`` in OpenAPI form), if it has one."""
    path = _key_path(path)
    return OPERATIONS.get(f"{method.upper()} {path}") or OPERATIONS.get(f"* {path}")


def operation_errors(method: str, path: str) -> tuple[ErrorCode, ...] | None:
    """The codes this operation can answer with, or None for an operation not in the table."""
    doc = operation_doc(method, path)
    return None if doc is None else (*_SERVER, *doc.errors)


# ------------------------------------------------------- the parts the handlers cannot say ----

_IDEMPOTENCY_PARAMETER = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": False,
    "description": "Makes a retry safe: the same key (within this caller and route) returns the"
    " same resource as it is now (after a rotation, with the new credentials), with the header"
    " Idempotent-Replayed: true, instead of a second one. 1 to 255"
    " visible ASCII characters; a UUID is ideal. The same key with another body is a 422"
    " idempotency_key_mismatch; a key whose resource was since deleted is a 409"
    " idempotency_key_reused.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _served_on(item: dict[str, Any], content_url: str) -> None:
    """Name ``content_url`` as the path's server, and the redirect it gets on the API's host."""
    item["servers"] = [{"url": content_url}]
    for method in _METHODS:
        if method in item:
            item[method].setdefault("responses", {})["308"] = _ON_THE_API_HOST


def complete_document(app: Litestar, content_url: str) -> None:
    """Add the headers, bodies and servers the handlers cannot declare to the served document.

    Litestar builds the document once and serves that dict from then on; this fills it in when
    the app is made, so every render (JSON, YAML, the docs page) shows the same document.
    Tenant content's operations name ``content_url`` as their server (ADR 0067).
    """
    # By name: the plugin's class is private to Litestar.
    document: dict[str, Any] = app.plugins.get("OpenAPIPlugin").provide_openapi_schema()
    for path, item in document.get("paths", {}).items():
        if path.startswith(_CONTENT_PATHS):
            _served_on(item, content_url)
        for method in _METHODS:
            operation = item.get(method)
            doc = operation_doc(method, path)
            if operation is None or doc is None:
                continue
            if doc.body is not None and not operation.get("requestBody"):
                operation["requestBody"] = doc.body
            if doc.answers is not None:
                operation.setdefault("responses", {}).setdefault("200", {})["content"] = doc.answers
            if doc.idempotent:
                parameters = operation.setdefault("parameters", [])
                if not any(p.get("name") == IDEMPOTENCY_HEADER for p in parameters):
                    parameters.append(_IDEMPOTENCY_PARAMETER)


# ------------------------------------------------------------------------- the docs page ----

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#1d232a}code,pre{font:13px ui-monospace,monospace}pre{background:#f4f5f7;padding:.6rem;
overflow-x:auto}h2{border-bottom:1px solid #d0d4da;margin-top:2.5rem}h3{margin:1.5rem 0 .2rem}
.m{display:inline-block;min-width:4.5rem;font-weight:700}.s{color:#555}table{border-collapse:
collapse}td,th{border:1px solid #d0d4da;padding:.2rem .5rem;text-align:left;vertical-align:top}
"""


_CODE_SPAN = re.compile(r"`([^`]+)`")


class OfflineDocsPlugin(OpenAPIRenderPlugin):
    """The API reference as one self-contained HTML page, rendered from the document."""

    def __init__(self) -> None:
        # No favicon: the default one is fetched from a CDN.
        super().__init__(path="/", favicon="")

    def render(self, _request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        """The page: every operation, grouped by tag, with its parameters, body and answers."""
        info = openapi_schema.get("info", {})
        title = html.escape(f"{info.get('title', 'API')} {info.get('version', '')}")
        parts = [
            f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{title}</title>",
            "<meta name=viewport content='width=device-width,initial-scale=1'>",
            f"<style>{_STYLE}</style></head><body><h1>{title}</h1>",
            (
                f"<p>The machine-readable document: <a href='{JSON_PATH}'><code>{JSON_PATH}"
                f"</code></a> (OpenAPI {html.escape(str(openapi_schema.get('openapi', '')))})."
                " A guide for agents: <a href='/llms.txt'><code>/llms.txt</code></a>. Every"
                " error is JSON: <code>{ok: false, error, message, request_id,"
                " agent_action?}</code>.</p>"
            ),
        ]
        components = openapi_schema.get("components", {}).get("schemas", {})
        for tag, operations in _by_tag(openapi_schema).items():
            parts.append(f"<h2>{html.escape(tag)}</h2>")
            parts.extend(
                _operation_html(method, path, op, components) for method, path, op in operations
            )
        parts.append("</body></html>")
        return "".join(parts).encode()


def _by_tag(document: dict[str, Any]) -> dict[str, list[tuple[str, str, dict[str, Any]]]]:
    grouped: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            if (operation := item.get(method)) is not None:
                tag = (operation.get("tags") or ["other"])[0]
                grouped.setdefault(tag, []).append((method.upper(), path, operation))
    return grouped


def _text(value: object) -> str:
    """Escaped text, with `code` spans as the descriptions write them."""
    return _CODE_SPAN.sub(r"<code>\1</code>", html.escape(str(value or "")))


def _fields(schema: dict[str, Any], components: dict[str, Any]) -> str:
    """A JSON body's fields and their types, one line: `name` (string or null), ..."""
    if "$ref" in schema:
        schema = components.get(str(schema["$ref"]).rsplit("/", 1)[-1], {})
    if "oneOf" in schema:  # an optional body: the object or null
        schema = next((s for s in schema["oneOf"] if s.get("type") != "null"), {})
        return _fields(schema, components)
    shown = []
    for name, spec in schema.get("properties", {}).items():
        types = [s.get("type", "object") for s in spec.get("oneOf", [spec])]
        shown.append(
            f"<code>{html.escape(name)}</code> ({html.escape(' or '.join(map(str, types)))})"
        )
    return ", ".join(shown)


def _operation_html(
    method: str, path: str, operation: dict[str, Any], components: dict[str, Any]
) -> str:
    esc = html.escape
    parts = [
        (
            f"<h3 id='{esc(operation.get('operationId', ''))}'><span class=m>{method}</span>"
            f"<code>{esc(path)}</code></h3><p><b>{esc(operation.get('summary', ''))}</b> "
            f"{_text(operation.get('description'))}</p>"
        )
    ]
    parameters = operation.get("parameters") or []
    if parameters:
        rows = "".join(
            f"<tr><td><code>{esc(p['name'])}</code></td><td>{esc(p['in'])}</td>"
            f"<td>{'required' if p.get('required') else ''}</td>"
            f"<td>{_text(p.get('description'))}</td></tr>"
            for p in parameters
        )
        parts.append(
            f"<table><tr><th>parameter</th><th>in</th><th></th><th></th></tr>{rows}</table>"
        )
    body = operation.get("requestBody")
    if body:
        content: dict[str, Any] = body.get("content", {})
        types = ", ".join(esc(t) for t in content)
        fields = _fields(content.get("application/json", {}).get("schema", {}), components)
        parts.append(
            f"<p>Body ({types}){': ' + fields if fields else ''}."
            f" {_text(body.get('description'))}</p>"
        )
    answers = "".join(
        f"<tr><td>{esc(status)}</td><td>{_text(response.get('description'))}</td></tr>"
        for status, response in sorted(operation.get("responses", {}).items())
    )
    parts.append(f"<table><tr><th>status</th><th>meaning</th></tr>{answers}</table>")
    return "".join(parts)


def openapi_config(version: str) -> OpenAPIConfig:
    """``/schema``: the offline docs page; ``/schema/openapi.json`` (and .yaml): the document."""
    return OpenAPIConfig(
        title="Spinup",
        version=version,
        path=SCHEMA_PATH,
        render_plugins=[
            OfflineDocsPlugin(),
            JsonRenderPlugin(media_type=MediaType.JSON, favicon=""),
            YamlRenderPlugin(favicon=""),
        ],
    )
