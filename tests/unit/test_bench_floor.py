"""``bench.floor``'s table: what it prints from a round's figures."""

from __future__ import annotations

from bench.cpu import cores
from bench.floor import ALONE_P50, FLOORS, RATE, table


def test_a_floor_without_a_cpu_tick_is_shown_as_unknown_not_divided_by() -> None:
    # A short run's few calls of a step can all fall between two of the kernel's 10 ms ticks.
    idle = {RATE: 100.0, ALONE_P50: 0.5}
    steps = {step: dict(idle) for parts in FLOORS.values() for step in parts}
    paths = {path: dict(idle) for path in FLOORS}

    lines = table({"steps": steps, "paths": paths})

    floors = [line for line in lines if "CPU floor" in line]
    assert len(floors) == len(FLOORS)
    assert all("CPU floor 0.00 ms (allows     -/s)" in line for line in floors), floors


def test_a_floor_is_shown_with_what_it_allows_on_this_machine() -> None:
    steps = {
        step: {RATE: 100.0, ALONE_P50: 0.5, "gateway": 0.25}
        for parts in FLOORS.values()
        for step in parts
    }
    paths = {path: {RATE: 100.0, ALONE_P50: 1.0, "gateway": 1.0} for path in FLOORS}

    lines = table({"steps": steps, "paths": paths})

    path = "POST /webhook/new"
    floor = 0.25 * len(FLOORS[path])
    webhook = next(line for line in lines if line.lstrip().startswith(path))
    assert f"CPU floor {floor:4.2f} ms (allows {cores() * 1000 / floor:5.0f}/s)" in webhook, webhook
    assert "measured 1.00 ms at  100.0/s" in webhook, webhook
