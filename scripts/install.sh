#!/usr/bin/env bash
# Installs instaseg (editable) with its dev tools. torch/torchvision are pinned through constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --progress-bar off -c constraints.txt -e ".[deploy,ray,serve,dev]"
# The page test drives a headless Chromium through Playwright; Playwright's own browser download is not used, the
# system's package is. Installed with apt-get where this runs as root on Debian/Ubuntu; elsewhere that test skips.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "note: chromium is not installed (apt-get install chromium); the browser test of the serve page will skip"
    fi
fi
