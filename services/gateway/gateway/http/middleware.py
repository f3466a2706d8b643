"""Request id on every response, and one log line per request."""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING, Any

import structlog
from litestar.enums import ScopeType

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("gateway.http")
REQUEST_ID_HEADER = "x-request-id"
_SCOPE_KEY = "spinup.request_id"
_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def request_id_of(scope: Any) -> str:  # noqa: ANN401  (an ASGI scope)
    """The id given to this request by ``request_id_middleware``."""
    return str(scope.get(_SCOPE_KEY, ""))


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """Accept a sane ``X-Request-ID`` from the client or make one; echo it; log the request."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        incoming = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == REQUEST_ID_HEADER.encode()),
            "",
        )
        request_id = incoming if _CLIENT_ID_RE.match(incoming) else uuid.uuid4().hex
        scope[_SCOPE_KEY] = request_id  # type: ignore[literal-required]
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            await send(message)

        with structlog.contextvars.bound_contextvars(correlation_id=request_id):
            try:
                await app(scope, receive, send_with_id)
            finally:
                log.info(
                    "gateway.request.handled",
                    method=scope.get("method", ""),
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )

    return middleware
