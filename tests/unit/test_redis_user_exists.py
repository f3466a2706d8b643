"""How the Redis usage sweep reads ``ACL DRYRUN``'s answers (ADR 0059)."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from redis_provisioner.driver import _user_exists


def test_only_the_users_own_not_found_says_it_is_missing() -> None:
    assert _user_exists("t_a", b"OK") is True
    # A user whose rules refuse PING still exists: the answer is a string, not an error.
    assert _user_exists("t_a", b"This user has no permissions to run the 'ping' command") is True
    assert _user_exists("t_a", ResponseError("User 't_a' not found")) is False


def test_any_other_refusal_is_raised_not_taken_for_a_missing_user() -> None:
    for refusal in (
        ResponseError("unknown subcommand 'DRYRUN'. Try ACL HELP."),
        ResponseError("Command 'ping' not found"),
        ResponseError("User 't_b' not found"),
    ):
        with pytest.raises(ResponseError):
            _user_exists("t_a", refusal)
