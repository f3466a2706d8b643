"""devstack.secantusd's ``--setParameter``: mongod's spelling, mongod's refusals."""

import pytest

from devstack.secantusd import (
    MIN_SCRAM_ITERATIONS,
    LauncherArgsError,
    main,
    split_parameters,
)


def test_the_iteration_count_is_taken_out_and_every_other_flag_left_in_order() -> None:
    parameters, rest = split_parameters(
        ["--port", "1", "--setParameter", "scramSHA256IterationCount=5000", "--auth"]
    )
    assert parameters == {"scramSHA256IterationCount": 5000}
    assert rest == ["--port", "1", "--auth"]
    joined, _ = split_parameters(["--setParameter=scramSHA256IterationCount=20000"])
    assert joined == {"scramSHA256IterationCount": 20000}
    assert split_parameters(["--auth"]) == ({}, ["--auth"])


@pytest.mark.parametrize(
    "setting",
    [
        f"scramSHA256IterationCount={MIN_SCRAM_ITERATIONS - 1}",  # under mongod's least
        "scramSHA256IterationCount=many",
        "scramSHA256IterationCount=",
        "scramIterationCount=5000",  # SCRAM-SHA-1's: SecantusDB speaks only SHA-256
        "logLevel=1",  # a parameter this launcher does not honour is refused, not ignored
    ],
)
def test_a_parameter_it_cannot_honour_is_refused(setting: str) -> None:
    with pytest.raises(LauncherArgsError):
        split_parameters(["--setParameter", setting])


def test_a_refused_parameter_stops_the_launcher_before_the_server_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--setParameter", "scramSHA256IterationCount=100"]) == 2
    assert "scramSHA256IterationCount must be an integer >= 5000" in capsys.readouterr().err
    assert main(["--setParameter"]) == 2
