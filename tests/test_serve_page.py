"""The page at ``/`` in a real headless Chromium: choose an image, see the overlay and the list of instances.

The screenshot is kept as a test artifact in ``test-artifacts/serve_page.png`` (or ``$INSTASEG_TEST_ARTIFACTS``).
Chromium comes from the system (``scripts/install.sh`` installs Debian's package); Playwright drives it.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import instaseg
from serve_helpers import REPO, make_tiny_checkpoint, png_bytes, running_server, sample_image

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium on this machine (scripts/install.sh installs Debian's chromium package)")


def _artifacts() -> Path:
    folder = Path(os.environ.get("INSTASEG_TEST_ARTIFACTS", REPO / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_page_shows_overlay_and_instances(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    browser_path = _chromium()
    ckpt = make_tiny_checkpoint(tmp_path / "tiny.pt")
    picture = tmp_path / "street.png"
    image = sample_image(3, 240, 320)
    picture.write_bytes(png_bytes(image))
    expected = next(instaseg.create_model(ckpt, threshold=0.3).predict(picture))
    shot = _artifacts() / "serve_page.png"
    with running_server(ckpt, "--threshold", "0.3", log=tmp_path / "server.log") as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.goto(f"http://127.0.0.1:{server.port}/")
            page.wait_for_function("document.getElementById('model').textContent.includes('torch')")
            page.set_input_files("#file", str(picture))
            page.wait_for_function("document.getElementById('overlay').naturalWidth > 0", timeout=60_000)
            rows = page.locator("#instances tbody tr")
            assert rows.count() == len(expected) > 0
            assert rows.nth(0).locator("td").nth(1).inner_text() == expected.label_name(expected.labels[0])
            assert page.inner_text("#error") == ""
            src = page.get_attribute("#overlay", "src")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    overlay = cv2.imdecode(np.frombuffer(base64.b64decode(src.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == image.shape
    changed = np.abs(overlay[..., ::-1].astype(int) - image.astype(int)).max(axis=2) > 40
    assert changed.mean() > 0.01  # masks and tags drawn over the picture, not the picture sent back
    assert shot.stat().st_size > 10_000
