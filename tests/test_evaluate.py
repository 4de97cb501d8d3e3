"""COCO evaluation: equality with pycocotools on generated data, the evaluator API, `instaseg eval`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval as PyCOCOeval

from instaseg.data.coco import CocoData, load_coco, save_coco
from instaseg.data.masks import (
    mask_to_polygons,
    mask_to_rle,
    rle_area,
    rle_bbox,
    segmentation_to_mask,
    segmentation_to_rle,
)
from instaseg.errors import UserError
from instaseg.evaluation.coco import CocoEvaluator, _results_for, predictions_to_coco_results, stat_names
from instaseg.evaluation.files import evaluate_files
from instaseg.inference.postprocess import RawDetections
from instaseg.models.detector import InputSpec

CATEGORY_IDS = [3, 7, 20, 42]  # non-contiguous on purpose


def _ellipse(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(2, h / 2), rng.uniform(2, w / 2)
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def _polygon(h: int, w: int, rng: np.random.Generator) -> list[list[float]]:
    cx, cy, r = rng.uniform(5, w - 5), rng.uniform(5, h - 5), rng.uniform(2, min(h, w) / 3)
    angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 9))))
    radii = r * rng.uniform(0.5, 1.0, len(angles))
    pts = np.stack([np.clip(cx + radii * np.cos(angles), 0, w), np.clip(cy + radii * np.sin(angles), 0, h)], 1)
    parts = [pts.reshape(-1).round(2).tolist()]
    if rng.random() < 0.2:  # a second part, as COCO's occluded objects have
        parts.append((pts + [3, 3]).clip(0, min(h, w)).reshape(-1).round(2).tolist())
    return parts


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (as crowd annotations store it): run lengths in column-major order, zeros first."""
    flat = mask.astype(np.uint8).reshape(-1, order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat[0] == 1:
        runs = [0, *runs]
    return {"size": list(mask.shape), "counts": runs}


def _gt_annotation(rng: np.random.Generator, img: dict, ann_id: int, kind: str, cat: int) -> dict:
    h, w = img["height"], img["width"]
    if kind == "polygon":
        seg = _polygon(h, w, rng)
    elif kind == "rle":
        seg = mask_to_rle(_ellipse(h, w, rng))
    else:
        seg = _uncompressed_rle(_ellipse(h, w, rng))
    rle = segmentation_to_rle(seg, h, w)
    return {
        "id": ann_id,
        "image_id": img["id"],
        "category_id": cat,
        "segmentation": seg,
        "area": rle_area(rle),
        "bbox": rle_bbox(rle),
        "iscrowd": int(kind == "crowd"),
    }


def make_gt(seed: int = 0, num_images: int = 24, crowded_image: int = 130) -> CocoData:
    """Random GT: polygons, RLE and crowd annotations, empty images, non-contiguous category ids, and one image
    with ``crowded_image`` objects (more than COCO's 100 detections)."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(num_images):
        img = {"id": 100 + i * 3, "file_name": f"{i}.png", "height": int(rng.integers(48, 200)), "width": 0}
        img["width"] = int(rng.integers(48, 200))
        images.append(img)
        n = 0 if i % 6 == 5 else int(rng.integers(1, 9))
        if i == 0:
            n = crowded_image
        for _ in range(n):
            kind = rng.choice(["polygon", "rle", "crowd"], p=[0.6, 0.3, 0.1])
            cat = CATEGORY_IDS[0] if i == 0 else int(rng.choice(CATEGORY_IDS[:3]))  # id 42 has no GT
            anns.append(_gt_annotation(rng, img, len(anns) + 1, str(kind), cat))
    cats = [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS]
    return CocoData(images=images, annotations=anns, categories=cats, image_root=Path("."))


def _jitter_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    dy, dx = rng.integers(-2, 3, 2)
    return np.roll(mask, (int(dy), int(dx)), axis=(0, 1))


def make_predictions(gt: CocoData, seed: int = 1) -> dict[int, dict]:
    """Per image model-style outputs: perturbed GT (some with a wrong class) plus false positives."""
    rng = np.random.default_rng(seed)
    by_image = gt.annotations_by_image()
    labels_of = {c: i + 1 for i, c in enumerate(gt.category_ids)}
    out = {}
    for img in gt.images:
        h, w = img["height"], img["width"]
        masks, labels, scores = [], [], []
        for ann in by_image.get(img["id"], []):
            if rng.random() < 0.15:
                continue  # a miss
            masks.append(_jitter_mask(segmentation_to_mask(ann["segmentation"], h, w).astype(bool), rng))
            wrong = rng.random() < 0.1
            labels.append(int(rng.integers(1, 5)) if wrong else labels_of[ann["category_id"]])
            scores.append(rng.uniform(0.3, 1.0))
        for _ in range(int(rng.integers(0, 4)) + (30 if img["id"] == gt.images[0]["id"] else 0)):
            masks.append(_ellipse(h, w, rng))
            labels.append(int(rng.integers(1, 5)))
            scores.append(rng.uniform(0.05, 0.6))
        keep = [i for i, m in enumerate(masks) if m.any()]
        masks, labels, scores = [masks[i] for i in keep], [labels[i] for i in keep], [scores[i] for i in keep]
        boxes = []
        for m in masks:
            x, y, bw, bh = rle_bbox(mask_to_rle(m))
            boxes.append([x + rng.uniform(-1, 1), y + rng.uniform(-1, 1), x + bw, y + bh])
        stack = np.stack(masks)[:, None].astype(np.float32) * 0.9 if masks else np.zeros((0, 1, h, w), np.float32)
        out[img["id"]] = {
            "boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
            "labels": np.array(labels, dtype=np.int64),
            "scores": np.round(scores, 2),  # rounded: ties, as real scores have
            "masks": stack,
        }
    return out


def _pycocotools_eval(gt: CocoData, results: list[dict], iou_type: str, max_dets: int) -> PyCOCOeval:
    coco = PyCOCO()
    coco.dataset = copy.deepcopy(gt.to_dict())
    coco.createIndex()
    dt = coco.loadRes(copy.deepcopy(_results_for(results, iou_type)))
    ev = PyCOCOeval(coco, dt, iou_type)
    ev.params.maxDets = [1, 10, max_dets]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


def _twelve_from_arrays(ev: PyCOCOeval) -> list[float]:
    """pycocotools' summary read off its accumulated arrays at maxDets [1, 10, N].

    Needed for N != 100: pycocotools' summarize() takes stats[0] (AP) at a hard-coded maxDets=100 and gives -1
    when 100 is not among params.maxDets; every other number it takes at params.maxDets[2].
    """

    def mean(a: np.ndarray) -> float:
        return float(a[a > -1].mean()) if (a > -1).any() else -1.0

    p, r, thr = ev.eval["precision"], ev.eval["recall"], ev.params.iouThrs
    t50, t75 = np.where(thr == 0.5)[0], np.where(thr == 0.75)[0]
    ap = [mean(p[:, :, :, 0, 2]), mean(p[t50][:, :, :, 0, 2]), mean(p[t75][:, :, :, 0, 2])]
    ap += [mean(p[:, :, :, a, 2]) for a in (1, 2, 3)]
    ar = [mean(r[:, :, 0, m]) for m in (0, 1, 2)] + [mean(r[:, :, a, 2]) for a in (1, 2, 3)]
    return ap + ar


@pytest.fixture(scope="module")
def generated() -> tuple[CocoData, dict[int, dict]]:
    gt = make_gt()
    return gt, make_predictions(gt)


def _evaluate(gt: CocoData, preds: dict[int, dict], max_dets: int) -> tuple[dict, list[dict]]:
    ev = CocoEvaluator(gt, max_dets=max_dets)
    for image_id, pred in preds.items():
        ev.add(image_id, pred)
    return ev.compute(), ev.results


@pytest.mark.parametrize("max_dets", [100, 300])
def test_equal_to_pycocotools(generated, max_dets: int) -> None:
    gt, preds = generated
    metrics, results = _evaluate(gt, preds, max_dets)
    assert any(r["image_id"] == gt.images[0]["id"] for r in results)
    assert sum(r["image_id"] == gt.images[0]["id"] for r in results) > 100
    for iou_type, prefix in (("bbox", "box"), ("segm", "mask")):
        ref = _pycocotools_eval(gt, results, iou_type, max_dets)
        expected = _twelve_from_arrays(ref)
        if max_dets == 100:  # the reading-off agrees with pycocotools' own summary where that one is right
            np.testing.assert_allclose(expected, ref.stats, rtol=0, atol=1e-12)
        ours = [metrics[f"{prefix}_{n}"] for n in stat_names(max_dets)]
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9, err_msg=f"{iou_type} maxDets={max_dets}")
        assert 0.2 < metrics[f"{prefix}_AP"] < 0.95  # perturbed GT: neither trivial nor hopeless


def test_max_dets_above_100_changes_recall(generated) -> None:
    gt, preds = generated
    m100, _ = _evaluate(gt, preds, 100)
    m300, _ = _evaluate(gt, preds, 300)
    assert "box_AR300" in m300 and "box_AR100" not in m300
    # the crowded image has more objects than 100 detections can find
    assert m300["box_AR300"] > m100["box_AR100"]
    assert m300["mask_AR300"] > m100["mask_AR100"]


def _pycocotools_class_stats(ev: PyCOCOeval, k: int) -> dict[str, float]:
    """One class's AP/AR numbers read off pycocotools' arrays: each as its summary computes them, for one class."""

    def mean(a: np.ndarray) -> float:
        return float(a[a > -1].mean()) if (a > -1).any() else -1.0

    p, r, thr = ev.eval["precision"][:, :, k, :, -1], ev.eval["recall"][:, k, :, -1], ev.params.iouThrs
    stats = {"AP": mean(p[:, :, 0]), "AP50": mean(p[thr == 0.5][:, :, 0]), "AP75": mean(p[thr == 0.75][:, :, 0])}
    stats |= {f"AP{s}": mean(p[:, :, a]) for s, a in (("s", 1), ("m", 2), ("l", 3))}
    stats |= {"AR": mean(r[:, 0])} | {f"AR{s}": mean(r[:, a]) for s, a in (("s", 1), ("m", 2), ("l", 3))}
    return stats


def test_per_class_numbers_equal_pycocotools(generated) -> None:
    gt, preds = generated
    metrics, results = _evaluate(gt, preds, 100)
    assert list(metrics["per_class"]) == gt.class_names
    for iou_type, prefix in (("bbox", "box"), ("segm", "mask")):
        ref = _pycocotools_eval(gt, results, iou_type, 100)
        for k, name in enumerate(gt.class_names):
            ours = {n[len(prefix) + 1 :]: v for n, v in metrics["per_class"][name].items() if n.startswith(prefix)}
            expected = _pycocotools_class_stats(ref, k)
            assert ours == pytest.approx(expected, abs=1e-9), (iou_type, name)
    class42 = dict(metrics["per_class"]["class42"])  # no GT of that class: COCO's -1 everywhere
    assert class42.pop("instances") == 0 and set(class42.values()) == {-1.0}
    counts = {name: v["instances"] for name, v in metrics["per_class"].items()}
    assert counts == {n: sum(a["category_id"] == c and not a["iscrowd"] for a in gt.annotations)
                      for n, c in zip(gt.class_names, gt.category_ids, strict=True)}  # fmt: skip


def _busy_image(gt: CocoData, preds: dict[int, dict]) -> int:
    """The image (other than the crowded first one) with the most predictions."""
    return max((img["id"] for img in gt.images[1:]), key=lambda i: len(preds[i]["labels"]))


def test_mask_inputs_encode_alike(generated) -> None:
    """Float [N,1,H,W], bool [N,H,W], torch tensors and RLE dicts give the same records."""
    import torch

    gt, preds = generated
    image_id = _busy_image(gt, preds)
    pred = preds[image_id]
    reference = predictions_to_coco_results(image_id, pred, gt.category_ids)
    assert reference and all(isinstance(r["segmentation"]["counts"], str) for r in reference)
    binary = pred["masks"][:, 0] > 0.5
    variants = [
        {**pred, "masks": binary},
        {**pred, "masks": binary.astype(np.uint8)},
        {k: torch.as_tensor(v) for k, v in pred.items()},
        {**pred, "masks": [r["segmentation"] for r in reference]},
    ]
    for variant in variants:
        assert predictions_to_coco_results(image_id, variant, gt.category_ids) == reference
    x, y, w, h = reference[0]["bbox"]
    assert [x, y, x + w, y + h] == pytest.approx(pred["boxes"][0].tolist())
    assert reference[0]["category_id"] == gt.category_ids[pred["labels"][0] - 1]


def test_add_rejects_wrong_inputs(generated) -> None:
    gt, preds = generated
    ev = CocoEvaluator(gt)
    image = next(img for img in gt.images if img["id"] == _busy_image(gt, preds))
    pred = preds[image["id"]]
    with pytest.raises(ValueError, match="not in the ground truth"):
        ev.add(999999, pred)
    with pytest.raises(ValueError, match="mask size"):
        ev.add(image["id"], {**pred, "masks": pred["masks"][:, :, :-1]})
    with pytest.raises(ValueError, match="labels must be in 1..4"):
        ev.add(image["id"], {**pred, "labels": pred["labels"] * 0})
    with pytest.raises(ValueError, match="needs 'masks'"):
        ev.add(image["id"], {k: v for k, v in pred.items() if k != "masks"})
    box_only = CocoEvaluator(gt, iou_types=("bbox",))
    box_only.add(image["id"], {k: v for k, v in pred.items() if k != "masks"})
    assert "box_AP" in box_only.compute() and "mask_AP" not in box_only.compute()


def test_no_predictions_and_no_annotations(generated) -> None:
    gt, _ = generated
    metrics = CocoEvaluator(gt).compute()  # nothing added at all
    for prefix in ("box", "mask"):
        values = [metrics[f"{prefix}_{n}"] for n in stat_names()]
        assert all(v in (0.0, -1.0) for v in values) and values[0] == 0.0
    empty_gt = CocoData(images=gt.images, annotations=[], categories=gt.categories, image_root=Path("."))
    ev = CocoEvaluator(empty_gt)
    image_id = _busy_image(gt, make_predictions(gt))
    ev.add(image_id, make_predictions(gt)[image_id])
    assert ev.results
    metrics = ev.compute()
    assert all(metrics[f"mask_{n}"] == -1.0 for n in stat_names())  # COCO's "undefined": nothing to find
    assert {v for k, v in metrics["per_class"]["class3"].items() if k != "instances"} == {-1.0}


def test_reset_and_reuse(generated) -> None:
    gt, preds = generated
    ev = CocoEvaluator(gt)
    for image_id, pred in preds.items():
        ev.add(image_id, pred)
    first = ev.compute()
    assert ev.compute() == first  # the cached GT index is not disturbed by a previous evaluation
    ev.reset()
    assert ev.results == [] and ev.compute()["box_AP"] == 0.0


def _write_eval_files(tmp_path: Path, gt: CocoData, results: list[dict]) -> tuple[Path, Path]:
    gt_json, pred_json = tmp_path / "gt.json", tmp_path / "preds" / "results.json"
    save_coco(gt, gt_json)
    pred_json.parent.mkdir()
    pred_json.write_text(json.dumps(results))
    return gt_json, pred_json


def test_eval_files_cli(generated, tmp_path: Path, cli) -> None:
    gt, preds = generated
    expected, results = _evaluate(gt, preds, 100)
    gt_json, pred_json = _write_eval_files(tmp_path, gt, results)
    code, out, err = cli("eval", "--gt", gt_json, "--pred", pred_json, "--out", tmp_path / "out")
    assert code == 0, err
    assert "mask" in out and f"{expected['mask_AP']:.3f}" in out
    written = json.loads((tmp_path / "out" / "evaluate_result.json").read_text())
    assert written["done_flag"] is True and written["max_dets"] == 100
    assert written["metrics"] == {k: v for k, v in expected.items() if k != "per_class"}
    assert written["per_class"] == expected["per_class"]
    assert written["gt"] == str(gt_json) and written["pred"] == str(pred_json)

    # without --out the result goes beside the results file; --max-dets renames the third recall
    code, _, err = cli("eval", "--gt", gt_json, "--pred", pred_json, "--max-dets", "300")
    assert code == 0, err
    written = json.loads((pred_json.parent / "evaluate_result.json").read_text())
    assert written["max_dets"] == 300 and "box_AR300" in written["metrics"]


def test_eval_files_box_only_and_polygon_results(generated, tmp_path: Path) -> None:
    gt, preds = generated
    expected, results = _evaluate(gt, preds, 100)
    box_only = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    gt_json, pred_json = _write_eval_files(tmp_path, gt, box_only)
    metrics = evaluate_files(gt_json, pred_json, out=tmp_path / "o1")["metrics"]
    assert metrics == {k: v for k, v in expected.items() if k.startswith("box_")}
    # mask-only results are boxed by their masks; polygons are rasterised at the image size
    img = {i["id"]: i for i in gt.images}
    polygons = []
    for r in results[:40]:
        h, w = img[r["image_id"]]["height"], img[r["image_id"]]["width"]
        poly = mask_to_polygons(segmentation_to_mask(r["segmentation"], h, w))
        if poly:
            polygons.append({"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"]})
            polygons[-1]["segmentation"] = poly
    _, pred_json = _write_eval_files(tmp_path / "p", gt, polygons)
    metrics = evaluate_files(gt_json, pred_json)["metrics"]
    assert 0 < metrics["mask_AP"] < 1 and 0 < metrics["box_AP"] < 1


def _thin_l(y: int, x: int, size: int = 40, h: int = 200, w: int = 200) -> np.ndarray:
    """An L of 3 px strokes: its mask is small (< 32^2 px) while its box (size^2) is medium."""
    m = np.zeros((h, w), bool)
    m[y : y + size, x : x + 3] = True
    m[y + size - 3 : y + size, x : x + size] = True
    return m


def _pycocotools_raw(gt: CocoData, raw: list[dict], iou_type: str) -> list[float]:
    """pycocotools' APs, APm, APl on a results list as it stands, boxes and all."""
    coco = PyCOCO()
    coco.dataset = copy.deepcopy(gt.to_dict())
    coco.createIndex()
    ev = PyCOCOeval(coco, coco.loadRes(copy.deepcopy(raw)), iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return [float(v) for v in ev.stats[3:6]]


def test_eval_files_area_from_mask_or_box(tmp_path: Path, cli) -> None:
    """Mask AP's size ranges: "mask" (default) sizes detections by mask area as detectron2 does (it drops the boxes
    before loadRes), "box" by box area as pycocotools does on the raw file; each reproduces its reference."""
    square = np.zeros((200, 200), bool)
    square[100:150, 100:150] = True  # 2500 px: medium by mask and by box
    gt_masks = [_thin_l(10, 10), square]  # the L: small by its mask area (231 px), its box is 1600 px
    anns = []
    for i, m in enumerate(gt_masks):
        rle = mask_to_rle(m)
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1, "segmentation": rle, "iscrowd": 0})
        anns[-1].update(area=rle_area(rle), bbox=rle_bbox(rle))
    gt = CocoData(
        images=[{"id": 1, "file_name": "a.png", "height": 200, "width": 200}],
        annotations=anns,
        categories=[{"id": 1, "name": "x"}],
        image_root=Path("."),
    )
    # both objects found; the highest score is a false positive L: it counts against APs when sized by its mask,
    # against APm when sized by its box
    dets = [(_thin_l(10, 10), 0.5), (square, 0.6), (_thin_l(60, 150), 0.9)]
    raw = [
        {"image_id": 1, "category_id": 1, "score": s, "segmentation": mask_to_rle(m), "bbox": rle_bbox(mask_to_rle(m))}
        for m, s in dets
    ]
    gt_json, pred_json = _write_eval_files(tmp_path, gt, raw)
    detectron2 = _pycocotools_raw(gt, [{k: v for k, v in r.items() if k != "bbox"} for r in raw], "segm")
    pycocotools = _pycocotools_raw(gt, raw, "segm")
    np.testing.assert_allclose([detectron2, pycocotools], [[0.5, 1, -1], [1, 0.5, -1]])  # they do differ here

    by_mask = evaluate_files(gt_json, pred_json, out=tmp_path / "m")
    by_box = evaluate_files(gt_json, pred_json, out=tmp_path / "b", area_from="box")
    for result, expected in ((by_mask, detectron2), (by_box, pycocotools)):
        m = result["metrics"]
        np.testing.assert_allclose([m["mask_APs"], m["mask_APm"], m["mask_APl"]], expected, atol=1e-9)
        # box AP is sized by box area either way, as pycocotools does on this file
        np.testing.assert_allclose([m["box_APs"], m["box_APm"], m["box_APl"]], _pycocotools_raw(gt, raw, "bbox"))
    assert by_mask["area_from"] == "mask" and by_box["area_from"] == "box"
    assert json.loads(Path(by_box["output"]).read_text())["area_from"] == "box"

    code, out, err = cli("eval", "--gt", gt_json, "--pred", pred_json, "--out", tmp_path / "c")
    assert code == 0, err
    assert "mask APs/APm/APl size detections by mask area (detectron2" in out
    code, out, err = cli("eval", "--gt", gt_json, "--pred", pred_json, "--out", tmp_path / "c", "--area-from", "box")
    assert code == 0, err
    assert "size detections by box area (pycocotools" in out
    assert json.loads((tmp_path / "c" / "evaluate_result.json").read_text())["metrics"] == by_box["metrics"]
    code, _, err = cli("eval", "--gt", gt_json, "--pred", pred_json, "--area-from", "bbox")
    assert code == 2 and "--area-from" in err
    with pytest.raises(UserError, match="area_from"):
        evaluate_files(gt_json, pred_json, area_from="bbox")


def _bad_results(gt: CocoData, results: list[dict]) -> dict[str, tuple[object, str]]:
    """Malformed results files -> the words their one-line error must contain."""
    r0 = results[0]
    other_size = {**r0["segmentation"], "size": [7, 7]}
    return {
        "not a list": ({"x": 1}, "must be a json list"),
        "unknown image": ([{**r0, "image_id": 999999}], "image_id 999999"),
        "unknown category": ([{**r0, "category_id": 5}], "category_id 5"),
        "string category": ([{**r0, "category_id": "3"}], "category_id '3'"),
        "no score": ([{k: v for k, v in r0.items() if k != "score"}], "'score'"),
        "short bbox": ([{**r0, "bbox": [1, 2, 3]}], "'bbox'"),
        "nothing": ([{"image_id": r0["image_id"], "category_id": r0["category_id"], "score": 0.5}], "needs 'bbox'"),
        "rle size": ([{**r0, "segmentation": other_size}], "RLE size"),
        "mixed": ([r0, {k: v for k, v in r0.items() if k != "segmentation"}], "some results have"),
        "entry": ([r0, 3], "must be an object"),
    }


def test_eval_files_bad_results_exit_2(generated, tmp_path: Path, cli) -> None:
    gt, preds = generated
    _, results = _evaluate(gt, preds, 100)
    gt_json, pred_json = _write_eval_files(tmp_path, gt, results)
    for name, (content, words) in _bad_results(gt, results).items():
        pred_json.write_text(json.dumps(content))
        code, out, err = cli("eval", "--gt", gt_json, "--pred", pred_json)
        assert code == 2, name
        assert err.count("\n") == 1 and str(pred_json) in err and words in err, (name, err)
    pred_json.write_text("[{")
    code, _, err = cli("eval", "--gt", gt_json, "--pred", pred_json)
    assert code == 2 and "malformed json" in err and str(pred_json) in err
    code, _, err = cli("eval", "--gt", gt_json, "--pred", tmp_path / "missing.json")
    assert code == 2 and "missing.json" in err
    code, _, err = cli("eval", "--gt", gt_json, "--pred", pred_json, "--max-dets", "5")
    assert code == 2 and "max_dets" in err
    assert not (pred_json.parent / "evaluate_result.json").exists()


def test_tiny_coco_against_itself(tiny_coco: Path, tmp_path: Path, cli) -> None:
    """Real COCO annotations (polygons, crowd as uncompressed RLE, official areas) scored against themselves."""
    gt_json = tiny_coco / "annotations" / "instances_val.json"
    gt = load_coco(gt_json)
    results = [
        {k: a[k] for k in ("image_id", "category_id", "bbox", "segmentation")} | {"score": 1.0}
        for a in gt.annotations
        if not a["iscrowd"]
    ]
    pred_json = tmp_path / "self.json"
    pred_json.write_text(json.dumps(results))
    code, _, err = cli("eval", "--gt", gt_json, "--pred", pred_json, "--out", tmp_path)
    assert code == 0, err
    written = json.loads((tmp_path / "evaluate_result.json").read_text())
    for prefix in ("box", "mask"):
        assert written["metrics"][f"{prefix}_AP"] == pytest.approx(1.0, abs=1e-3)
        assert written["metrics"][f"{prefix}_AR100"] == pytest.approx(1.0, abs=1e-3)
    used = {gt.class_names[gt.category_ids.index(a["category_id"])] for a in gt.annotations if not a["iscrowd"]}
    assert {n for n, v in written["per_class"].items() if v["mask_AP"] > 0.99} == used
    unused = [v for n, v in written["per_class"].items() if n not in used]
    assert all(v["instances"] == 0 and v["mask_AP"] == v["box_AR"] == -1.0 for v in unused)
    assert gt.to_dict() == load_coco(gt_json).to_dict()  # evaluation wrote nothing into the GT records


def test_tiny_coco_equal_to_pycocotools(tiny_coco: Path) -> None:
    """Real data, imperfect predictions: every number equals pycocotools'."""
    gt = load_coco(tiny_coco / "annotations" / "instances_val.json")
    metrics, results = _evaluate(gt, make_predictions(gt, seed=5), 100)
    for iou_type, prefix in (("bbox", "box"), ("segm", "mask")):
        ref = _pycocotools_eval(gt, results, iou_type, 100)
        ours = [metrics[f"{prefix}_{n}"] for n in stat_names()]
        np.testing.assert_allclose(ours, ref.stats, rtol=0, atol=1e-9, err_msg=iou_type)
        assert 0.2 < metrics[f"{prefix}_AP"] < 0.95


def _write_dataset(tmp_path: Path, gt: CocoData) -> Path:
    """A dataset folder in the default layout (images + annotations/instances_val.json) for ``gt``."""
    from PIL import Image

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for img in gt.images:
        pixels = rng.integers(0, 256, (img["height"], img["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / img["file_name"])
    save_coco(gt, root / "annotations" / "instances_val.json")
    return root


class _ReplayBackend:
    """Stands in for a backend behind the predictor: checks it is fed each image at original size (its resize rule
    keeps the next image as it is) with [0, 1] pixels, in order, and answers given outputs, masks at stride 1."""

    name = "replay"
    device = torch.device("cpu")

    def __init__(self, gt: CocoData, outputs: dict[int, dict]):
        self.expected = [(img["height"], img["width"]) for img in gt.images]
        self.outputs = [outputs[img["id"]] for img in gt.images]

    @property
    def spec(self) -> InputSpec:
        h, w = self.expected[0]
        return InputSpec(min(h, w), max(h, w), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), size_divisible=1)

    def synchronize(self) -> None:
        pass

    def __call__(self, batch: torch.Tensor, image_sizes: list) -> list[RawDetections]:
        answers = []
        for image, size in zip(batch, image_sizes, strict=True):
            assert tuple(size) == self.expected.pop(0) and 0 <= float(image.min()) <= float(image.max()) <= 1
            out = self.outputs.pop(0)
            masks = np.asarray(out["masks"], dtype=np.float32).reshape(-1, *size)
            answers.append(RawDetections(out["boxes"], out["scores"], out["labels"], masks, mask_stride=1))
        return answers


def test_evaluate_checkpoint_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli) -> None:
    """The checkpoint mode runs the predictor over every image at original size and maps model classes by name."""
    from instaseg.inference.backends import torch as torch_backend

    gt = make_gt(seed=2, num_images=5, crowded_image=3)
    preds = make_predictions(gt, seed=3)
    for img in gt.images:  # detectors give boxes inside the image (the jitter may reach past its edge)
        w, h = img["width"], img["height"]
        preds[img["id"]]["boxes"] = np.clip(np.asarray(preds[img["id"]]["boxes"], dtype=np.float32), 0, [w, h, w, h])
    data = _write_dataset(tmp_path, gt)
    expected, _ = _evaluate(gt, preds, 100)
    # the model knows the classes in another order: its label l is class_names[l - 1]
    names = gt.class_names[::-1]
    k = len(names)
    model_outputs = {i: {**p, "labels": k + 1 - np.asarray(p["labels"])} for i, p in preds.items()}
    calls = []

    def load(path, device="cpu"):
        calls.append((str(path), device))
        return _ReplayBackend(gt, model_outputs), {"class_names": names, "category_ids": [0] * k}

    monkeypatch.setattr(torch_backend, "load", load)
    ckpt = tmp_path / "run" / "model.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"")
    code, out, err = cli("eval", "--checkpoint", ckpt, "--data", data, "--device", "cpu", "--batch-size", "1")
    assert code == 0, err
    assert calls == [(str(ckpt), "cpu")]
    written = json.loads((ckpt.parent / "evaluate_result.json").read_text())
    assert written["metrics"] == {n: v for n, v in expected.items() if n != "per_class"}
    assert written["per_class"] == expected["per_class"]
    assert written["split"] == "val" and written["checkpoint"] == str(ckpt) and written["data"] == str(data)

    def unknown_classes(path, device="cpu"):
        return _ReplayBackend(gt, model_outputs), {"class_names": ["zebra", *names[1:]], "category_ids": [0] * k}

    monkeypatch.setattr(torch_backend, "load", unknown_classes)
    code, _, err = cli("eval", "--checkpoint", ckpt, "--data", data, "--device", "cpu")
    assert code == 2 and "zebra" in err
    code, _, err = cli("eval", "--checkpoint", ckpt, "--data", data, "--split", "test")
    assert code == 2 and "no 'test' split" in err


def test_evaluate_real_checkpoint(tmp_path: Path, cli) -> None:
    """A real (untrained) Mask R-CNN checkpoint end to end: its masks come back at original size and are scored."""
    from instaseg.models.checkpoint import save_checkpoint
    from instaseg.models.factory import build_model
    from instaseg.models.recipes import apply_overrides, load_recipe

    gt = make_gt(seed=2, num_images=4, crowded_image=3)
    data = _write_dataset(tmp_path, gt)
    recipe = apply_overrides(load_recipe("maskrcnn_fast"), ["input.min_size=96", "input.max_size=96"])
    model = build_model(recipe, len(gt.class_names), weights="none")
    ckpt = save_checkpoint(tmp_path / "run" / "model.pt", model, recipe, gt.class_names, gt.category_ids)
    code, out, err = cli("eval", "--checkpoint", ckpt, "--data", data, "--device", "cpu", "--max-dets", "50")
    assert code == 0, err
    written = json.loads((tmp_path / "run" / "evaluate_result.json").read_text())
    assert written["num_predictions"] > 0 and written["num_images"] == 4
    assert sorted(written["metrics"]) == sorted(f"{p}_{n}" for p in ("box", "mask") for n in stat_names(50))
    assert all(-1 <= v <= 1 for v in written["metrics"].values())
    assert "AR50" in out


def test_ground_truth_without_area_or_masks(caplog: pytest.LogCaptureFixture) -> None:
    """Records missing 'area' get it from their mask (or box); box-only records let their box stand in for a mask."""
    square = np.zeros((32, 32), bool)
    square[4:12, 4:12] = True
    images = [{"id": 1, "file_name": "a.png", "height": 32, "width": 32}]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 5, "bbox": [4, 4, 8, 8]},
        {"id": 2, "image_id": 1, "category_id": 6, "segmentation": [[20, 20, 30, 20, 30, 30, 20, 30]]},
    ]
    gt = CocoData(images, anns, [{"id": 5, "name": "a"}, {"id": 6, "name": "b"}], Path("."))
    polygon = segmentation_to_mask(anns[1]["segmentation"], 32, 32).astype(bool)
    ev = CocoEvaluator(gt)
    ev.add(
        1,
        {"boxes": [[4, 4, 12, 12], [20, 20, 30, 30]], "labels": [1, 2], "scores": [0.9, 0.8]}
        | {"masks": np.stack([square, polygon])},
    )
    metrics = ev.compute()
    assert metrics["box_AP"] == pytest.approx(1.0) and metrics["mask_AP"] == pytest.approx(1.0)
    assert "no segmentation" in caplog.text
    assert "area" not in anns[0] and "segmentation" not in anns[0]  # the caller's records are untouched


def test_eval_files_empty_results(generated, tmp_path: Path) -> None:
    gt, _ = generated
    gt_json, pred_json = _write_eval_files(tmp_path, gt, [])
    result = evaluate_files(gt_json, pred_json)
    assert result["num_predictions"] == 0 and Path(result["output"]) == pred_json.parent / "evaluate_result.json"
    assert result["metrics"]["box_AP"] == 0.0 and result["metrics"]["mask_AP"] == 0.0
    assert result["metrics"]["box_APl"] in (0.0, -1.0)
