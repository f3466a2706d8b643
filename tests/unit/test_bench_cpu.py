"""``bench.cpu``: the CPU a measurement cost, counted per process tree from ``/proc``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from bench.cpu import LOAD_GENERATOR, CpuMeter, cores, cpu_bound_per_s, until_quiet

#: A child that spins on the CPU for about half a second, then waits to be ended.
_SPIN_THEN_WAIT = (
    "import time, sys\n"
    "end = time.process_time() + 0.5\n"
    "while time.process_time() < end: pass\n"
    "print('done', flush=True)\n"
    "sys.stdin.read()\n"
)


def test_a_process_tree_is_counted_with_its_children_and_the_load_generator() -> None:
    # A shell whose child does the work (a second command keeps the shell from exec-ing it):
    # the work is counted under the shell's name, as Postgres's backends are under Postgres's.
    with subprocess.Popen(  # noqa: S603  (our own interpreter, fixed arguments)
        ["/bin/sh", "-c", '"$0" -c "$1"; exit $?', sys.executable, _SPIN_THEN_WAIT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as shell:
        meter = CpuMeter({"spinner": shell.pid})
        meter.start()
        assert shell.stdout is not None
        line = shell.stdout.readline()
        spent = meter.per_call(10)
        shell.kill()

    assert line.strip() == "done"
    # Half a second over ten calls is 50 ms a call; ticks are 10 ms, so allow for rounding.
    assert 30 <= spent["spinner"] <= 80, spent
    assert LOAD_GENERATOR in spent
    assert list(spent.values()) == sorted(spent.values(), reverse=True)


def test_what_the_cores_allow_is_the_cores_over_the_cpu_per_call() -> None:
    assert cpu_bound_per_s(2.0) == round(cores() * 500)
    assert cpu_bound_per_s(0.0) is None


def test_processes_idle_during_a_measurement_are_left_out() -> None:
    with subprocess.Popen(["/bin/sleep", "5"]) as sleeper:
        meter = CpuMeter({"sleeper": sleeper.pid})
        meter.start()
        time.sleep(0.05)
        spent = meter.per_call(1)
        sleeper.kill()
    assert "sleeper" not in spent


#: A child that spins on the CPU for about a second, then sleeps until it is ended.
_SPIN_THEN_SLEEP = (
    "import time\n"
    "end = time.process_time() + 1.0\n"
    "while time.process_time() < end: pass\n"
    "time.sleep(60)\n"
)


def test_waiting_for_quiet_lasts_as_long_as_the_work_left_behind() -> None:
    with subprocess.Popen([sys.executable, "-c", _SPIN_THEN_SLEEP]) as busy:  # noqa: S603
        waited, used = asyncio.run(
            until_quiet({"busy": busy.pid}, below_cores=0.2, within_s=10, window_s=0.25)
        )
        busy.kill()
    assert 0.75 <= waited < 5, waited
    assert used < 0.2


def test_waiting_for_quiet_gives_up_and_says_how_busy_it_still_was() -> None:
    with subprocess.Popen([sys.executable, "-c", _SPIN_THEN_SLEEP]) as busy:  # noqa: S603
        waited, used = asyncio.run(
            until_quiet({"busy": busy.pid}, below_cores=0.2, within_s=0.25, window_s=0.25)
        )
        busy.kill()
    assert waited < 1
    assert used > 0.5
