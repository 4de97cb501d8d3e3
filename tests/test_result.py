"""Result: json, masks, print, atomic saving, COCO results."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from instaseg.data.masks import mask_to_rle
from instaseg.inference.result import Result

H, W = 40, 60


def _result(image_path=None, name="img_1", frame_index=None) -> tuple[Result, np.ndarray]:
    masks = np.zeros((2, H, W), bool)
    masks[0, 5:15, 10:30] = True
    masks[1, 20:38, 40:58] = True
    image = np.full((H, W, 3), 90, np.uint8)
    result = Result(
        boxes=np.array([[10, 5, 30, 15], [40, 20, 58, 38]], np.float32),
        scores=np.array([0.9, 0.6]),
        labels=np.array([2, 1]),
        rles=[mask_to_rle(m) for m in masks],
        image_size=(H, W),
        class_names=["cat", "dög"],
        category_ids=[3, 7],
        input_path=image_path,
        frame_index=frame_index,
        name=name,
        image=image if image_path is None else None,
    )
    return result, masks


def test_json_layout_and_masks_round_trip():
    result, masks = _result(frame_index=4)
    data = result.json
    assert data["input_path"] is None and data["frame_index"] == 4 and (data["height"], data["width"]) == (H, W)
    assert data["boxes"][0] == {"cls_id": 1, "label": "dög", "score": 0.9, "coordinate": [10.0, 5.0, 30.0, 15.0]}
    assert data["boxes"][1]["label"] == "cat"
    assert all(isinstance(m["counts"], str) and m["size"] == [H, W] for m in data["masks"])
    json.dumps(data)  # json-ready
    np.testing.assert_array_equal(result.masks, masks)
    assert len(result) == 2 and "2 instances" in repr(result)
    assert "frame_index" not in _result()[0].json  # only for video frames


def test_print(capsys):
    result, _ = _result()
    result.print()
    pretty = capsys.readouterr().out
    assert json.loads(pretty) == result.json and "dög" in pretty and "\n    " in pretty
    result.print(format_json=False, ensure_ascii=True)
    compact = capsys.readouterr().out
    assert compact.count("\n") == 1 and "\\u00f6" in compact


def test_save_to_json_and_img_in_dir_and_to_file(tmp_path):
    result, _ = _result()
    path = result.save_to_json(tmp_path / "out")
    assert path == tmp_path / "out" / "img_1.json" and json.loads(path.read_text()) == result.json
    explicit = result.save_to_json(tmp_path / "named.json")
    assert explicit == tmp_path / "named.json" and explicit.is_file()
    img_path = result.save_to_img(tmp_path / "out")
    assert img_path.name == "img_1.jpg"
    picture = cv2.imread(str(img_path))
    assert picture.shape == (H, W, 3) and not (picture == 90).all()
    png = result.save_to_img(tmp_path / "pic.png")
    np.testing.assert_array_equal(cv2.imread(str(png))[..., ::-1], result.img)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # atomic writes leave nothing behind


def test_overlay_of_a_file_input_reads_the_file(tmp_path):
    source = tmp_path / "photo.png"
    cv2.imwrite(str(source), np.full((H, W, 3), 200, np.uint8))
    result, _ = _result(image_path=source, name="photo")
    assert result.img.shape == (H, W, 3) and (result.img[0, 0] == 200).all()
    assert result.save_to_img(tmp_path / "o").name == "photo.png"  # png inputs keep a lossless format


def test_to_coco_loads_with_pycocotools():
    result, masks = _result()
    entries = result.to_coco(image_id=5)
    assert [e["category_id"] for e in entries] == [7, 3]
    assert entries[0]["bbox"] == [10.0, 5.0, 20.0, 10.0]
    assert [e["category_id"] for e in result.to_coco(5, category_ids=[30, 70])] == [70, 30]
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 5, "height": H, "width": W, "file_name": "x.jpg"}],
        "annotations": [],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dög"}],
    }
    gt.createIndex()
    dt = gt.loadRes(entries)
    loaded = dt.loadAnns(dt.getAnnIds(imgIds=[5]))
    assert len(loaded) == 2
    np.testing.assert_array_equal(dt.annToMask(loaded[0]), masks[0])


def test_empty_result():
    result = Result(
        boxes=np.zeros((0, 4)), scores=[], labels=[], rles=[], image_size=(H, W), class_names=["a"], name="e"
    )
    assert result.masks.shape == (0, H, W) and result.json["boxes"] == [] and result.to_coco(1) == []
    with pytest.raises(ValueError, match="no image"):
        _ = result.img
