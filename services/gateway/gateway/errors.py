"""The only error code -> HTTP status table, and the one function mapping exceptions to HTTP."""

from __future__ import annotations

from typing import Any

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
from gateway.http.schemas import ErrorBody
from shared.contracts.errors import ErrorCode, SpinupError

log = structlog.get_logger("gateway.errors")

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.INVALID_IDEMPOTENCY_KEY: 400,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.RESOURCE_GONE: 410,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 409,
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


def error_responses(body: type[Any] = ErrorBody) -> dict[int, ResponseSpec]:
    """One OpenAPI response per error status, naming the codes it carries (ADR 0003).

    ``body``: the shape the route renders errors in (``ErrorBody`` unless it has its own).
    """
    codes_by_status: dict[int, list[str]] = {}
    for code, status in HTTP_STATUS.items():
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
    """Declare every error status, with its ``ErrorBody``, on every operation of the API.

    The error contract is the same for every route (any of them can meet a full platform or a
    malformed request), so every operation lists them all; without this the OpenAPI document
    shows the framework's own 400 body, which the app never sends. A route that declares its
    own error responses (another body shape) keeps them.
    """
    errors = error_responses()
    for app_route in app.routes:
        if isinstance(app_route, HTTPRoute):
            for handler in app_route.route_handlers:
                handler.responses = {**errors, **(handler.responses or {})}


def _client_error(exc: HTTPException) -> SpinupError:
    """A 4xx from the framework's body parsing, with its details kept (they name the field)."""
    details: list[str] = []
    extra: Any = exc.extra
    if isinstance(extra, list):
        # The key names the field ("status", "headers.X"): a 400 must say what to fix.
        details.extend(
            f"`{item['key']}`: {item.get('message', '')}"
            if item.get("key")
            else str(item.get("message", ""))
            for item in extra
            if isinstance(item, dict)
        )
    text = "; ".join(d for d in details if d) or str(exc.detail)
    if "JSON is malformed" in text:
        return SpinupError(ErrorCode.INVALID_JSON, f"The request body is not valid JSON: {text}")
    if isinstance(exc, ValidationException):
        return SpinupError(
            ErrorCode.INVALID_REQUEST, f"The request body does not match the schema: {text}"
        )
    return SpinupError(ErrorCode.INVALID_REQUEST, text)


_FRAMEWORK_ERRORS: tuple[tuple[type[Exception], ErrorCode, str], ...] = (
    (NotFoundException, ErrorCode.NOT_FOUND, "No such route. See /schema for the API."),
    (
        MethodNotAllowedException,
        ErrorCode.METHOD_NOT_ALLOWED,
        "This route does not accept that method. See /schema for the API.",
    ),
)


def to_error(exc: Exception) -> SpinupError:
    """Map any exception to a client-safe error."""
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
        return SpinupError(ErrorCode.PAYLOAD_TOO_LARGE, "The request body is too large.")
    if isinstance(exc, HTTPException) and exc.status_code < 500:  # noqa: PLR2004
        return _client_error(exc)
    return SpinupError(ErrorCode.INTERNAL_ERROR, "Unexpected error; it has been logged.")


def error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """The app's only exception handler: JSON body, stable code, never a traceback."""
    error = to_error(exc)
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
    body = ErrorBody(
        ok=False,
        error=error.code.value,
        message=error.message,
        request_id=request_id_of(request.scope),
        agent_action=error.agent_action,
    )
    return Response(body, status_code=status, headers=headers)
