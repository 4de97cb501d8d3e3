#!/usr/bin/env bash
# Runs ruff, the test suite, then the slow tests (training to an AP bar, multi-process and multi-node runs, Ray)
# when time allows: only if the suite itself finished within INSTASEG_SLOW_BUDGET seconds (default 720), so a
# machine twice as slow still ends well inside CI's 30 minutes. INSTASEG_SLOW=always|never overrides the rule.
# For the quick loop while developing: python3 -m pytest -q   (slow tests skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m ruff check src tests bench
start=$(date +%s)
python3 -m pytest -q "$@"
elapsed=$(( $(date +%s) - start ))
budget=${INSTASEG_SLOW_BUDGET:-720}
mode=${INSTASEG_SLOW:-auto}
if [[ $mode == never || ( $mode == auto && $elapsed -gt $budget ) ]]; then
    echo "slow tests not run: the suite took ${elapsed} s (budget ${budget} s, INSTASEG_SLOW=${mode})"
    exit 0
fi
echo "the suite took ${elapsed} s: running the slow tests"
# the INT8 accuracy tests of every architecture (-m int8) take longer than CI has: run them by hand
python3 -m pytest -q --runslow -m "slow and not int8" "$@"
