#!/usr/bin/env bash
# `make test`'s pytest: two groups side by side, each against a stack of its own.
#   engine: everything that uses the container engine (stacks, the console's stack page, the
#           image builds, and test_containment, which restarts the engine: nothing else may use
#           it meanwhile), with the black-box suite it belongs to (tests/e2e);
#   rest:   every other test (unit, integration, deploy, browser...): whatever is not named
#           for the engine group runs here, so a new test file is never left out.
# Each group's output goes to its own log; both are printed, and the run fails if either does.
# Extra arguments go to both pytest runs.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ENGINE=(tests/e2e tests/browser tests/integration/test_stack_deployer.py tests/deploy/test_images.py)
ignores=()
for path in "${ENGINE[@]}"; do ignores+=("--ignore=$path"); done

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
SPINUP_TEST_STACK=test-engine .venv/bin/pytest "${ENGINE[@]}" "$@" >"$logs/engine.log" 2>&1 &
engine=$!
SPINUP_TEST_STACK=test .venv/bin/pytest tests "${ignores[@]}" "$@" >"$logs/rest.log" 2>&1 &
rest=$!

wait "$rest"; rest_status=$?
wait "$engine"; engine_status=$?
printf '\n===== pytest: unit, integration, deploy, browser (stack "test") =====\n'
cat "$logs/rest.log"
printf '\n===== pytest: end to end and the container engine (stack "test-engine") =====\n'
cat "$logs/engine.log"
if ((rest_status != 0 || engine_status != 0)); then
    printf '\npytest failed: rest exit %d, engine exit %d\n' "$rest_status" "$engine_status"
    exit 1
fi
