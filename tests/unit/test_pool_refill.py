"""When the warm pool refills: at once when it runs low, else after takes pause.

A steady trickle of takes (the reaper measurement's one every 0.2 s) never pauses for
``REFILL_QUIET_S``: waiting for an empty pool then sent each take that came during the refills
to a cold ``CREATE DATABASE`` (bench/README.md).
"""

from __future__ import annotations

import pytest

from pg_provisioner.pool import REFILL_QUIET_S, refill_wait


def test_above_its_reserve_a_busy_pool_waits_for_takes_to_pause() -> None:
    assert refill_wait(ready=3, reserve=2, since_last_take_s=0.05) == pytest.approx(
        REFILL_QUIET_S - 0.05
    )


def test_a_quiet_pool_refills_at_once() -> None:
    assert refill_wait(ready=15, reserve=2, since_last_take_s=REFILL_QUIET_S) == 0


@pytest.mark.parametrize("ready", [2, 1, 0])
def test_at_or_below_its_reserve_a_pool_refills_however_busy(ready: int) -> None:
    assert refill_wait(ready=ready, reserve=2, since_last_take_s=0.0) == 0
