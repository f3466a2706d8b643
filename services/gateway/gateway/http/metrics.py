"""``GET /metrics``: the gateway's Prometheus metrics (every process's, when there are several)."""

from __future__ import annotations

from litestar import Response, get

from shared.observability import metrics


# Sync, in a thread: with several processes a scrape reads each one's value files.
@get("/metrics", include_in_schema=False, sync_to_thread=True)
def show_metrics() -> Response[bytes]:
    """Prometheus text exposition of ``shared.observability.metrics``."""
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)


METRICS_ROUTES = [show_metrics]
