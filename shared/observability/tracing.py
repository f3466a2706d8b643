"""OpenTelemetry traces: one trace per request, from the gateway across NATS to the event log.

Off unless an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, the SDK's own variables): then ``configure_tracing``
installs a tracer provider exporting over OTLP/HTTP. While off, ``span`` is a no-op that costs a
flag test, and no ``traceparent`` header is sent.

Spans: the gateway's HTTP request (``http.middleware``), each NATS request (client side, which
puts a W3C ``traceparent`` in the message headers) and its handling in the worker (server side,
which continues the trace from those headers), each driver call, and each event-log append. Every
span carries the request's correlation id (``spinup.correlation_id``), taken from the structlog
context the log lines use, so a trace and its log lines are found by the same id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from uuid import UUID

    from shared.contracts.kinds import Credentials, ResourceKind
    from shared.lifecycle import ResourceDriver

__all__ = [
    "CORRELATION_ATTRIBUTE",
    "CorrelationIdProcessor",
    "SpanKind",
    "TracedDriver",
    "configure_tracing",
    "enabled",
    "extract",
    "inject",
    "install",
    "span",
    "trace_driver",
    "uninstall",
]

log = structlog.get_logger("shared.observability.tracing")

ENDPOINT_SETTINGS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
#: The attribute holding the request or command correlation id on every span.
CORRELATION_ATTRIBUTE = "spinup.correlation_id"

_propagator = TraceContextTextMapPropagator()
_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None


class CorrelationIdProcessor(SpanProcessor):
    """Puts the correlation id bound in structlog's context on every span as it starts."""

    def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
        """Tag ``span`` with the current correlation id, when one is bound."""
        del parent_context
        correlation_id = structlog.contextvars.get_contextvars().get("correlation_id")
        if correlation_id:
            span.set_attribute(CORRELATION_ATTRIBUTE, str(correlation_id))

    def on_end(self, span: ReadableSpan) -> None:
        """Nothing to do when a span ends."""


def enabled() -> bool:
    """Whether spans are recorded in this process."""
    return _tracer is not None


def install(provider: TracerProvider) -> None:
    """Record spans with ``provider`` (tests install one with an in-memory exporter).

    The correlation-id processor is added to it; the provider is not made the global one, so
    installing another later (a test, then the next) is allowed.
    """
    global _tracer, _provider  # noqa: PLW0603  (one tracer per process, set at start)
    provider.add_span_processor(CorrelationIdProcessor())
    _provider = provider
    _tracer = provider.get_tracer("spinup")


def uninstall() -> None:
    """Stop recording spans (tests); a configured exporter is flushed first."""
    global _tracer, _provider  # noqa: PLW0603
    if _provider is not None:
        _provider.shutdown()
    _tracer = None
    _provider = None


def configure_tracing(service: str, environ: Mapping[str, str]) -> bool:
    """Export spans over OTLP/HTTP when an endpoint is configured; return whether it is.

    The exporter reads the SDK's standard ``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers,
    timeout) itself.
    """
    if not any(environ.get(name, "").strip() for name in ENDPOINT_SETTINGS):
        return False
    # Imported only when used: the exporter pulls in protobuf and requests.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install(provider)
    log.info("tracing.enabled", service=service)
    return True


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    parent: Context | None = None,
) -> Iterator[Span | None]:
    """A span around the block while tracing is on (``None`` otherwise); exceptions recorded.

    ``parent``: a context extracted from a message's headers (``extract``); default: the
    current span.
    """
    tracer = _tracer
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=attributes
    ) as current:
        yield current


def inject() -> dict[str, str] | None:
    """Headers carrying the current span (``traceparent``), or None while tracing is off."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier or None


def extract(headers: Mapping[str, str] | None) -> Context | None:
    """The remote parent named by a message's ``traceparent`` header (None: start a new trace)."""
    if _tracer is None or not headers:
        return None
    extracted = _propagator.extract(dict(headers))
    return extracted if trace.get_current_span(extracted).get_span_context().is_valid else None


class TracedDriver:
    """A resource driver whose every call is a span (``driver.create``, ``driver.take``...).

    Wraps the driver given to ``ResourceLifecycle`` only while tracing is on (``trace_driver``).
    """

    def __init__(self, driver: ResourceDriver[Any]) -> None:
        self._driver = driver
        self._attributes = {"spinup.kind": driver.kind.value}
        take = getattr(driver, "take", None)
        if take is not None:
            # Only for a driver that has it: the lifecycle counts the caps before a take
            # (``PooledCreate``), so others must not seem to have one.

            async def traced_take(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
                with span("driver.take", attributes=self._attributes):
                    return await take(*args, **kwargs)

            self.take = traced_take

    @property
    def kind(self) -> ResourceKind:
        """The wrapped driver's kind."""
        return self._driver.kind

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401  (whatever the driver has)
        """The wrapped driver's optional operations (``fork``, ``export``, ``suspend``), as is.

        So the lifecycle's ``isinstance`` checks of ``ForkingDriver``/``ExportingDriver`` see
        what the wrapped driver can do, with tracing on as off.
        """
        return getattr(self._driver, name)

    async def create(self, resource_id: UUID, limits: Any) -> Credentials:  # noqa: ANN401
        """``driver.create`` in a span."""
        with span("driver.create", attributes=self._attributes):
            return await self._driver.create(resource_id, limits)

    async def create_fresh(self, resource_id: UUID, limits: Any) -> Credentials:  # noqa: ANN401
        """``driver.create_fresh`` in a span, or ``driver.create`` for a driver without one.

        Defined here, so every traced driver is a ``FreshCreate``: ``create`` is always a
        correct ``create_fresh``, only without the look it could skip.
        """
        fresh = getattr(self._driver, "create_fresh", None)
        with span("driver.create", attributes=self._attributes):
            if fresh is not None:
                return cast("Credentials", await fresh(resource_id, limits))
            return await self._driver.create(resource_id, limits)

    async def delete(self, resource_id: UUID) -> None:
        """``driver.delete`` in a span."""
        with span("driver.delete", attributes=self._attributes):
            await self._driver.delete(resource_id)

    async def set_limits(self, resource_id: UUID, limits: Any) -> None:  # noqa: ANN401
        """``driver.set_limits`` in a span."""
        with span("driver.set_limits", attributes=self._attributes):
            await self._driver.set_limits(resource_id, limits)

    async def rotate(self, resource_id: UUID, limits: Any) -> Credentials:  # noqa: ANN401
        """``driver.rotate`` in a span."""
        with span("driver.rotate", attributes=self._attributes):
            return await self._driver.rotate(resource_id, limits)

    async def usage(
        self, resource_ids: Sequence[UUID], *, sweep_id: UUID | None = None
    ) -> dict[UUID, int]:
        """``driver.usage`` in a span."""
        with span("driver.usage", attributes=self._attributes):
            return await self._driver.usage(resource_ids, sweep_id=sweep_id)

    async def block_writes(self, resource_id: UUID, *, usage: int, quota: int) -> None:
        """``driver.block_writes`` in a span."""
        with span("driver.block_writes", attributes=self._attributes):
            await self._driver.block_writes(resource_id, usage=usage, quota=quota)

    async def allow_writes(self, resource_id: UUID) -> None:
        """``driver.allow_writes`` in a span."""
        with span("driver.allow_writes", attributes=self._attributes):
            await self._driver.allow_writes(resource_id)


def trace_driver(driver: ResourceDriver[Any]) -> ResourceDriver[Any]:
    """``driver`` with a span around each call while tracing is on; ``driver`` itself when off."""
    return TracedDriver(driver) if enabled() else driver
