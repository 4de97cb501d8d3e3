"""What the kept differences K1-K3 of docs/equivalence.md cost a trained model in COCO mask and box AP.

    PYTHONPATH=src python3 tools/mmdet_kept_differences.py CHECKPOINT --data COCO_ROOT
        [--scales 1.37 0.73 1.37x1.21 0.73x0.83] [--images 100] [--json out.json]

Runs in our own environment (no MMDetection): MMDetection's choices come from tools/mmdet_conventions.py, which
tools/mmdet_equivalence.py checks against MMDetection itself. The pictures of COCO_ROOT (every split file) and
their annotations are first rescaled by each factor (``FX`` or ``FXxFY``: width by FX, height by FY; OpenCV's area
interpolation to shrink, bilinear to enlarge; masks resampled the same way and cut at 0.5), so that the predictor
resizes every picture: down to the recipe's size for factors above 1, up below 1. On each rescaled set, COCO AP
(`instaseg.evaluation.coco.coco_metrics`, every detection the model keeps, as ``instaseg eval``) of:

  a         ours as shipped: `preprocess`, the network, `postprocess`;
  K2 order  the uint8 picture resized by OpenCV (rounded) to our size, then our normalisation and padding, the same
            network and post-processing: the order of resize and normalisation alone;
  K2 size   ours (normalise, then resize the float picture) to MMDetection's size (each side rounded half up):
            the size alone; a itself for the architectures whose input spec rounds as MMDetection does
            (``size_rounding``: RTMDet-Ins and SOLOv2), not for one that floors (torchvision's rule);
  K2        the uint8 picture resized by OpenCV to MMDetection's size: its resize entirely;
  K1        RTMDet-Ins: a's network outputs, masks resampled with MMDetection's canvas geometry;
  K3        SOLOv2: a's network outputs, masks resampled in MMDetection's two steps (boxes stay ours: MMDetection's
            SOLOv2 gives none);
  all       the reference's choices together: K2's input, then K1's or K3's masks.

With the mask IoU of each variant's instances against a's: those scoring at least ``--iou-score`` on both sides,
paired as tools/mmdet_equivalence.py pairs them (`equivalence_tables.compare_instances`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from equivalence_tables import compare_instances  # noqa: E402
from mmdet_conventions import canvas_masks, opencv_resized, rescaled_size, two_step_masks  # noqa: E402

from instaseg.data.coco import CocoData, load_dataset  # noqa: E402
from instaseg.data.masks import mask_to_rle, rle_area, rle_bbox, segmentation_to_mask  # noqa: E402
from instaseg.evaluation.coco import coco_metrics, gt_to_coco, predictions_to_coco_results  # noqa: E402
from instaseg.inference.backends.torch import load  # noqa: E402
from instaseg.inference.postprocess import postprocess  # noqa: E402
from instaseg.inference.preprocess import preprocess  # noqa: E402

MASK_THRESHOLD = 0.5


def parse_scale(text: str) -> tuple[float, float]:
    """"1.37" -> (1.37, 1.37); "1.37x1.21" -> (1.37, 1.21): (width factor, height factor)."""
    fx, _, fy = text.partition("x")
    return float(fx), float(fy or fx)


def rescaled(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A picture or a float mask resampled to ``size`` (h, w): area interpolation to shrink, bilinear to enlarge."""
    shrink = size[0] * size[1] < array.shape[0] * array.shape[1]
    return cv2.resize(array, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def rescaled_annotation(ann: dict, image: dict, size: tuple[int, int]) -> dict | None:
    """An annotation on the rescaled picture; None where its mask vanishes."""
    mask = segmentation_to_mask(ann["segmentation"], image["height"], image["width"]).astype(np.float32)
    rle = mask_to_rle(rescaled(mask, size) > 0.5)
    if rle_area(rle) == 0:
        return None
    return dict(ann, segmentation=rle, area=rle_area(rle), bbox=rle_bbox(rle))


def rescaled_set(data: CocoData, scale: tuple[float, float], images: int) -> tuple[CocoData, dict[int, np.ndarray]]:
    """(ground truth, pictures by image id) of the first ``images`` pictures rescaled by ``scale``."""
    by_image = data.annotations_by_image()
    out_images, out_anns, pictures = [], [], {}
    for image in data.images[:images]:
        size = (round(image["height"] * scale[1]), round(image["width"] * scale[0]))
        picture = cv2.imread(str(data.image_path(image)))[:, :, ::-1]
        pictures[image["id"]] = np.ascontiguousarray(rescaled(picture, size))
        out_images.append(dict(image, height=size[0], width=size[1]))
        anns = (rescaled_annotation(a, image, size) for a in by_image.get(image["id"], []))
        out_anns.extend(a for a in anns if a is not None)
    return CocoData(out_images, out_anns, data.categories, data.image_root), pictures


def merged(sets: list[CocoData]) -> CocoData:
    """Several sets' pictures and annotations as one (each set's image ids already distinct)."""
    return CocoData([i for s in sets for i in s.images], [a for s in sets for a in s.annotations], sets[0].categories,
                    sets[0].image_root)  # fmt: skip


def with_masks(prediction: dict, masks: torch.Tensor) -> dict:
    return dict(prediction, masks=[mask_to_rle(m) for m in masks.numpy()])


def normalised(picture: np.ndarray, spec, device) -> torch.Tensor:
    """[3,h,w] float, normalised by the same float operations as `preprocess`."""
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=device)[:, None, None]
    std = torch.tensor(spec.std, dtype=torch.float32, device=device)[:, None, None]
    return (torch.from_numpy(np.ascontiguousarray(picture)).to(device).permute(2, 0, 1).float() / 255.0 - mean) / std


def padded_input(image: torch.Tensor, spec) -> torch.Tensor:
    """A normalised picture already at the network's size, padded as `preprocess` pads it, without its resize
    (which, flooring, would make 255 of 256 for a 187 px side: the floor of 255.99999999999997)."""
    h, w = image.shape[-2:]
    batch = spec.canvas(1, *spec.padded_frame(h, w), image.device)
    batch[0, :, :h, :w] = image
    return batch


def variants(backend, picture: np.ndarray, reference_masks, threshold: float) -> dict[str, dict]:
    """Each variant's detections on one picture: boxes, scores, labels (1..K), masks as RLE, original pixels."""
    original, spec, device = picture.shape[:2], backend.spec, backend.device
    x, sizes = preprocess([picture], spec, device)
    theirs = rescaled_size(*original, spec.min_size, spec.max_size)
    ours_at_theirs = F.interpolate(normalised(picture, spec, device)[None], size=theirs, mode="bilinear",
                                   align_corners=False)[0]  # our resize (torchvision's call) to their size  # fmt: skip
    opencv = {size: padded_input(normalised(opencv_resized(picture, size), spec, device), spec)
              for size in {sizes[0], theirs}}  # fmt: skip
    inputs = {"a": (x, sizes[0]), "K2 order": (opencv[sizes[0]], sizes[0]),
              "K2 size": (padded_input(ours_at_theirs, spec), theirs), "K2": (opencv[theirs], theirs)}  # fmt: skip
    out = {}
    for name, (batch, size) in inputs.items():
        raw = backend(batch, [size])[0]
        shipped = postprocess(raw, size, original, threshold, MASK_THRESHOLD)
        out[name] = {"boxes": shipped.boxes, "scores": shipped.scores, "labels": shipped.labels,
                     "masks": shipped.rles, "size": size}  # fmt: skip
        if name in ("a", "K2"):
            kept = torch.from_numpy(raw.masks[raw.scores >= threshold])
            out["K1/K3" if name == "a" else "all"] = with_masks(out[name], reference_masks(kept, size, original))
    return out


def reference_resampling(model):
    """K1 for RTMDet-Ins, K3 for SOLOv2: (masks, resized (h, w), original (h0, w0)) -> [N,h0,w0] bool."""
    kind = type(model).__module__
    if ".rtmdet_ins." in kind:
        return "K1", lambda m, size, original: canvas_masks(
            m, model.mask_stride, (size[1] / original[1], size[0] / original[0]), original
        )
    if ".solov2." in kind:
        return "K3", lambda m, size, original: two_step_masks(m, model.mask_stride, size, original, MASK_THRESHOLD)
    raise SystemExit(f"{type(model).__name__}: K1 and K3 concern RTMDet-Ins and SOLOv2 only")


def confident(prediction: dict, min_score: float) -> dict:
    """The instances scoring at least ``min_score``, masks decoded, for `compare_instances`."""
    keep = np.flatnonzero(np.asarray(prediction["scores"]) >= min_score)
    masks = [mask_utils.decode(prediction["masks"][i]) for i in keep]
    return {"boxes": np.asarray(prediction["boxes"])[keep], "scores": np.asarray(prediction["scores"])[keep],
            "labels": np.asarray(prediction["labels"])[keep], "masks": np.stack(masks) if masks else None}  # fmt: skip


def mask_agreement(pairs: list[tuple[dict, dict]], boxes: bool) -> dict:
    """Instances of ``a`` and a variant paired over pictures: how many, their mean and least mask IoU, how many
    pairs fall below 0.9 and the three worst as (IoU, a's mask area, the variant's)."""
    ours = reference = paired = 0
    total, least, low = 0.0, 1.0, []
    for a, variant in pairs:
        reference, ours = reference + len(a["scores"]), ours + len(variant["scores"])
        if len(a["scores"]) and len(variant["scores"]):
            c = compare_instances(a, variant, boxes)
            paired, total, least = paired + c["paired"], total + c["mean_iou"] * c["paired"], min(least, c["min_iou"])
            low.extend(c["below_iou"])
    return {"a": reference, "variant": ours, "paired": paired, "mean_iou": total / max(paired, 1), "min_iou": least,
            "below_0.9": sum(iou < 0.9 for iou, _, _ in low), "worst": sorted(low)[:3]}  # fmt: skip


def measure(args: argparse.Namespace) -> dict:
    backend, info = load(args.checkpoint, "cpu")
    k13, reference_masks = reference_resampling(backend.model)
    data = load_dataset(args.data)
    source = merged(list(data.values()))
    sets, results, pairs, differ = {}, {}, {}, {}
    for index, text in enumerate(args.scales):
        gt, pictures = rescaled_set(source, parse_scale(text), args.images)
        offset = (index + 1) * 10**7  # distinct image ids across sets, so that they pool into one
        for image in gt.images:
            image["id"] += offset
        for ann in gt.annotations:
            ann["image_id"] += offset
            ann["id"] += offset
        sets[text] = gt
        for image_id, picture in pictures.items():
            out = variants(backend, picture, reference_masks, 0.0)
            differ[text] = differ.get(text, 0) + (out["K2"]["size"] != out["a"]["size"])
            for name, prediction in out.items():
                name = k13 if name == "K1/K3" else name
                ids = info.get("category_ids") or gt.category_ids
                records = predictions_to_coco_results(image_id + offset, prediction, ids, picture.shape[:2])
                results.setdefault(text, {}).setdefault(name, []).extend(records)
                if name != "a":
                    both = (confident(out["a"], args.iou_score), confident(prediction, args.iou_score))
                    pairs.setdefault(text, {}).setdefault(name, []).append(both)
    sets["all"] = merged(list(sets.values()))
    results["all"] = {n: [r for t in args.scales for r in results[t][n]] for n in results[args.scales[0]]}
    pairs["all"] = {n: [p for t in args.scales for p in pairs[t][n]] for n in pairs[args.scales[0]]}
    differ["all"] = sum(differ.values())
    measured = {text: scored(sets[text], results[text], pairs[text], k13 == "K1") for text in sets}
    for text, r in measured.items():
        r["resized_size_differs"] = differ[text]  # pictures where MMDetection's size is not ours
    return measured


def scored(gt: CocoData, results: dict[str, list], pairs: dict[str, list], boxes: bool) -> dict:
    gt_coco = gt_to_coco(gt)
    out = {"pictures": len(gt.images), "instances": len(gt.annotations)}
    for name, records in results.items():
        metrics = coco_metrics(gt_coco, records)
        out[name] = {k: metrics[k] for k in ("mask_AP", "mask_AP50", "mask_AP75", "box_AP")}
        if name != "a":
            out[name]["iou"] = mask_agreement(pairs[name], boxes)
    return out


def table(measured: dict, iou_score: float) -> str:
    columns = ["scale", "pictures (instances; MMDetection's size differs)", "variant", "mask AP", "vs a",
               "mask AP75", "vs a", "box AP", "vs a",
               f"mask IoU to a, score >= {iou_score}: mean / min (pairs of a's, variant's)"]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for text, r in measured.items():
        a = r["a"]
        for name in [n for n in r if isinstance(r[n], dict)]:
            v = r[name]
            iou = v.get("iou")
            iou_cell = "-"
            if iou:
                pairs = f"{iou['paired']} of {iou['a']}, {iou['variant']}"
                iou_cell = f"{iou['mean_iou']:.4f} / {iou['min_iou']:.3f} ({pairs})"
            cells = [text, f"{r['pictures']} ({r['instances']}; {r['resized_size_differs']})", name,
                     f"{v['mask_AP']:.4f}", f"{v['mask_AP'] - a['mask_AP']:+.4f}",
                     f"{v['mask_AP75']:.4f}", f"{v['mask_AP75'] - a['mask_AP75']:+.4f}",
                     f"{v['box_AP']:.4f}", f"{v['box_AP'] - a['box_AP']:+.4f}", iou_cell]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="an instaseg checkpoint of RTMDet-Ins or SOLOv2")
    p.add_argument("--data", required=True, help="a COCO dataset root (every split file is used)")
    p.add_argument("--scales", nargs="+", default=["1.37", "0.73", "1.37x1.21", "0.73x0.83"])
    p.add_argument("--images", type=int, default=100, help="at most this many pictures")
    p.add_argument("--iou-score", type=float, default=0.3, help="least score of the instances whose masks are paired")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the numbers to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    measured = measure(args)
    print(table(measured, args.iou_score))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(measured, f, indent=1)


if __name__ == "__main__":
    main()
