"""The CPU a measurement costs the machine: every process of the stack, and the load generator.

A rate measured on two shared cores says little by itself: the same code makes twice the calls
on a machine with twice the cores, and a slow row may be one waiting on a lock or one with the
CPU spent. Counting the CPU each process used during a measurement (``/proc``, with the
children each process made: Postgres's backends) tells them apart: ``cores / CPU per call`` is
the most calls a second this machine could make if nothing but the measurement ran, so a rate
near it is bound by the CPU of the whole path, and one far below it by something else.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.procs import stat_fields

if TYPE_CHECKING:
    from devstack.stack import Stack

#: The name of the bench's own process in a measurement's CPU, beside the stack's processes.
LOAD_GENERATOR = "load generator"


def cores() -> int:
    """How many cores this process may run on."""
    return len(os.sched_getaffinity(0))


def stack_processes(stack: Stack) -> dict[str, int]:
    """The pid of every server and service ``stack`` runs, by name."""
    return {
        name: process.pid
        for name, process in {**stack.servers, **stack.services}.items()
        if process.pid is not None
    }


def cpu_seconds_by_tree(roots: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each root process and its descendants have used so far.

    Descendants that ended count through their parent's ``cutime``/``cstime`` once reaped.
    """
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not (fields := stat_fields(int(entry.name))):
            continue  # not a process, or one that ended while we looked
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        # utime, stime, and cutime, cstime: the children it has reaped.
        used[pid] = sum(int(f) for f in fields[11:15]) / tick
    totals = {}
    for name, root in roots.items():
        tree, frontier = {root}, [root]
        while frontier:
            below = children.get(frontier.pop(), [])
            tree.update(below)
            frontier.extend(below)
        totals[name] = sum(used.get(pid, 0.0) for pid in tree)
    return totals


@dataclass
class CpuMeter:
    """CPU used between ``start`` and ``per_call`` by ``processes`` and by this process."""

    processes: Mapping[str, int]
    _before: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        """Read every counter now."""
        self._before = self._read()

    def per_call(self, calls: int) -> dict[str, float]:
        """Milliseconds of CPU each process spent per call since ``start``, largest first.

        Processes that spent under a hundredth of a millisecond per call are left out: idle.
        """
        after = self._read()
        spent = {
            name: (after[name] - self._before.get(name, after[name])) * 1000 / max(calls, 1)
            for name in after
        }
        return {
            name: round(ms, 3)
            for name, ms in sorted(spent.items(), key=lambda item: -item[1])
            if ms >= 0.01  # noqa: PLR2004  (a hundredth of a millisecond per call: idle)
        }

    def _read(self) -> dict[str, float]:
        counters = cpu_seconds_by_tree(self.processes)
        counters[LOAD_GENERATOR] = time.process_time()
        return counters


def cpu_bound_per_s(cpu_ms_per_call: float) -> float | None:
    """The calls a second this machine's cores allow at this much CPU per call."""
    return round(cores() * 1000 / cpu_ms_per_call, 0) if cpu_ms_per_call > 0 else None


async def until_quiet(
    processes: Mapping[str, int], *, below_cores: float, within_s: float, window_s: float = 1.0
) -> tuple[float, float]:
    """Wait until ``processes`` together use under ``below_cores`` over a ``window_s`` window.

    Work one measurement leaves behind (SeaweedFS still serving the IAM changes of creates the
    worker gave up on, a queue of drops) runs under the next one and is counted in its CPU.
    Returns how long it waited and the cores the last window used; gives up after ``within_s``.
    """
    began = time.perf_counter()
    while True:
        meter = CpuMeter(processes)
        meter.start()
        await asyncio.sleep(window_s)
        used = sum(meter.per_call(1).values()) / 1000 / window_s
        waited = time.perf_counter() - began
        if used < below_cores or waited >= within_s:
            return waited, used
