"""COCO evaluation time: faster-coco-eval (what instaseg uses) against pycocotools, on generated data.

    python bench/eval_speed.py [--images 500] [--detections 20000] [--seed 0] [--repeat 3]

Both score the same ground truth (polygons, ~8 objects per 640x480 image, 20 classes) and the same results
(perturbed ground truth plus false positives, masks as RLE), box and mask; times include loading the results
(loadRes) and evaluate + accumulate + summarize. The 12 numbers of both are compared too.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import time

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval as PyCOCOeval

from instaseg.data.coco import CocoData
from instaseg.evaluation.coco import gt_to_coco, run_cocoeval

H, W = 480, 640


def _ellipse_polygon(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float) -> list[float]:
    t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    r = rng.uniform(0.8, 1.0, t.size)
    x = np.clip(cx + rx * r * np.cos(t), 0, W - 1)
    y = np.clip(cy + ry * r * np.sin(t), 0, H - 1)
    return np.stack([x, y], 1).reshape(-1).round(2).tolist()


def _random_object(rng: np.random.Generator) -> tuple[float, float, float, float]:
    return rng.uniform(0, W), rng.uniform(0, H), rng.uniform(4, 120), rng.uniform(4, 120)


def _rle(poly: list[float]) -> dict:
    rle = mask_utils.merge(mask_utils.frPyObjects([poly], H, W))
    return {"size": [H, W], "counts": rle["counts"].decode("ascii")}


def make_data(num_images: int, num_detections: int, seed: int) -> tuple[CocoData, list[dict]]:
    rng = np.random.default_rng(seed)
    cat_ids = [int(c) for c in rng.choice(np.arange(1, 91), 20, replace=False)]
    images, anns, results = [], [], []
    per_image_fp = max(0, num_detections // num_images - 7)
    for i in range(num_images):
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "height": H, "width": W})
        for _ in range(int(rng.poisson(8))):
            obj, cat = _random_object(rng), int(rng.choice(cat_ids))
            poly = _ellipse_polygon(rng, *obj)
            rle = mask_utils.frPyObjects([poly], H, W)[0]
            x, y, w, h = mask_utils.toBbox(rle).tolist()
            ann = {"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "segmentation": [poly]}
            anns.append({**ann, "area": float(mask_utils.area(rle)), "bbox": [x, y, w, h], "iscrowd": 0})
            if rng.random() < 0.85:  # found, a little off
                jitter = rng.normal(0, 3, 4)
                det = _ellipse_polygon(rng, obj[0] + jitter[0], obj[1] + jitter[1], obj[2] + jitter[2], obj[3])
                results.append({"image_id": i + 1, "category_id": cat, "score": rng.uniform(0.3, 1.0)})
                box = [x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]]
                results[-1].update(bbox=box, segmentation=_rle(det))
        for _ in range(per_image_fp):
            poly = _ellipse_polygon(rng, *_random_object(rng))
            rle = _rle(poly)
            bbox = mask_utils.toBbox(mask_utils.frPyObjects([poly], H, W)[0]).tolist()
            record = {"image_id": i + 1, "category_id": int(rng.choice(cat_ids)), "score": rng.uniform(0.01, 0.7)}
            results.append({**record, "bbox": bbox, "segmentation": rle})
    categories = [{"id": c, "name": f"class{c}"} for c in sorted(cat_ids)]
    return CocoData(images=images, annotations=anns, categories=categories, image_root=None), results


def _only(results: list[dict], iou_type: str) -> list[dict]:
    drop = "segmentation" if iou_type == "bbox" else "bbox"
    return [{k: v for k, v in r.items() if k != drop} for r in results]


def time_pycocotools(gt: CocoData, results: list[dict], iou_type: str) -> tuple[float, np.ndarray]:
    coco = PyCOCO()
    coco.dataset = copy.deepcopy(gt.to_dict())
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    dets = copy.deepcopy(_only(results, iou_type))
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools narrates every step
        ev = PyCOCOeval(coco, coco.loadRes(dets), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return time.perf_counter() - start, np.asarray(ev.stats)


def time_faster(gt: CocoData, results: list[dict], iou_type: str) -> tuple[float, np.ndarray]:
    coco = gt_to_coco(gt)
    dets = copy.deepcopy(results)
    start = time.perf_counter()
    ev = run_cocoeval(coco, dets, iou_type, 100)
    return time.perf_counter() - start, np.asarray(ev.stats[:12])


def _seconds(run: tuple[float, np.ndarray]) -> float:
    return run[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--detections", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs (a shared machine is noisy)")
    args = parser.parse_args()
    gt, results = make_data(args.images, args.detections, args.seed)
    print(f"{len(gt.images)} images, {len(gt.annotations)} objects, {len(results)} detections, 20 classes")
    print(f"{'iou type':<8} {'pycocotools s':>14} {'faster-coco-eval s':>19} {'speed-up':>9} {'max |diff|':>11}")
    for iou_type in ("bbox", "segm"):
        t_py, s_py = min((time_pycocotools(gt, results, iou_type) for _ in range(args.repeat)), key=_seconds)
        t_fast, s_fast = min((time_faster(gt, results, iou_type) for _ in range(args.repeat)), key=_seconds)
        diff = float(np.abs(s_py - s_fast).max())
        print(f"{iou_type:<8} {t_py:>14.2f} {t_fast:>19.2f} {t_py / t_fast:>8.1f}x {diff:>11.1e}")


if __name__ == "__main__":
    main()
