"""``bench.report``: the results' tables, the platform's CPU beside the whole machine's."""

from __future__ import annotations

from typing import Any

from bench.cpu import LOAD_GENERATOR
from bench.report import markdown, stack_cpu_ms


def _row(**fields: Any) -> dict[str, Any]:
    return {
        "group": "end to end",
        "name": "POST /cache/new",
        "kind": "redis",
        "concurrency": 16,
        "calls": 500,
        "errors": 0,
        "p50_ms": 19.0,
        "p90_ms": 28.0,
        "p99_ms": 47.0,
        "max_ms": 59.0,
        "per_s": 786.0,
        "cpu_ms_per_call": 2.43,
        "cpu_bound_per_s": 823.0,
        "cpu_ms_by_process": {"gateway": 0.82, "redis-provisioner": 0.58, LOAD_GENERATOR: 0.19},
        **fields,
    }


def test_the_stack_cpu_leaves_the_load_generator_out() -> None:
    assert abs((stack_cpu_ms(_row()) or 0) - 2.24) < 1e-9
    # A row measured without the per-process split shows none rather than the whole.
    assert stack_cpu_ms(_row(cpu_ms_by_process=None)) is None
    assert stack_cpu_ms(_row(cpu_ms_per_call=None)) is None


def test_the_table_shows_both_cpu_columns() -> None:
    data = {
        "mode": "full",
        "started_at": "2026-12-06T14:27:29+00:00",
        "duration_s": 470.0,
        "machine": {
            "cores": 2,
            "cpu": "AMD EPYC",
            "memory_gib": 23.5,
            "kernel": "6.18",
            "load_average": [1.0, 1.5, 1.7],
        },
        "versions": {"python": "3.11.7"},
        "rows": [_row()],
        "webhook_capture": None,
        "reaper": None,
        "profile": None,
        "notes": [],
    }
    lines = markdown(data).splitlines()
    head = next(line for line in lines if line.startswith("| What |"))
    assert "| CPU ms/call | stack ms/call | CPU allows /s |" in head
    row = next(line for line in lines if line.startswith("| POST /cache/new |"))
    assert "| 2.43 | 2.24 | 823 |" in row
