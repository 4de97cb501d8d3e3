#!/usr/bin/env bash
# Installs instaseg (editable) with its dev tools. torch/torchvision are pinned through constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --progress-bar off -c constraints.txt -e ".[deploy,ray,dev]"
