"""Tiled prediction in the predictor, and tiles for training."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
import torch

from instaseg.data.coco import CocoData
from instaseg.data.tiles import TiledInstanceDataset
from instaseg.inference.postprocess import CropDetections, RawDetections
from instaseg.inference.predictor import Predictor
from instaseg.inference.tiling import TilingOptions, cut_by_border, merge
from instaseg.models.detector import InputSpec


class SquareFinder:
    """A backend that finds every bright blob of its input (a detector that is right whenever it can see)."""

    name = "squares"
    device = torch.device("cpu")

    def __init__(self, size: int = 256):
        self.spec = InputSpec(size, size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), size_divisible=32)

    def synchronize(self) -> None:
        pass

    def __call__(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawDetections]:
        out = []
        for image, (h, w) in zip(batch, image_sizes, strict=True):
            bright = (image[0, :h, :w].numpy() > 0.5).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=4)
            boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh, _ in stats[1:]], dtype=np.float32)
            out.append(
                RawDetections(
                    boxes=boxes.reshape(-1, 4),
                    scores=np.full(n - 1, 0.9, dtype=np.float32),
                    labels=np.ones(n - 1, dtype=np.int64),
                    masks=np.ones((n - 1, 28, 28), dtype=np.float32),  # each blob fills its box
                )
            )
        return out


def _squares(size: int, side: int, gap: int) -> tuple[np.ndarray, int]:
    image = np.zeros((size, size, 3), dtype=np.uint8)
    count = 0
    for y in range(gap, size - side, side + gap):
        for x in range(gap, size - side, side + gap):
            image[y : y + side, x : x + side] = 255
            count += 1
    return image, count


def _crop(x0: int, y0: int, w: int, h: int) -> tuple[np.ndarray, int, int]:
    return np.ones((h, w), dtype=bool), x0, y0


def test_tiles_see_small_objects_at_full_resolution() -> None:
    image, count = _squares(1024, 6, 4)  # 6 px squares 4 px apart: 1.5 px at the 256 px input of the whole image
    predictor = Predictor(SquareFinder(), ["square"], threshold=0.0, tiling=TilingOptions(size=256, overlap=0.25))
    tiled = next(predictor.predict(image))
    whole = next(predictor.predict(image, tile="off"))
    assert len(tiled) == count  # each square once: duplicates from overlapping tiles merged
    tiled_error = np.abs(tiled.boxes[:, 2:] - tiled.boxes[:, :2] - 6).mean()
    whole_error = np.abs(whole.boxes[:, 2:] - whole.boxes[:, :2] - 6).mean()
    assert tiled_error < 0.5 < 1.5 < whole_error  # boxes at pixel precision vs the 4x coarser whole-image grid


def test_objects_larger_than_a_tile_come_from_the_whole_image_pass() -> None:
    image = np.zeros((1024, 1024, 3), dtype=np.uint8)
    image[100:700, 200:900] = 255  # one object wider than the 256 px tiles
    options = TilingOptions(size=256, overlap=0.2)
    found = next(Predictor(SquareFinder(), ["square"], threshold=0.0, tiling=options).predict(image))
    assert len(found) == 1
    assert np.allclose(found.boxes[0], [200, 100, 900, 700], atol=8)


def test_merge_keeps_one_of_duplicates_and_drops_cut_pieces() -> None:
    det = CropDetections(
        boxes=np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 5, 10], [20, 0, 30, 10], [0, 0, 10, 10]], np.float32),
        scores=np.array([0.9, 0.8, 0.95, 0.7, 0.6], np.float32),
        labels=np.array([1, 1, 1, 1, 2]),
        crops=[_crop(0, 0, 10, 10), _crop(0, 0, 10, 10), _crop(0, 0, 5, 10), _crop(20, 0, 10, 10), _crop(0, 0, 10, 10)],
    )
    cut = np.array([False, False, True, False, False])  # the third is half an object at a tile border
    kept = merge(det, cut, merge_iou=0.5, max_dets=None)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])  # the other class stays
    assert len(merge(det, cut, merge_iou=0.5, max_dets=2).scores) == 2


def test_cut_by_border_ignores_the_image_border() -> None:
    boxes = np.array([[0, 10, 20, 30], [100, 10, 127, 30], [50, 50, 60, 60]], np.float32)
    assert cut_by_border(boxes, (0, 0, 128, 128), (512, 512)).tolist() == [False, True, False]
    assert cut_by_border(boxes, (0, 0, 128, 128), (128, 128)).tolist() == [False, False, False]


def test_memory_stays_bounded_with_thousands_of_instances() -> None:
    image, count = _squares(1800, 8, 16)  # 5,476 squares: as image-sized arrays they would be 18 GB
    predictor = Predictor(SquareFinder(), ["square"], threshold=0.0, tiling=TilingOptions(size=256, overlap=0.2))
    tracemalloc.start()
    result = next(predictor.predict(image))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(result) == count > 5000
    assert peak < 8 * image.nbytes  # a few image-sized byte buffers at most, never one per instance


def test_options_from_a_checkpoint_recipe_and_the_tile_argument() -> None:
    recorded = TilingOptions.from_info({"recipe": {"tiling": {"size": 384, "overlap": 0.3}, "eval": {"max_dets": 500}}})
    assert (recorded.size, recorded.overlap, recorded.max_dets) == (384, 0.3, 500)
    assert recorded.choose("off").size is None and recorded.choose(512).size == 512
    assert recorded.choose("auto") == recorded
    assert TilingOptions.from_info({"class_names": ["a"]}).size is None  # an older export: no tiling
    assert not recorded.applies_to(384, 300) and recorded.applies_to(385, 10)


def test_training_tiles_hold_the_objects_and_cut_ones_by_share(tmp_path) -> None:
    from instaseg.data.masks import mask_to_rle

    image = np.zeros((300, 300, 3), dtype=np.uint8)
    masks = []
    for x0, y0 in ((10, 10), (140, 20), (250, 250)):  # the second straddles the 150 px border of the first tile
        m = np.zeros((300, 300), dtype=np.uint8)
        m[y0 : y0 + 20, x0 : x0 + 20] = 1
        masks.append(m)
        image[m > 0] = 200
    cv2.imwrite(str(tmp_path / "a.png"), image)
    anns = []
    for i, m in enumerate(masks):
        x0, y0 = int(np.nonzero(m.any(0))[0][0]), int(np.nonzero(m.any(1))[0][0])
        seg = mask_to_rle(m)
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [x0, y0, 20, 20], "segmentation": seg,
                     "area": 400, "iscrowd": 0})  # fmt: skip
    data = CocoData([{"id": 1, "file_name": "a.png", "height": 300, "width": 300}], anns, [{"id": 1, "name": "sq"}],
                    image_root=tmp_path)  # fmt: skip
    tiles = TiledInstanceDataset(data, None, tile=150, overlap=0.0, empty_fraction=0.0)
    assert len(tiles) == 3  # the empty bottom-left tile is left out
    counts = [len(tiles[i][1]["labels"]) for i in range(len(tiles))]
    assert counts == [2, 1, 1]  # top-left: whole square + half of the cut one; top-right: the other half
    _, target = tiles[1]
    assert target["boxes"][0].tolist() == [0.0, 20.0, 10.0, 40.0]  # the cut square's half inside, in tile pixels
