"""`instaseg eval --analyze`: error types (TIDE), confusion matrix and per-class numbers on crafted cases whose every
count and AP is known by hand, the matching against COCO's AP50 on random data, and the report's files."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instaseg.data.coco import CocoData, save_coco
from instaseg.data.masks import mask_to_rle
from instaseg.evaluation.coco import coco_metrics, gt_to_coco
from instaseg.evaluation.confusion import best_f1_threshold, confusion_matrix
from instaseg.evaluation.error_types import ERROR_TYPES, error_breakdown
from instaseg.evaluation.matching import image_overlaps, match

SIZE = 100
A, B = 1, 2  # category ids: "apple", "bean"

# objects per image: (category, [x, y, w, h]); rectangles, so mask IoU and box IoU are the same number
OBJECTS = {
    1: [(A, [10, 10, 30, 30]), (B, [60, 10, 30, 30])],
    2: [(A, [10, 10, 40, 40]), (B, [60, 60, 30, 30])],
    3: [(A, [10, 10, 20, 20]), (B, [50, 50, 20, 20])],
}
# detections: (image, category, box, score, the error TIDE must find: None when correct)
DETECTIONS = [
    (1, A, [10, 10, 30, 30], 0.9, None),  # finds apple 1
    (1, A, [10, 10, 30, 30], 0.8, "duplicate"),  # apple 1 again
    (1, A, [60, 10, 30, 30], 0.7, "classification"),  # the bean taken for an apple (a swapped class)
    (2, B, [60, 60, 30, 30], 0.95, None),  # finds bean 2
    (2, A, [30, 10, 40, 40], 0.6, "localization"),  # apple 2 shifted by half its width: IoU 1/3
    (3, B, [70, 10, 20, 20], 0.85, "background"),  # on nothing
    (3, A, [10, 10, 20, 20], 0.5, None),  # finds apple 3
    (3, B, [20, 10, 20, 20], 0.4, "both"),  # a bean on half of apple 3 (IoU 1/3): wrong class and loose
]  # bean 3 is found by nothing: missed; apple 2 and bean 1 were aimed at (loc, cls): not missed

# AP50 by hand: COCO's 101 recall points, precision made non-increasing. apple: 0.9 T, 0.8 F, 0.7 F, 0.6 F, 0.5 T
# of 3 -> precision 1 up to recall 1/3 (34 points), 0.4 up to 2/3 (33 points); bean: 0.95 T, 0.85 F, 0.4 F of 3
AP50 = {A: (34 + 33 * 0.4) / 101, B: 34 / 101}
GAINS = {  # AP50 (the mean of the two classes) added by fixing each type alone
    "classification": ((34 + 33 * 0.5) / 101 + (34 + 33 * 2 / 3) / 101) / 2 - (AP50[A] + AP50[B]) / 2,
    "localization": ((34 + 67 * 0.6) / 101 - AP50[A]) / 2,  # apple 2 found at 0.6: precision 0.6 to recall 1
    "both": 0.0,  # dropping the last bean changes no precision up to the recall reached
    "duplicate": ((34 + 33 * 0.5) / 101 - AP50[A]) / 2,
    "background": 0.0,  # the background bean ranks after the only bean found
    "missed": (51 / 101 - AP50[B]) / 2,  # bean 3 gone: the one bean found is half of 2
}


def _mask(box: list[int]) -> np.ndarray:
    x, y, w, h = box
    mask = np.zeros((SIZE, SIZE), bool)
    mask[y : y + h, x : x + w] = True
    return mask


def crafted_gt(root: Path | None = None) -> CocoData:
    images = [{"id": i, "file_name": f"scene_{i}.png", "height": SIZE, "width": SIZE} for i in OBJECTS]
    anns = []
    for image_id, objects in OBJECTS.items():
        for cat, box in objects:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": box})
            anns[-1].update(segmentation=mask_to_rle(_mask(box)), area=float(box[2] * box[3]), iscrowd=0)
    return CocoData(images, anns, [{"id": A, "name": "apple"}, {"id": B, "name": "bean"}], root or Path("."))


def crafted_results() -> list[dict]:
    return [
        {"image_id": i, "category_id": c, "bbox": box, "score": s, "segmentation": mask_to_rle(_mask(box))}
        for i, c, box, s, _ in DETECTIONS
    ]


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_each_error_type_counted_and_its_gain(iou_type: str) -> None:
    gt, results = crafted_gt(), crafted_results()
    coco = gt_to_coco(gt)
    overlaps = image_overlaps(coco, results, iou_type, 100)
    breakdown = error_breakdown(overlaps, [match(o) for o in overlaps], [A, B])
    assert breakdown.counts == dict.fromkeys(ERROR_TYPES, 1)
    # detection errors count for the detection's class, missed objects for theirs
    apple = {"duplicate": 1, "classification": 1, "localization": 1}
    assert breakdown.class_counts[A] == {**dict.fromkeys(ERROR_TYPES, 0), **apple}
    assert breakdown.class_counts[B] == {**dict.fromkeys(ERROR_TYPES, 0), "background": 1, "both": 1, "missed": 1}
    assert breakdown.class_ap50 == pytest.approx(AP50, abs=1e-12)
    assert breakdown.ap50 == pytest.approx((AP50[A] + AP50[B]) / 2, abs=1e-12)
    assert breakdown.delta_ap50 == pytest.approx(GAINS, abs=1e-12)
    verdicts = {(i, s): v for o in overlaps for s, v in zip(o.det_score, breakdown.verdicts[o.image_id], strict=True)
                for i in [o.image_id]}  # fmt: skip
    for image_id, _, _, score, error in DETECTIONS:
        assert verdicts[(image_id, score)] == (error or "correct")
    assert breakdown.missed == {1: [], 2: [], 3: [1]}  # bean 3, the image's second object


def test_crafted_class_ap_equals_coco() -> None:
    """The hand-computed AP50s are COCO's, class by class, for masks and boxes."""
    metrics = coco_metrics(crafted_gt(), crafted_results())
    for cat, name in ((A, "apple"), (B, "bean")):
        row = metrics["per_class"][name]
        assert row["mask_AP50"] == pytest.approx(AP50[cat], abs=1e-12)
        assert row["box_AP50"] == pytest.approx(AP50[cat], abs=1e-12)
        assert row["instances"] == 3
    # a shifted box at IoU 1/3 is never a match: AP75 (apple 1 and 3 exact) equals AP50 here
    assert metrics["per_class"]["apple"]["mask_AP75"] == pytest.approx(AP50[A], abs=1e-12)


def test_confusion_matrix_with_background_row_and_column() -> None:
    gt, results = crafted_gt(), crafted_results()
    overlaps = image_overlaps(gt_to_coco(gt), results, "segm", 100)
    names = {A: "apple", B: "bean"}
    every = confusion_matrix(overlaps, names, score_threshold=0.0)
    assert every.names == ["apple", "bean", "background"]
    # apple: 2 found, 1 missed (shifted); bean: 1 taken for an apple, 1 found, 1 missed; background: the duplicate
    # and the shifted apple (its object already gone at 0.5), the background bean and the loose bean
    assert every.counts.tolist() == [[2, 0, 1], [1, 1, 1], [2, 2, 0]]
    rows = list(csv.reader(every.to_csv().splitlines()))
    assert rows[0] == ["ground truth \\ predicted", "apple", "bean", "background"]
    assert rows[2] == ["bean", "1", "1", "1"]
    # F1 = 2 TP / (detections + objects) peaks after the two highest scores (4 / 8)
    threshold = best_f1_threshold(overlaps, [match(o) for o in overlaps])
    assert threshold == 0.9
    top = confusion_matrix(overlaps, names, threshold)
    assert top.counts.tolist() == [[1, 0, 2], [0, 1, 2], [0, 0, 0]]


def test_matching_gives_coco_ap50_on_random_data() -> None:
    """Crowd regions, ties, a crowded image past maxDets, polygons and RLE: the matching's AP50 per class is COCO's."""
    from test_evaluate import CATEGORY_IDS, _evaluate, make_gt, make_predictions

    gt = make_gt(seed=4, num_images=14, crowded_image=120)
    metrics, results = _evaluate(gt, make_predictions(gt, seed=6), 100)
    coco = gt_to_coco(gt)
    for iou_type, prefix in (("segm", "mask"), ("bbox", "box")):
        overlaps = image_overlaps(coco, results, iou_type, 100)
        breakdown = error_breakdown(overlaps, [match(o) for o in overlaps], CATEGORY_IDS)
        for cat, name in zip(gt.category_ids, gt.class_names, strict=True):
            expected = metrics["per_class"][name][f"{prefix}_AP50"]
            assert breakdown.class_ap50.get(cat, -1.0) == pytest.approx(expected, abs=1e-12), (iou_type, name)
        assert sum(breakdown.counts.values()) > 20  # the random predictions make every kind of mistake
        assert all(breakdown.counts[t] > 0 for t in ("classification", "localization", "background", "missed"))


def test_eval_analyze_writes_the_report(tmp_path: Path, cli) -> None:
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    gt = crafted_gt(root / "images")
    rng = np.random.default_rng(0)
    for img in gt.images:
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / "images" / img["file_name"])
    gt_json = save_coco(gt, root / "annotations" / "instances_val.json")
    pred = tmp_path / "results.json"
    pred.write_text(json.dumps(crafted_results()))
    out = tmp_path / "eval"
    code, stdout, err = cli("eval", "--gt", gt_json, "--pred", pred, "--out", out, "--analyze")
    assert code == 0, err
    assert "mask per class" in stdout and "apple" in stdout and "classification" in stdout and "report.html" in stdout
    written = json.loads((out / "evaluate_result.json").read_text())
    assert written["per_class"]["bean"]["mask_AP50"] == pytest.approx(AP50[B])
    summary = written["analysis"]
    assert summary["mask"]["counts"] == dict.fromkeys(ERROR_TYPES, 1) == summary["box"]["counts"]
    assert summary["mask"]["delta_ap50"] == pytest.approx(GAINS) and summary["mask"]["score_threshold"] == 0.9
    folder = out / "analysis"
    expected = {"report.html", "analysis.json", "per_class.csv", "errors.png", "confusion_mask.png"}
    expected |= {"confusion_mask.csv", "confusion_box.png", "confusion_box.csv", "pr_curves_mask.png"}
    expected |= {"pr_curves_box.png", "worst"}
    assert expected <= {p.name for p in folder.iterdir()}
    worst = json.loads((folder / "analysis.json").read_text())["worst_images"]
    # at 0.9 only apple 1 and bean 2 are shown found: image 3 misses both its objects, images 1 and 2 one each
    assert [w["image_id"] for w in worst] == [3, 1, 2] and all(Path(w["png"]).is_file() for w in worst)
    assert [(w["wrong_detections"], w["objects_not_found"]) for w in worst] == [(0, 2), (0, 1), (0, 1)]
    page = (folder / "report.html").read_text()
    links = set(re.findall(r'(?:src|href)="([^"]+)"', page))
    assert links and all((folder / link).is_file() for link in links)
    assert {"errors.png", "confusion_mask.png", "pr_curves_box.png", "per_class.csv"} <= links
    rows = list(csv.DictReader((folder / "per_class.csv").read_text().splitlines()))
    assert [r["class"] for r in rows] == ["apple", "bean"] and float(rows[0]["mask_AP50"]) == pytest.approx(
        AP50[A], abs=1e-4
    )

    code, _, err = cli("eval", "--gt", gt_json, "--pred", pred, "--score-threshold", "0.5")
    assert code == 2 and "--analyze" in err
