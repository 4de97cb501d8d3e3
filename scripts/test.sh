#!/usr/bin/env bash
# Runs the test suite; pass --runslow to include tests marked slow.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m ruff check src tests bench
python3 -m pytest -q "$@"
