"""COCO evaluation time: instaseg's scoring and faster-coco-eval as it comes, against pycocotools, on generated data.

    python bench/eval_speed.py [--images 500] [--detections 20000] [--seed 0] [--repeat 5]

All three score the same ground truth (polygons, ~8 objects per 640x480 image, 20 classes) and the same results
(perturbed ground truth plus false positives, masks as RLE), box and mask; times include loading the results
(loadRes, or instaseg's own results index) and evaluate + accumulate + summarize; instaseg's mask path also rasterises
the ground-truth polygons inside the timing, as pycocotools does. The 12 numbers of all three are compared too.
"speed-up" is pycocotools' best time over instaseg's, with the range of the per-round ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import time

import numpy as np
from faster_coco_eval import COCOeval_faster
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval as PyCOCOeval

from instaseg.data.coco import CocoData
from instaseg.evaluation.coco import _results_for, gt_to_coco, run_cocoeval

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


def time_stock_faster(gt: CocoData, results: list[dict], iou_type: str) -> tuple[float, np.ndarray]:
    """faster-coco-eval as it comes: loadRes, then its COCOeval (what instaseg ran before its own mask path)."""
    coco = gt_to_coco(gt)
    dets = copy.deepcopy(_results_for(results, iou_type))
    start = time.perf_counter()
    dt = coco.loadRes(dets)
    ev = COCOeval_faster(coco, dt, iou_type, print_function=lambda *a: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return time.perf_counter() - start, np.asarray(ev.stats[:12])


def time_instaseg(gt: CocoData, results: list[dict], iou_type: str) -> tuple[float, np.ndarray]:
    """instaseg's scoring (`run_cocoeval`); a fresh ground-truth index, so its masks are rasterised in the timing."""
    coco = gt_to_coco(gt)
    dets = copy.deepcopy(results)
    start = time.perf_counter()
    ev = run_cocoeval(coco, dets, iou_type, 100)
    return time.perf_counter() - start, np.asarray(ev.stats[:12])


SCORERS = {"pycocotools": time_pycocotools, "faster-coco-eval": time_stock_faster, "instaseg": time_instaseg}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--detections", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5, help="rounds; each runs the three scorers in turn")
    args = parser.parse_args()
    gt, results = make_data(args.images, args.detections, args.seed)
    print(f"{len(gt.images)} images, {len(gt.annotations)} objects, {len(results)} detections, 20 classes")
    print(f"seconds: best of {args.repeat} rounds (each round runs the three in turn, so load hits them alike)")
    header = f"{'iou type':<8} {'pycocotools':>12} {'faster-coco-eval':>17} {'instaseg':>9}"
    print(f"{header} {'speed-up (range)':>24} {'faster-coco-eval x':>19} {'max |diff|':>11}")
    for iou_type in ("bbox", "segm"):
        times: dict[str, list[float]] = {name: [] for name in SCORERS}
        stats = {}
        for _ in range(args.repeat):
            for name, scorer in SCORERS.items():
                seconds, stats[name] = scorer(gt, results, iou_type)
                times[name].append(seconds)
        best = {name: min(t) for name, t in times.items()}
        rounds = [p / f for p, f in zip(times["pycocotools"], times["instaseg"], strict=True)]
        diff = max(float(np.abs(stats["pycocotools"] - stats[n]).max()) for n in ("faster-coco-eval", "instaseg"))
        ratio = f"{best['pycocotools'] / best['instaseg']:.1f}x ({min(rounds):.1f}-{max(rounds):.1f}x)"
        stock = f"{best['pycocotools'] / best['faster-coco-eval']:.1f}x"
        row = f"{iou_type:<8} {best['pycocotools']:>12.2f} {best['faster-coco-eval']:>17.2f} {best['instaseg']:>9.2f}"
        print(f"{row} {ratio:>24} {stock:>19} {diff:>11.1e}")


if __name__ == "__main__":
    main()
