"""The pieces of an answer on their own: PaddleX's rounded-box mask crops, polygons in image pixels, what counts as
a URL, and the command line's one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from instaseg.data.masks import mask_to_polygons, mask_to_rle
from instaseg.deploy.serve.answers import box_crop_rle, polygons, rounded_box
from instaseg.deploy.serve.inputs import is_url
from instaseg.inference.result import Result


def _paddlex_crop(mask: np.ndarray, box: list[float]) -> np.ndarray:
    """PaddleX's own rule, written out: ``mask[round(y1):round(y2), round(x1):round(x2)]``."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return mask[y0:y1, x0:x1]


@pytest.mark.parametrize(
    "box", [[2.5, 3.5, 20.5, 17.5], [0.0, 0.0, 40.0, 30.0], [10.49, 4.51, 10.5, 29.99], [5.2, 6.7, 5.4, 6.9]]
)
def test_crop_rle_is_paddlex_crop(box: list[float]) -> None:
    rng = np.random.default_rng(0)
    mask = (rng.random((30, 40)) > 0.5).astype(np.uint8)
    counts, size = box_crop_rle(mask_to_rle(mask), np.array(box, np.float32), (30, 40))
    expected = _paddlex_crop(mask, [float(v) for v in np.array(box, np.float32)])
    assert size == list(expected.shape)
    decoded = mask_utils.decode({"size": size, "counts": counts.encode()}) if expected.size else expected
    np.testing.assert_array_equal(decoded, expected)


def test_rounding_is_pythons_and_boxes_stay_inside() -> None:
    assert rounded_box(np.array([2.5, 3.5, 4.5, 5.5]), (10, 10)) == (2, 4, 4, 6)  # half to even, as round()
    assert rounded_box(np.array([-3.0, -1.0, 12.0, 15.0]), (10, 10)) == (0, 0, 10, 10)


def test_polygons_are_in_image_pixels() -> None:
    mask = np.zeros((50, 60), np.uint8)
    mask[10:20, 30:45] = 1
    mask[30:35, 5:9] = 1
    boxes = np.array([[5, 10, 45, 35]], np.float32)
    result = Result(boxes=boxes, scores=np.array([0.9]), labels=np.array([1]), rles=[mask_to_rle(mask)],
                    image_size=(50, 60), class_names=["a"])
    assert polygons(result) == [mask_to_polygons(mask)]


@pytest.mark.parametrize(
    "text, url",
    [("http://example.com/a.png", True), ("https://h/x", True), ("http://", False), ("ftp://h/a.png", False),
     ("file:///etc/passwd", False), ("iVBORw0KGgo=", False)],
)
def test_url_rule(text: str, url: bool) -> None:
    assert is_url(text) is url


def test_cli_refuses_in_one_line(cli, tmp_path) -> None:
    code, _, err = cli("serve", "--model", tmp_path / "missing.pt")
    assert code == 2 and "model file not found" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("serve", "--model", tmp_path / "missing.pt", "--max-queue", "0")
    assert code == 2 and "max queue" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("serve", "--model", tmp_path / "m.pt", "--engine", "ray", "--autoscale", "4:2")
    assert code == 2 and "--autoscale" in err
