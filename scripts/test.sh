#!/usr/bin/env bash
# Runs ruff and the whole test suite, slow tests included (about 3-4 minutes on 2 CPU cores).
# For the quick loop while developing: python3 -m pytest -q   (slow tests skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m ruff check src tests bench
python3 -m pytest -q --runslow "$@"
