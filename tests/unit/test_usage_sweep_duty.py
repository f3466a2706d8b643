"""The usage sweep's rests: measuring takes at most its duty's share of the sweep (ADR 0044)."""

from __future__ import annotations

import pytest

from shared.lifecycle import USAGE_SWEEP_DUTY, rest_after


def test_a_batch_is_followed_by_a_rest_that_leaves_it_its_duty_of_the_time() -> None:
    assert rest_after(0.2, 0.25) == pytest.approx(0.6)  # 0.2 of every 0.8 s
    assert rest_after(0.2, 0.5) == pytest.approx(0.2)
    assert rest_after(0.2, 1.0) == 0.0  # the sweep as it was: batch after batch


def test_the_default_duty_measures_a_quarter_of_the_time() -> None:
    took = 0.1
    assert took / (took + rest_after(took, USAGE_SWEEP_DUTY)) == pytest.approx(0.25)


@pytest.mark.parametrize("duty", [0.0, -0.5, 1.5])
def test_a_duty_outside_zero_to_one_is_refused(duty: float) -> None:
    with pytest.raises(ValueError, match="duty must be in"):
        rest_after(0.1, duty)
