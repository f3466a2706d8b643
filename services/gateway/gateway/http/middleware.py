"""Request id on every response; one log line, metrics and a trace span per request."""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING, Any

import structlog
from litestar.enums import ScopeType

from shared.observability import metrics, tracing

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
        duration: float | None = None
        method = scope.get("method", "")

        def count() -> float:
            """Count the request once, with the time it took up to now."""
            nonlocal duration
            if duration is None:
                duration = time.perf_counter() - started
                # Set by Litestar's router once a route matched (absent for a 404 or 405).
                series = metrics.http_series(scope.get("path_template"), method, status)
                series.requests.inc()
                series.duration.observe(duration)
                if series.rate_limited is not None:
                    series.rate_limited.inc()
            return duration

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Counted before the last byte leaves: a client holding its answer sees it counted.
                count()
            await send(message)

        with (
            structlog.contextvars.bound_contextvars(correlation_id=request_id),
            tracing.span(f"HTTP {method}", kind=tracing.SpanKind.SERVER) as span,
        ):
            try:
                await app(scope, receive, send_with_id)
            finally:
                took = count()  # a no-op when the last body message already counted it
                if span is not None:
                    route = metrics.route_label(scope.get("path_template"))
                    method_label = metrics.method_label(method)
                    span.update_name(f"HTTP {method_label} {route}")
                    span.set_attributes(
                        {
                            "http.request.method": method_label,
                            "http.route": route,
                            "http.response.status_code": status,
                        }
                    )
                log.info(
                    "gateway.request.handled",
                    method=method,
                    path=scope["path"],
                    status=status,
                    duration_ms=round(took * 1000, 2),
                )

    return middleware
