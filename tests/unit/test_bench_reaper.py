"""The reaper measurement's account of cold creates: which probes the warm pool did not serve."""

from __future__ import annotations

from bench.harness import cold_probes
from bench.measure import Measurement


def _probes(name: str, latencies_ms: list[float]) -> Measurement:
    return Measurement(name=name, concurrency=1, latencies_s=[ms / 1000 for ms in latencies_ms])


def test_the_slow_busy_probes_are_told_apart_by_whether_the_pool_served_them() -> None:
    # 100 idle probes, the two slowest at 20 ms: a p99 of 20 ms, so the bound is 40 ms.
    idle = _probes("idle", [10.0] * 98 + [20.0, 20.0])
    idle_ids = [f"i{n}" for n in range(100)]
    busy = _probes("busy", [12.0, 150.0, 11.0, 90.0, 39.0])
    busy_ids = ["b0", "b1", "b2", "b3", "b4"]
    # The pool served every probe but i7, b1 and b4.
    served = {*idle_ids, *busy_ids} - {"i7", "b1", "b4"}

    counted = cold_probes(idle, idle_ids, busy, busy_ids, served)

    assert counted == {
        "idle_probes": 100,
        "busy_probes": 5,
        "idle_cold": 1,
        "busy_cold": 2,
        "busy_over_target": 2,  # b1 (150 ms) and b3 (90 ms)
        "busy_over_target_cold": 1,  # b1; b3 was served by the pool, b4 was cold but fast
    }
