"""Dataset statistics and the fits on them: anchor coverage, k-means anchors, tile size and overlap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator

from instaseg.data.coco import CocoData
from instaseg.data.statistics import (
    DatasetStatistics,
    anchor_coverage,
    anchor_shapes,
    centred_iou,
    fit_anchors,
    kmeans_1d,
    tile_overlap_for,
    tile_size_for,
)
from instaseg.data.synthetic import small_objects_style, synth_image
from instaseg.data.tiles import tile_windows


def _coco(boxes_per_image: list[list[list[float]]], size: int = 200) -> CocoData:
    images = [
        {"id": i + 1, "file_name": f"{i}.jpg", "height": size, "width": size} for i in range(len(boxes_per_image))
    ]
    anns = [
        {"id": 100 * i + j, "image_id": i + 1, "category_id": 1, "bbox": box, "iscrowd": 0, "segmentation": []}
        for i, boxes in enumerate(boxes_per_image)
        for j, box in enumerate(boxes)
    ]
    return CocoData(images, anns, [{"id": 1, "name": "thing"}], image_root=Path("."))


def test_statistics_count_boxes_per_image_and_leave_crowds_out() -> None:
    data = _coco([[[0, 0, 10, 20], [5, 5, 4, 4]], [], [[1, 1, 30, 30]]])
    data.annotations.append({"id": 999, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "iscrowd": 1})
    stats = DatasetStatistics.of(data)
    assert stats.per_image.tolist() == [2, 0, 1]
    assert stats.box_wh.tolist() == [[10, 20], [4, 4], [30, 30]]
    summary = stats.summary()
    assert summary["instances_per_image"]["max"] == 2
    assert summary["per_class"]["thing"]["instances"] == 3


def test_anchor_shapes_are_torchvisions_cell_anchors() -> None:
    sizes, ratios = [[24, 34], [48, 68]], [0.5, 1.0, 2.0]
    generator = AnchorGenerator(tuple(tuple(s) for s in sizes), (tuple(ratios),) * 2)
    cells = torch.cat(generator.cell_anchors).numpy()
    theirs = np.stack([cells[:, 2] - cells[:, 0], cells[:, 3] - cells[:, 1]], axis=1)
    # torchvision rounds each corner; the shapes agree to that rounding, as sets
    ours = anchor_shapes(sizes, ratios)
    assert np.abs(np.sort(theirs, axis=0) - np.sort(ours, axis=0)).max() <= 1.0


def test_centred_iou_and_coverage() -> None:
    assert centred_iou(np.array([[10.0, 10.0]]), np.array([[10.0, 10.0], [20.0, 20.0], [10.0, 40.0]])).tolist() == [
        [1.0, 0.25, 0.25]
    ]
    anchors = anchor_shapes([[32]], [1.0])
    boxes = np.array([[32.0, 32.0], [30.0, 34.0], [8.0, 8.0], [200.0, 200.0]])
    assert anchor_coverage(boxes, anchors) == 0.5
    assert anchor_coverage(np.zeros((0, 2)), anchors) == 1.0


def test_kmeans_finds_separated_groups() -> None:
    values = np.concatenate([np.full(50, 1.0), np.full(30, 5.0), np.full(20, 9.0)])
    assert np.allclose(kmeans_1d(values, 3), [1.0, 5.0, 9.0])


def test_fit_reaches_the_coverage_target_on_small_varied_boxes() -> None:
    rng = np.random.default_rng(0)
    side = np.exp(rng.uniform(np.log(4), np.log(300), 3000))
    ratio = np.exp(rng.normal(0, 0.6, 3000))
    boxes = np.stack([side / np.sqrt(ratio), side * np.sqrt(ratio)], axis=1)
    fit = fit_anchors(boxes, [[24, 34], [48, 68], [96, 136]], [0.5, 1.0, 2.0])
    assert fit.coverage_before < 0.7  # the demo's anchors miss most of these
    assert fit.coverage_after >= 0.95
    assert anchor_coverage(boxes, anchor_shapes(fit.sizes_per_level, fit.aspect_ratios)) == fit.coverage_after
    flat = [s for level in fit.sizes_per_level for s in level]
    assert flat == sorted(flat) and len(fit.sizes_per_level) == 3  # smallest sizes on the finest level


def test_fit_can_keep_the_anchor_count() -> None:
    boxes = np.array([[10.0, 10.0], [12.0, 30.0], [100.0, 60.0]] * 10)
    fit = fit_anchors(boxes, [[32], [64]], [0.5, 1.0, 2.0], max_per_level=1, max_ratios=3)
    assert [len(level) for level in fit.sizes_per_level] == [1, 1] and len(fit.aspect_ratios) == 3


def test_tile_size_and_overlap_rules() -> None:
    assert tile_size_for(100.0, 32, 4096) == round(np.sqrt(100 / 0.03) / 32) * 32  # OTX: sqrt(area / 0.03)
    assert tile_size_for(100.0, 128, 512) == 128  # clamped
    assert tile_overlap_for(40.0, 200) == 0.2
    assert tile_overlap_for(500.0, 200) == 0.5


def test_tile_windows_cover_the_image_with_full_tiles() -> None:
    windows = tile_windows(300, 500, 128, 0.25)
    covered = np.zeros((300, 500), dtype=bool)
    for x0, y0, x1, y1 in windows:
        assert (x1 - x0, y1 - y0) == (128, 128)
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert tile_windows(100, 80, 128, 0.2) == [(0, 0, 80, 100)]


def test_small_object_style_makes_many_small_objects_on_large_images() -> None:
    style = small_objects_style(max_instances=150)
    pixels, instances = synth_image(0, 256, 3, style)
    assert 1024 <= pixels.shape[0] <= 2048 and pixels.shape[0] == pixels.shape[1]
    sides = np.sqrt([int(mask.sum()) for _, mask in instances])
    assert len(sides) >= 40
    assert np.median(sides) < 20 and sides.max() <= 20
    again, _ = synth_image(0, 256, 3, style)
    assert np.array_equal(pixels, again)  # deterministic by (seed, index)


@pytest.mark.parametrize("bad", [{"object_px": (1, 10)}, {"min_instances": 5, "max_instances": 3}])
def test_small_object_style_checks_its_values(bad: dict) -> None:
    from instaseg.data.synthetic import SynthStyle
    from instaseg.errors import UserError

    with pytest.raises(UserError):
        SynthStyle(**bad).validate()
