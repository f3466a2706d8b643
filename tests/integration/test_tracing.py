"""Issue 24: one trace per request, from the gateway across the NATS hop to the event log.

The gateway app and a Postgres worker run in this process, each recording spans with the
OpenTelemetry SDK's in-memory exporter; they talk over the stack's real NATS (the stack's own
pg-provisioner is stopped meanwhile, so this worker is the one that answers). The worker's span
continues the gateway's trace only through the ``traceparent`` header of the NATS message: its
parent is remote.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
from litestar.exceptions import LitestarWarning
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from devstack.stack import Stack
from gateway.http.middleware import REQUEST_ID_HEADER, request_id_middleware
from gateway.settings import Settings
from pg_provisioner.driver import PostgresDriver
from shared.bus import Bus
from shared.contracts.kinds import ResourceKind
from shared.crypto.sealing import Keyring
from shared.eventlog.projections import ResourceProjection, ResourceReadModel
from shared.eventlog.store import EventStore
from shared.lifecycle import ResourceLifecycle
from shared.observability import tracing
from shared.worker import serve_lifecycle

pytestmark = pytest.mark.integration

PROVISION_SUBJECT = "prov.v1.postgres.provision"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.uninstall()


@pytest.fixture
async def traced_worker(
    stack: Stack,
    env: dict[str, str],
    platform_db: asyncpg.Pool,
    driver: PostgresDriver,
    spans: InMemorySpanExporter,
) -> AsyncIterator[None]:
    """A Postgres worker in this process, alone in the pg-provisioner queue group."""
    keyring = Keyring.from_setting(env["SPINUP_SEAL_KEYS"])
    stack.stop_service("pg-provisioner")
    bus = await Bus.connect(env["SPINUP_NATS_URL"], name="traced-pg-provisioner")
    try:
        lifecycle = ResourceLifecycle(
            EventStore(platform_db, [ResourceProjection()], nudge=bus.nudge_relay),
            keyring,
            tracing.trace_driver(driver),
            resources=ResourceReadModel(platform_db),
            create_concurrency=2,
            delete_concurrency=2,
        )
        await serve_lifecycle(bus, lifecycle, ResourceKind.POSTGRES, max_in_flight=4)
        yield
    finally:
        await bus.close()
        stack.start_service("pg-provisioner")


@contextlib.asynccontextmanager
async def gateway(env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway app in this process, wrapped as ``python -m gateway`` wraps it.

    Entered in the test itself: the app's lifespan must end in the task it began in.
    """
    with warnings.catch_warnings():
        # Litestar deprecates the routes' `param = Parameter(...)` style; not this test's subject.
        warnings.simplefilter("ignore", LitestarWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        from gateway.main import create_app  # noqa: PLC0415  (its routes warn when imported)

        app = create_app(Settings.from_env(env))
    transport = httpx.ASGITransport(app=request_id_middleware(app))
    async with (
        app.lifespan(),
        httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=60) as client,
    ):
        yield client


def named(found: list[ReadableSpan], name: str) -> ReadableSpan:
    matching = [span for span in found if span.name == name]
    assert len(matching) == 1, [span.name for span in found]
    return matching[0]


def descends_from(
    span: ReadableSpan, ancestor: ReadableSpan, by_id: dict[int, ReadableSpan]
) -> bool:
    while span.parent is not None:
        if span.parent.span_id == ancestor.context.span_id:
            return True
        parent = by_id.get(span.parent.span_id)
        if parent is None:
            return False
        span = parent
    return False


async def test_one_trace_runs_from_the_http_request_across_nats_to_the_event_log(
    traced_worker: None, env: dict[str, str], spans: InMemorySpanExporter
) -> None:
    async with gateway(env) as client:
        response = await client.post("/db/new")
        assert response.status_code == 201, response.text
        deleted = await client.delete(f"/resources/{response.json()['token']}")
        assert deleted.status_code == 200, deleted.text
    request_id = response.headers[REQUEST_ID_HEADER]

    recorded = list(spans.get_finished_spans())
    http = named(recorded, "HTTP POST /db/new")
    trace_id = http.context.trace_id
    in_trace = [span for span in recorded if span.context.trace_id == trace_id]
    by_id = {span.context.span_id: span for span in in_trace}

    assert http.parent is None
    assert http.kind is SpanKind.SERVER
    assert http.attributes is not None
    assert http.attributes["http.route"] == "/db/new"
    assert http.attributes["http.response.status_code"] == 201

    request = named(in_trace, f"nats request {PROVISION_SUBJECT}")
    assert request.kind is SpanKind.CLIENT
    assert request.parent is not None
    assert request.parent.span_id == http.context.span_id

    # The worker's side: same trace, its parent known only from the message's traceparent.
    handled = named(in_trace, f"nats handle {PROVISION_SUBJECT}")
    assert handled.kind is SpanKind.SERVER
    assert handled.parent is not None
    assert handled.parent.is_remote
    assert handled.parent.span_id == request.context.span_id

    # The backend call: a warm member's take alone, or, with nothing to take, the take and then
    # the create.
    backend = [span for span in in_trace if span.name in {"driver.take", "driver.create"}]
    assert sorted(span.name for span in backend) in (
        ["driver.take"],
        ["driver.create", "driver.take"],
    ), [span.name for span in in_trace]
    assert all(descends_from(span, handled, by_id) for span in backend)
    appends = [span for span in in_trace if span.name == "eventlog.append"]
    # The intent with the outcome, one append after the backend call (ADR 0032); a take from
    # the warm pool appends nothing before it (ADR 0047).
    assert [span.attributes and span.attributes["spinup.events"] for span in appends] == [2]
    assert all(descends_from(span, handled, by_id) for span in appends)

    # The request id is on every span of the trace, on both sides of the hop.
    for span in in_trace:
        assert span.attributes is not None
        assert span.attributes[tracing.CORRELATION_ATTRIBUTE] == request_id, span.name
