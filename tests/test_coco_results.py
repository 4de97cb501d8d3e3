"""COCO results written by `instaseg predict` carry the ground truth's image ids, found by file name, and
`instaseg eval` refuses results numbered any other way instead of scoring them against the wrong images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import instaseg
from instaseg.data.coco import CocoData, save_coco
from instaseg.errors import UserError
from instaseg.evaluation.image_ids import GroundTruthImages, ResultImageIds
from tiny import CKPT_CATEGORY_IDS as CATEGORY_IDS
from tiny import CKPT_CLASSES as CLASSES

# file order (apple, mango, zebra) is not id order, and no name is a number
FILES = {"zebra.png": 30, "apple.png": 10, "mango.png": 20}


def _circle_image(seed: int) -> tuple[np.ndarray, list[float]]:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), (5, 5), 0)
    cx, cy, r = 20 + 12 * seed, 30, 14
    cv2.circle(img, (cx, cy), r, (250, 40, 40), -1)
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    polygon = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).reshape(-1).round(1).tolist()
    return img, polygon


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("named")
    (root / "images").mkdir()
    images, anns = [], []
    for seed, (name, image_id) in enumerate(FILES.items()):
        img, polygon = _circle_image(seed)
        cv2.imwrite(str(root / "images" / name), img[..., ::-1])
        images.append({"id": image_id, "file_name": name, "height": 60, "width": 80})
        xs, ys = polygon[0::2], polygon[1::2]
        bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        anns.append({"id": seed + 1, "image_id": image_id, "category_id": 3, "segmentation": [polygon]})
        anns[-1].update(bbox=bbox, area=float(np.pi * 14 * 14), iscrowd=0)
    gt = CocoData(images, anns, [{"id": c, "name": n} for c, n in zip(CATEGORY_IDS, CLASSES, strict=True)], root)
    save_coco(gt, root / "annotations" / "instances_val.json")
    return root


def test_results_carry_ground_truth_ids_and_score_as_the_checkpoint(cli, tiny_ckpt, dataset, tmp_path) -> None:
    gt_json = dataset / "annotations" / "instances_val.json"
    results = tmp_path / "results.json"
    code, _, err = cli(
        "predict", "--checkpoint", tiny_ckpt, "--input", dataset / "images", "--out", tmp_path / "o", "--device", "cpu",
        "--threshold", "0", "--coco-results", results, "--gt", gt_json,
    )  # fmt: skip
    assert code == 0, err
    records = json.loads(results.read_text())
    assert {(r["file_name"], r["image_id"]) for r in records} == set(FILES.items())
    model = instaseg.create_model(tiny_ckpt, device="cpu", threshold=0.0)
    for name, image_id in FILES.items():  # each image's own detections under its ground-truth id
        (result,) = model.predict(dataset / "images" / name)
        assert sorted(r["score"] for r in records if r["image_id"] == image_id) == sorted(
            e["score"] for e in result.to_coco(image_id)
        )

    code, _, err = cli("eval", "--gt", gt_json, "--pred", results, "--out", tmp_path / "scored")
    assert code == 0, err
    from_file = json.loads((tmp_path / "scored" / "evaluate_result.json").read_text())["metrics"]
    direct = instaseg.evaluate(tiny_ckpt, dataset, device="cpu", out=tmp_path / "direct")["metrics"]
    for key, value in direct.items():
        # the file holds scores to 5 decimals: this untrained model's near-equal scores then tie
        assert from_file[key] == pytest.approx(value, abs=0.01), key

    # a dataset folder works as well as its json
    code, _, err = cli(
        "predict", "--checkpoint", tiny_ckpt, "--input", dataset / "images", "--save-json", "--out", tmp_path / "o2",
        "--device", "cpu", "--threshold", "0", "--coco-results", tmp_path / "r2.json", "--gt", dataset,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "r2.json").read_text()) == records


def test_predict_refuses_results_it_cannot_number(cli, tiny_ckpt, dataset, tmp_path) -> None:
    """Without a ground truth, names that are not numbers have no id: one line before any prediction runs."""
    results = tmp_path / "results.json"
    args = ["predict", "--checkpoint", tiny_ckpt, "--input", dataset / "images", "--out", tmp_path / "o"]
    code, _, err = cli(*args, "--coco-results", results)
    assert code == 2 and err.count("\n") == 1 and "apple.png" in err and "--gt" in err
    assert not results.exists() and not (tmp_path / "o").exists()
    stranger = tmp_path / "elsewhere"
    stranger.mkdir()
    cv2.imwrite(str(stranger / "pear.png"), np.zeros((8, 8, 3), np.uint8))
    code, _, err = cli(*args[:4], stranger, "--out", tmp_path / "p", "--coco-results", results, "--gt", dataset)
    assert code == 2 and "pear.png" in err and "not an image of the ground truth" in err
    code, _, err = cli(*args, "--gt", dataset)
    assert code == 2 and "--coco-results" in err


def test_eval_refuses_results_numbered_otherwise(cli, dataset, tmp_path) -> None:
    """Results numbered 1..N in file order (what predict wrote before) and results whose file name disagrees with
    their id are refused in one line, exit 2, rather than scored against the wrong images."""
    gt_json = dataset / "annotations" / "instances_val.json"
    by_order = [
        {"image_id": i + 1, "category_id": 3, "score": 0.9, "bbox": [10, 10, 20, 20]} for i in range(len(FILES))
    ]
    pred = tmp_path / "by_order.json"
    pred.write_text(json.dumps(by_order))
    code, out, err = cli("eval", "--gt", gt_json, "--pred", pred)
    assert code == 2 and err.count("\n") == 1 and "3 of 3 results" in err and "--gt" in err
    swapped = [{**by_order[0], "image_id": 10, "file_name": "zebra.png"}]  # zebra.png is image 30
    pred.write_text(json.dumps(swapped))
    code, out, err = cli("eval", "--gt", gt_json, "--pred", pred)
    assert code == 2 and err.count("\n") == 1 and "'zebra.png'" in err and "'apple.png'" in err
    pred.write_text(json.dumps([{**swapped[0], "file_name": "sub/apple.png"}]))  # the same file, another folder
    assert cli("eval", "--gt", gt_json, "--pred", pred, "--out", tmp_path)[0] == 0


def test_matching_by_path_suffix_and_ambiguity(tmp_path) -> None:
    images = [
        {"id": 1, "file_name": "a/x.jpg", "height": 4, "width": 4},
        {"id": 2, "file_name": "b/x.jpg", "height": 4, "width": 4},
        {"id": 3, "file_name": "c/y.jpg", "height": 4, "width": 4},
    ]
    gt = GroundTruthImages([CocoData(images, [], [], tmp_path / "root")], "gt.json")
    assert gt.record_of(tmp_path / "copy" / "b" / "x.jpg")["id"] == 2  # the file name's folders decide
    assert gt.record_of(tmp_path / "root" / "a" / "x.jpg")["id"] == 1  # the very file
    assert gt.record_of(tmp_path / "flat" / "y.jpg")["id"] == 3  # the only y.jpg
    with pytest.raises(UserError, match="several ground-truth images"):
        gt.record_of(tmp_path / "flat" / "x.jpg")
    with pytest.raises(UserError, match="not an image of the ground truth"):
        gt.record_of(tmp_path / "z.jpg")
    assert ResultImageIds().of("dir/000000397133.jpg") == (397133, "000000397133.jpg")
    with pytest.raises(UserError, match="video frames"):
        ResultImageIds().of("clip.mp4", frame_index=3)
