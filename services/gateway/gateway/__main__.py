"""``python -m gateway``.

Several HTTP processes (``SPINUP_HTTP_PROCESSES``) share their metrics through files:
prometheus-client reads ``PROMETHEUS_MULTIPROC_DIR`` once, when it is first imported, so the
directory is chosen here, before anything imports it. Each gateway gets a fresh directory of its
own (under ``SPINUP_METRICS_DIR`` when set), removed when it stops: values of an earlier run or of
another gateway never mix into a scrape.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path


def _share_metrics_between_processes() -> None:
    try:
        processes = int(os.environ.get("SPINUP_HTTP_PROCESSES", "1") or "1")
    except ValueError:
        return  # the settings report it, with the variable's name
    if processes <= 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    parent = os.environ.get("SPINUP_METRICS_DIR") or None
    if parent is not None:
        Path(parent).mkdir(parents=True, exist_ok=True)
    directory = tempfile.mkdtemp(prefix="gateway-metrics-", dir=parent)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    # Runs in the forking process only: its children end with os._exit.
    atexit.register(shutil.rmtree, directory, ignore_errors=True)


_share_metrics_between_processes()

from gateway.main import main  # noqa: E402  (after the metrics directory is chosen)

raise SystemExit(main())
