"""Tracing is off (no span, no header) until an OTLP endpoint is configured; then it exports."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import structlog

from shared.observability import tracing


def test_nothing_is_recorded_or_propagated_while_tracing_is_off() -> None:
    assert not tracing.configure_tracing("gateway", {"SPINUP_LOG_LEVEL": "info"})
    assert not tracing.enabled()
    assert tracing.inject() is None
    assert tracing.extract({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) is None
    with tracing.span("anything") as current:
        assert current is None


def test_spans_are_exported_over_otlp_http_once_an_endpoint_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    received: list[tuple[str, str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((self.path, self.headers["content-type"], body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        assert tracing.configure_tracing("gateway", {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        try:
            with (
                structlog.contextvars.bound_contextvars(correlation_id="req-0123456789"),
                tracing.span("HTTP GET /plans"),
            ):
                assert tracing.inject() is not None
        finally:
            tracing.uninstall()  # flushes the batch
    finally:
        server.shutdown()
        server.server_close()
    assert [(path, kind) for path, kind, _ in received] == [
        ("/v1/traces", "application/x-protobuf")
    ]
    assert b"HTTP GET /plans" in received[0][2]
    assert b"req-0123456789" in received[0][2]
