#!/usr/bin/env bash
# `make test`'s pytest: two groups side by side, each against a stack of its own. The engine
# group is the files tests/conftest.py lists in ENGINE_GROUP (they use the container engine, and
# test_containment restarts it); the rest group is every other test, so a new file is never
# left out. Each group's output goes to its own log; both are printed, the slowest tests with
# them, and the run fails if either group does. Extra arguments go to both pytest runs.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
SPINUP_TEST_GROUP=engine SPINUP_TEST_STACK=test-engine .venv/bin/pytest --durations=10 "$@" \
    >"$logs/engine.log" 2>&1 &
engine=$!
SPINUP_TEST_GROUP=rest SPINUP_TEST_STACK=test .venv/bin/pytest --durations=10 "$@" \
    >"$logs/rest.log" 2>&1 &
rest=$!

wait "$rest"; rest_status=$?
wait "$engine"; engine_status=$?
printf '\n===== pytest, rest group (stack "test") =====\n'
cat "$logs/rest.log"
printf '\n===== pytest, engine group (stack "test-engine") =====\n'
cat "$logs/engine.log"
if ((rest_status != 0 || engine_status != 0)); then
    printf '\npytest failed: rest group exit %d, engine group exit %d\n' "$rest_status" "$engine_status"
    exit 1
fi
