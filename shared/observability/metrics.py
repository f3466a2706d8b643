"""Every Prometheus metric of the platform, defined once: names and labels are a contract.

Alert rules and dashboards are written against these names, so a rename is a breaking change.
Labels take only values from closed sets (a route template, an HTTP method, a status code, a
kind, an error code, a subject from ``shared.contracts.subjects``, a deprovision reason): never a
token, an id or a raw path, so the number of series stays bounded (tests/unit/test_metrics.py).

A service exposes them with ``serve_metrics`` (workers, reaper) or, the gateway, on its own
``GET /metrics`` through ``render``. A gateway running several processes
(``SPINUP_HTTP_PROCESSES``) uses prometheus-client's multiprocess mode: each process writes its
values to files in ``PROMETHEUS_MULTIPROC_DIR`` and any process answers a scrape with the sum
(gauges: per ``multiprocess_mode``). That variable must be set before this module is imported,
which ``gateway.__main__`` does (``multiprocess_dir``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector

from shared.config import Env
from shared.contracts.errors import ErrorCode
from shared.contracts.subjects import ENDPOINTS, STACK_CONTROL

log = structlog.get_logger("shared.observability.metrics")

#: The setting naming a worker's (or the reaper's) metrics port; 0 turns the listener off.
PORT_SETTING = "SPINUP_METRICS_PORT"
HOST_SETTING = "SPINUP_METRICS_HOST"
#: The port Prometheus exporters conventionally use; each container has its own network.
DEFAULT_PORT = 9464
#: prometheus-client's own variable: set means multiprocess mode (read when it is imported).
MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

OK = "ok"
UNMATCHED_ROUTE = "unmatched"
OTHER_METHOD = "other"
#: The ``endpoint`` label of a request to a subject no ``Endpoint`` declares.
OTHER_ENDPOINT = "other"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_ERROR_CODES = frozenset(code.value for code in ErrorCode)
_HTTP_TOO_MANY_REQUESTS = 429

# Seconds: an HTTP request or a NATS round trip spans a cached read (ms) to a cold create (s).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# An append is one statement or one short transaction: sub-millisecond to tens of ms.
_APPEND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

# -- gateway HTTP -------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "spinup_http_requests",
    "HTTP requests answered by the gateway, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "spinup_http_request_duration_seconds",
    "Time from a request's arrival at the gateway to the end of its response.",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
)
RATE_LIMITED = Counter(
    "spinup_rate_limited",
    "Requests refused with 429 rate_limited, by route template.",
    ["route"],
)

# -- commands, counted where they are sent (outcome: "ok" or the error code) -------------------
PROVISIONS = Counter(
    "spinup_provisions", "Create requests by kind and outcome.", ["kind", "outcome"]
)
DEPROVISIONS = Counter(
    "spinup_deprovisions", "Delete commands by kind and outcome.", ["kind", "outcome"]
)
ROTATIONS = Counter(
    "spinup_rotations", "Credential rotations by kind and outcome.", ["kind", "outcome"]
)
CLAIMS = Counter("spinup_claims", "Resource claims (one per resource) by outcome.", ["outcome"])
QUOTA_SWEEPS = Counter(
    "spinup_quota_sweeps",
    "Pages of usage sweeps asked of a kind's worker (docs/adr/0049), by outcome.",
    ["kind", "outcome"],
)

# -- NATS request-reply, requester side ---------------------------------------------------------
NATS_REQUEST_DURATION = Histogram(
    "spinup_nats_request_duration_seconds",
    "Round trip of a NATS request until its reply, a timeout or no responders.",
    ["endpoint"],
    buckets=_LATENCY_BUCKETS,
)
NATS_REQUESTS_IN_FLIGHT = Gauge(
    "spinup_nats_requests_in_flight",
    "NATS requests sent and not yet answered.",
    ["endpoint"],
    multiprocess_mode="livesum",
)

# -- warm pools -------------------------------------------------------------------------------
POOL_AVAILABLE = Gauge(
    "spinup_pool_available",
    "Warm-pool members ready to be taken.",
    ["kind"],
    multiprocess_mode="livesum",
)
POOL_REFILLS = Counter("spinup_pool_refills", "Warm-pool members made ready.", ["kind"])

# -- event log, relay, reaper ---------------------------------------------------------------------
EVENTLOG_APPEND_DURATION = Histogram(
    "spinup_eventlog_append_duration_seconds",
    "Time to append events (and update projections) in the platform Postgres.",
    buckets=_APPEND_BUCKETS,
)
RELAY_LAG = Gauge(
    "spinup_relay_lag_events",
    "Log positions the active relay has not yet published to JetStream.",
    multiprocess_mode="livemax",
)
REAPER_BACKLOG = Gauge(
    "spinup_reaper_backlog",
    "Resources due for removal (expired, orphaned) and not yet removed.",
    multiprocess_mode="livemax",
)
REAPER_DELETES = Counter(
    "spinup_reaper_deletes", "Resources the reaper removed, by kind and reason.", ["kind", "reason"]
)

# -- webhooks -----------------------------------------------------------------------------------
WEBHOOK_CAPTURES = Counter("spinup_webhook_captures", "Requests captured by webhook receivers.")
WEBHOOK_STREAM_DROPPED = Counter(
    "spinup_webhook_stream_dropped",
    "Live webhook streams refused: the gateway already follows SPINUP_MAX_LIVE_STREAMS.",
)

# -- S3 gateway reloads (ADR 0055) ---------------------------------------------------------------
S3_GATEWAY_RELOADS = Counter(
    "spinup_s3_gateway_reloads",
    "Full reloads of the S3 gateway's identities storage-provisioner's watch found (one a minute).",
)
S3_IDENTITIES_RESTORED = Counter(
    "spinup_s3_identities_restored",
    "S3 identity changes a reload of the gateway undid and storage-provisioner put back.",
)

# -- usage sweeps (ADR 0057) ---------------------------------------------------------------------
#: How a usage sweep took a tenant's usage: measured it, or let its last measure stand (the
#: backend's figures of it had not moved).
USAGE_MEASURED: Final = "measured"
USAGE_STANDING: Final = "standing"
USAGE_MEASURES = Counter(
    "spinup_usage_measures",
    "Tenants usage sweeps took the usage of, by kind and how: measured, or standing on the last.",
    ["kind", "measure"],
)

# -- backends -----------------------------------------------------------------------------------
BACKEND_UP = Gauge(
    "spinup_backend_up",
    "1 while the worker's last check of its backend succeeded, else 0.",
    ["backend"],
    multiprocess_mode="livemax",
)

BACKEND_CAPACITY_USED = Gauge(
    "spinup_backend_capacity_used",
    "What the shared server of a kind uses of one of its ceilings (connections, bytes, volumes).",
    ["backend", "ceiling"],
    multiprocess_mode="livemax",
)
BACKEND_CAPACITY_LIMIT = Gauge(
    "spinup_backend_capacity_limit",
    "The ceiling itself: what the shared server of a kind has for all its tenants together.",
    ["backend", "ceiling"],
    multiprocess_mode="livemax",
)

# Which counter a command subject's outcomes go to, and the kind it is about.
_SUBJECT_COUNTERS: dict[str, tuple[Counter, str]] = {}
# The counter child of each (known subject, outcome), looked up once.
_command_series: dict[tuple[str, ErrorCode | None], Any] = {}
for _kind, _endpoints in ENDPOINTS.items():
    _SUBJECT_COUNTERS[_endpoints.provision.subject] = (PROVISIONS, _kind.value)
    _SUBJECT_COUNTERS[_endpoints.deprovision.subject] = (DEPROVISIONS, _kind.value)
    _SUBJECT_COUNTERS[_endpoints.rotate.subject] = (ROTATIONS, _kind.value)
    _SUBJECT_COUNTERS[_endpoints.claim.subject] = (CLAIMS, "")
    _SUBJECT_COUNTERS[_endpoints.sweep_usage.subject] = (QUOTA_SWEEPS, _kind.value)


def outcome_of(code: ErrorCode | None) -> str:
    """The ``outcome`` label: ``ok``, or the error code's value."""
    return OK if code is None else code.value


def record_command(subject: str, code: ErrorCode | None) -> None:
    """Count one command's outcome on its verb's counter (provision, deprovision...)."""
    key = (subject, code)
    child = _command_series.get(key)
    if child is None:
        entry = _SUBJECT_COUNTERS.get(subject)
        if entry is None:
            return
        counter, kind = entry
        outcome = outcome_of(code)
        if counter is CLAIMS:
            child = counter.labels(outcome=outcome)
        else:
            child = counter.labels(kind=kind, outcome=outcome)
        _command_series[key] = child
    child.inc()


def method_label(method: str) -> str:
    """The ``method`` label: a standard method, else ``other`` (clients may send any word)."""
    return method if method in _METHODS else OTHER_METHOD


_PATH_PARAM_TYPE = re.compile(r"\{(\w+):\w+\}")


@functools.lru_cache(maxsize=1024)  # keyed by route templates: a closed set
def route_label(template: str | None) -> str:
    """The ``route`` label: the matched route's template (``/resources/{token}``), or unmatched.

    Unmatched: no route has this path, or none of its routes takes this method (404, 405).

    Litestar writes path parameters with their type (``{token:str}``); the type is dropped.
    """
    if not template:
        return UNMATCHED_ROUTE
    return _PATH_PARAM_TYPE.sub(r"{\1}", template)


@dataclass(frozen=True, slots=True)
class HttpSeries:
    """The series one (route, method, status) of the gateway updates, looked up once."""

    requests: Any
    duration: Any
    rate_limited: Any | None


# Every request updates these: looking the children up once per label set saves most of the
# cost of ``labels()`` (argument checks, a lock, a dict) on the hot path. Bounded like the labels.
_http_series: dict[tuple[str | None, str, int], HttpSeries] = {}
_nats_series: dict[str, tuple[Any, Any]] = {}


def http_series(template: str | None, method: str, status: int) -> HttpSeries:
    """The series of one answered request: route template (None: unmatched), method, status."""
    method_value = method_label(method)  # a client's made-up method never becomes a key
    key = (template, method_value, status)
    series = _http_series.get(key)
    if series is None:
        route = route_label(template)
        series = HttpSeries(
            requests=HTTP_REQUESTS.labels(route=route, method=method_value, status=status),
            duration=HTTP_REQUEST_DURATION.labels(route=route, method=method_value),
            rate_limited=(
                RATE_LIMITED.labels(route=route) if status == _HTTP_TOO_MANY_REQUESTS else None
            ),
        )
        _http_series[key] = series
    return series


#: Every declared command subject: the ``endpoint`` label takes one of these or ``other``.
_ENDPOINT_SUBJECTS = frozenset(
    {
        getattr(endpoints, field.name).subject
        for endpoints in ENDPOINTS.values()
        for field in dataclasses.fields(endpoints)
    }
    | {STACK_CONTROL.subject}
)


def nats_series(subject: str) -> tuple[Any, Any]:
    """(in-flight gauge, duration histogram) of one endpoint's requests."""
    if subject not in _ENDPOINT_SUBJECTS:
        subject = OTHER_ENDPOINT
    series = _nats_series.get(subject)
    if series is None:
        series = (
            NATS_REQUESTS_IN_FLIGHT.labels(endpoint=subject),
            NATS_REQUEST_DURATION.labels(endpoint=subject),
        )
        _nats_series[subject] = series
    return series


def is_bounded_outcome(value: str) -> bool:
    """Whether ``value`` is an outcome this module can produce (tests use it)."""
    return value == OK or value in _ERROR_CODES


# -- exposition ---------------------------------------------------------------------------------


def multiprocess() -> bool:
    """Whether this process writes its values for several processes to sum (the gateway)."""
    return bool(os.environ.get(MULTIPROC_DIR_VARIABLE))


def render() -> bytes:
    """This process's metrics, or every live process's when in multiprocess mode."""
    if multiprocess():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def metrics_port(env: Env) -> int:
    """The port a worker serves ``/metrics`` on (0: none)."""
    return env.integer(PORT_SETTING, DEFAULT_PORT)


def metrics_host(env: Env) -> str:
    """The address a worker's metrics listener binds (every interface inside a container)."""
    return env.string(HOST_SETTING, "0.0.0.0")  # noqa: S104  (scraped from outside the pod)


@contextlib.contextmanager
def serve_metrics(host: str, port: int) -> Iterator[None]:
    """Answer ``GET /metrics`` on ``host:port`` while the block runs (nothing for port 0).

    prometheus-client's own server, in a thread: a scrape never waits on the event loop, and a
    stuck loop still shows its last values.
    """
    if port == 0:
        yield
        return
    server, thread = start_http_server(port, addr=host)
    log.info("metrics.serving", url=f"http://{host}:{port}/metrics")
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
