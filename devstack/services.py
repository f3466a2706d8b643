"""The Spinup services, each run as ``<python> -m <package>`` with the stack's environment.

Readiness, so a test's first request never races a service's start-up:

- ``http``: ``GET <url>/readyz`` answers 200 (the gateway);
- ``queue``: the NATS monitor shows a connection that opened after this start, whose client name
  is the service name, subscribed in the queue group named after the service (command workers);
- ``nats``: such a connection exists, whatever it subscribes (the reaper).

The client-name and queue-group conventions come from DESIGN.md ("every worker subscribes in a
queue group named after itself"); ``shared.bus.Bus.connect(name=...)`` sets the client name.
"""

from __future__ import annotations

import enum
import importlib.util
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

from devstack.procs import DevstackError, ManagedProcess, http_ok, wait_until

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path


class Readiness(enum.Enum):
    """How to tell that a service has finished starting."""

    HTTP = "http"
    QUEUE = "queue"
    NATS = "nats"


@dataclass(frozen=True, kw_only=True)
class ServiceSpec:
    """What to run for a service and how to know it is ready."""

    module: str
    readiness: Readiness


#: The platform's own services (the backends' workers start before these), in start order.
#: Name (kebab-case): log file, NATS client name, queue group.
SERVICES: dict[str, ServiceSpec] = {
    "reaper": ServiceSpec(module="reaper", readiness=Readiness.NATS),
    "gateway": ServiceSpec(module="gateway", readiness=Readiness.HTTP),
}


def _nats_connections(monitor_url: str) -> list[dict[str, object]]:
    """Return the open client connections the NATS monitor reports ([] if it does not answer)."""
    url = f"{monitor_url}/connz?subs=detail&limit=4096"
    if not url.startswith("http://"):
        msg = f"not an http url: {url}"
        raise ValueError(msg)
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 (http only)
            body = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return []
    connections = body.get("connections") if isinstance(body, dict) else None
    return [item for item in connections or [] if isinstance(item, dict)]


def _cid(connection: Mapping[str, object]) -> int:
    value = connection.get("cid")
    return value if isinstance(value, int) else 0


def _queue_groups(connection: Mapping[str, object]) -> set[str]:
    subscriptions = connection.get("subscriptions_list_detail")
    if not isinstance(subscriptions, list):
        return set()
    return {
        str(sub["qgroup"]) for sub in subscriptions if isinstance(sub, dict) and sub.get("qgroup")
    }


class ServiceProcess(ManagedProcess):
    """One service process with its readiness check."""

    def __init__(
        self,
        name: str,
        *,
        spec: ServiceSpec,
        python: str,
        root: Path,
        log_path: Path,
        pid_path: Path,
        nats_monitor_url: str,
        http_url: str | None = None,
        metrics_port: int | None = None,
    ) -> None:
        """Describe the service; ``start`` runs it. ``http_url`` is required for HTTP readiness.

        ``metrics_port``: where a service without HTTP serves ``/metrics`` (a gateway serves it
        on ``http_url``).
        """
        super().__init__(name, log_path=log_path, pid_path=pid_path)
        if spec.readiness is Readiness.HTTP and http_url is None:
            msg = f"{name}: HTTP readiness needs an http_url"
            raise ValueError(msg)
        self.spec = spec
        self.python = python
        self.root = root
        self.nats_monitor_url = nats_monitor_url
        self.http_url = http_url
        self.metrics_port = metrics_port
        self._cid_floor = 0

    @property
    def url(self) -> str | None:
        """The service's base HTTP URL (gateways only)."""
        return self.http_url

    @property
    def metrics_url(self) -> str | None:
        """Where Prometheus scrapes this service (None: it serves no metrics)."""
        if self.http_url is not None:
            return f"{self.http_url}/metrics"
        if self.metrics_port is not None:
            return f"http://127.0.0.1:{self.metrics_port}/metrics"
        return None

    def start(self, env: Mapping[str, str]) -> None:
        """Start ``<python> -m <module>`` in the repo root with exactly ``env``.

        Raises:
            DevstackError: the package cannot be imported by that Python.
        """
        if importlib.util.find_spec(self.spec.module) is None:
            msg = f"{self.name}: package {self.spec.module!r} not found (make setup?)"
            raise DevstackError(msg)
        # Connections of an earlier instance must not count as this one being ready.
        connections = _nats_connections(self.nats_monitor_url)
        self._cid_floor = max((_cid(item) for item in connections), default=0)
        self.spawn([self.python, "-m", self.spec.module], env=env, cwd=self.root)

    def ready(self) -> bool:
        """Return whether the service is running and its readiness check passes."""
        if not self.is_running():
            return False
        if self.spec.readiness is Readiness.HTTP:
            return http_ok(f"{self.http_url}/readyz")
        for connection in _nats_connections(self.nats_monitor_url):
            if connection.get("name") != self.name or _cid(connection) <= self._cid_floor:
                continue
            if self.spec.readiness is Readiness.NATS or self.name in _queue_groups(connection):
                return True
        return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until ``ready``, or raise DevstackError with the log's tail."""
        wait_until(
            self.ready, timeout=timeout, what=self.name, alive=self.is_running, log=self.log_path
        )
