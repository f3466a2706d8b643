"""The only error code -> HTTP status table, and the one function mapping exceptions to HTTP."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterable
from typing import Any

import msgspec
import structlog
from litestar import Litestar, Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)
from litestar.openapi.datastructures import ResponseSpec
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE

from gateway.http.middleware import request_id_of
from gateway.http.openapi import operation_doc, operation_errors
from gateway.http.schemas import ErrorBody
from shared.contracts.errors import ErrorCode, SpinupError

log = structlog.get_logger("gateway.errors")

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.INVALID_IDEMPOTENCY_KEY: 400,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.REQUEST_HEADERS_TOO_LARGE: 431,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.RESOURCE_GONE: 410,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 409,
    ErrorCode.IDEMPOTENCY_KEY_MISMATCH: 422,
    ErrorCode.WORKER_UNAVAILABLE: 503,
    ErrorCode.WORKER_TIMEOUT: 503,
    ErrorCode.COMMAND_IN_PROGRESS: 503,
    ErrorCode.DEADLINE_EXCEEDED: 503,
    ErrorCode.BACKEND_UNAVAILABLE: 503,
    ErrorCode.BACKEND_ERROR: 503,
    ErrorCode.PLATFORM_UNAVAILABLE: 503,
    ErrorCode.INVALID_COMMAND: 500,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.INSUFFICIENT_SCOPE: 403,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.CSRF_FAILED: 403,
    ErrorCode.EMAIL_TAKEN: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.PLAN_LIMIT_REACHED: 402,
    ErrorCode.INVALID_CLAIM_TOKEN: 400,
    ErrorCode.CLAIM_TOKEN_EXPIRED: 410,
    ErrorCode.CLAIM_ALREADY_USED: 409,
    ErrorCode.NOTHING_TO_CLAIM: 409,
    ErrorCode.INVALID_MANIFEST: 400,
    ErrorCode.STACK_BUSY: 409,
    ErrorCode.APP_NOT_RUNNING: 503,
    ErrorCode.APP_UNREACHABLE: 502,
}
RETRY_AFTER_S = "1"


def error_responses(
    body: type[Any] = ErrorBody, codes: Iterable[ErrorCode] | None = None
) -> dict[int, ResponseSpec]:
    """One OpenAPI response per error status, naming the codes it carries (ADR 0003).

    ``body``: the shape the route renders errors in (``ErrorBody`` unless it has its own);
    ``codes``: the codes the route can answer with (every code when None).
    """
    wanted = set(HTTP_STATUS if codes is None else codes)
    codes_by_status: dict[int, list[str]] = {}
    for code, status in HTTP_STATUS.items():
        if code in wanted:
            codes_by_status.setdefault(status, []).append(f"`{code.value}`")
    return {
        status: ResponseSpec(
            data_container=body,
            generate_examples=False,
            description="An error (`ok` false); `error` is one of " + ", ".join(codes) + ".",
        )
        for status, codes in sorted(codes_by_status.items())
    }


def document_errors(app: Litestar) -> None:
    """Declare on every operation the error statuses it can answer with, and their ``ErrorBody``.

    Which codes each operation can return is listed in ``gateway.http.openapi.OPERATIONS``; the
    status of each comes from ``HTTP_STATUS``. Without this the OpenAPI document shows the
    framework's own 400 body, which the app never sends. A route that declares its own error
    responses (another body shape) keeps their bodies, for the statuses it can return. A route
    missing from the table lists every status (and the OpenAPI conformance test names it).
    """
    for app_route in app.routes:
        if not isinstance(app_route, HTTPRoute):
            continue
        for handler in app_route.route_handlers:
            codes: set[ErrorCode] | None = set()
            own_statuses: set[int] = set()
            for method in handler.http_methods:
                listed = operation_errors(method, app_route.path_format)
                doc = operation_doc(method, app_route.path_format)
                own_statuses.update(doc.own if doc else ())
                if listed is None or codes is None:
                    codes = None
                else:
                    codes.update(listed)
            errors = error_responses(codes=codes)
            own = {
                status: (
                    # Its own error body, with the codes this operation can answer with.
                    dataclasses.replace(spec, description=errors[status].description)
                    if status in errors
                    else spec
                )
                for status, spec in (handler.responses or {}).items()
                if status < 400 or status in errors or status in own_statuses  # noqa: PLR2004
            }
            handler.responses = {**errors, **own}


# How msgspec names JSON types, in the words of a person reading an error.
_JSON_TYPES = {
    "int": "a number",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "null": "null",
    "array": "an array",
    "object": "an object",
}
_EXPECTED_GOT = re.compile(r"Expected `([^`]+)`, got `([^`]+)`")
_EXPECTED_CONSTRAINT = re.compile(r"Expected `([^`]+)`(.*)")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")


def _json_type(name: str) -> str:
    return " or ".join(_JSON_TYPES.get(part.strip(), part.strip()) for part in name.split("|"))


def _body_struct(request: Request[Any, Any, Any] | None) -> type[msgspec.Struct] | None:
    """The msgspec Struct the route decodes its JSON body into, if it has one."""
    if request is None:
        return None
    try:
        data = request.route_handler.parsed_fn_signature.parameters.get("data")
    except (AttributeError, KeyError):  # no handler resolved (routing errors)
        return None
    if data is None:
        return None
    for candidate in (data.annotation, *getattr(data.annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, msgspec.Struct):
            return candidate
    return None


def _field_rules(struct: type[msgspec.Struct]) -> dict[str, str]:
    """Each field's rule as its ``msgspec.Meta(description=...)`` says it, else its type."""
    rules: dict[str, str] = {}
    info = msgspec.inspect.type_info(struct)
    if not isinstance(info, msgspec.inspect.StructType):
        return rules
    for field in info.fields:
        types = (
            field.type.types if isinstance(field.type, msgspec.inspect.UnionType) else (field.type,)
        )
        for one in types:
            if isinstance(one, msgspec.inspect.Metadata) and one.extra_json_schema:
                description = one.extra_json_schema.get("description")
                if description:
                    rules[field.encode_name] = str(description)
    return rules


def _problem(key: str, message: str, struct: type[msgspec.Struct] | None) -> str:  # noqa: PLR0911  (one answer per kind of problem)
    """One problem with a body field (``struct``: the body's type) or a parameter, named."""
    fields = [f.encode_name for f in msgspec.structs.fields(struct)] if struct is not None else []
    takes = f" This body takes: {', '.join(f'`{f}`' for f in fields)}." if fields else ""
    if (unknown := _UNKNOWN_FIELD.search(message)) is not None:
        return f"Unknown field `{unknown.group(1)}`.{takes}"
    if (missing := _MISSING_FIELD.search(message)) is not None:
        return f"`{missing.group(1)}` is required.{takes}"
    if key in {"", "data"}:
        expected = _EXPECTED_GOT.search(message)
        got = f", not {_json_type(expected.group(2))}" if expected else ""
        return f"The body must be a JSON object{got}.{takes}"
    rule = _field_rules(struct).get(key) if struct is not None else None
    expected = _EXPECTED_GOT.search(message)
    got = f" (got {_json_type(expected.group(2))})" if expected else ""
    if rule:
        return f"`{key}` {rule}{got}."
    if expected:
        return f"`{key}` must be {_json_type(expected.group(1))}{got}."
    if (constraint := _EXPECTED_CONSTRAINT.search(message)) is not None:
        rest = constraint.group(2).strip()
        if rest.startswith("matching regex"):
            rest = "in the format the API reference gives (/schema)"
        return f"`{key}` must be {_json_type(constraint.group(1))} {rest}."
    return f"`{key}`: {message}"


def _client_error(exc: HTTPException, request: Request[Any, Any, Any] | None = None) -> SpinupError:
    """A 4xx from the framework's parsing, naming the field and what it takes."""
    extra: Any = exc.extra
    items = [item for item in extra if isinstance(item, dict)] if isinstance(extra, list) else []
    text = "; ".join(str(item.get("message", "")) for item in items) or str(exc.detail)
    if "JSON is malformed" in text:
        return SpinupError(ErrorCode.INVALID_JSON, f"The request body is not valid JSON: {text}")
    if not isinstance(exc, ValidationException):
        return SpinupError(ErrorCode.INVALID_REQUEST, text)
    struct = _body_struct(request)
    problems: list[str] = []
    for item in items:
        key, message = str(item.get("key", "")), str(item.get("message", ""))
        if item.get("source") == "body" or key == "data":
            problems.append(_problem(key, message, struct))
        elif key:
            # A path, query or header parameter: the key names it ("limit", "headers.X").
            problems.append(_problem(key, message, None))
        else:
            problems.append(message)
    return SpinupError(
        ErrorCode.INVALID_REQUEST, " ".join(p for p in problems if p) or text or "Bad request."
    )


def _too_large(request: Request[Any, Any, Any] | None) -> SpinupError:
    limit: int | None = None
    if request is not None:
        with contextlib.suppress(AttributeError, KeyError):
            limit = request.route_handler.resolve_request_max_body_size()
    stated = f" This route takes at most {limit} bytes." if limit else ""
    return SpinupError(ErrorCode.PAYLOAD_TOO_LARGE, f"The request body is too large.{stated}")


_FRAMEWORK_ERRORS: tuple[tuple[type[Exception], ErrorCode, str], ...] = (
    (NotFoundException, ErrorCode.NOT_FOUND, "No such route. See /schema for the API."),
    (
        MethodNotAllowedException,
        ErrorCode.METHOD_NOT_ALLOWED,
        "This route does not accept that method. See /schema for the API.",
    ),
)


def to_error(exc: Exception, request: Request[Any, Any, Any] | None = None) -> SpinupError:
    """Map any exception to a client-safe error (``request``: to name the route's limits)."""
    if isinstance(exc, SpinupError):
        return exc
    for exc_type, code, message in _FRAMEWORK_ERRORS:
        if isinstance(exc, exc_type):
            return SpinupError(code, message)
    if isinstance(exc, UnicodeDecodeError):
        # The framework decodes a JSON body before any handler sees it; bytes that are not
        # UTF-8 (overlong forms, stray 0xff) reach here as this, not as a 4xx of its own.
        return SpinupError(ErrorCode.INVALID_JSON, "The request body is not valid UTF-8 JSON.")
    if isinstance(exc, HTTPException) and exc.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
        return _too_large(request)
    if isinstance(exc, HTTPException) and exc.status_code < 500:  # noqa: PLR2004
        return _client_error(exc, request)
    return SpinupError(ErrorCode.INTERNAL_ERROR, "Unexpected error; it has been logged.")


def error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """The app's only exception handler: JSON body, stable code, never a traceback."""
    error = to_error(exc, request)
    status = HTTP_STATUS[error.code]
    if status >= 500 and not isinstance(exc, SpinupError):  # noqa: PLR2004
        log.error("gateway.request.crashed", path=request.url.path, exc_info=exc)
    headers: dict[str, str] = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
    elif status == 503:  # noqa: PLR2004
        headers["Retry-After"] = RETRY_AFTER_S
    if status == 401:  # noqa: PLR2004
        headers["WWW-Authenticate"] = 'Bearer realm="spinup"'
    message = error.message
    if isinstance(exc, MethodNotAllowedException) and (allow := (exc.headers or {}).get("allow")):
        # RFC 9110: a 405 says which methods the route does take.
        headers["Allow"] = allow
        message = f"This route takes {allow}, not {request.method}. See /schema for the API."
    body = ErrorBody(
        ok=False,
        error=error.code.value,
        message=message,
        request_id=request_id_of(request.scope),
        agent_action=error.agent_action,
    )
    return Response(body, status_code=status, headers=headers)
