"""Masks only, with the exact paste: our predictor's masks against PaddleDetection's, and why the low ones differ.

    PYTHONPATH=src nice -n 5 python3 tools/paddle_rcnn_full/paste_check.py RUNS/<run> [--json out.json]

Per picture:
1. the reference's OWN 28x28 probabilities (ref mask_probs) at its own boxes (ref det, original frame) pasted by our
   `paste_mask_exact` -> IoU against its masks (ref detmask): the paste alone, no network in between;
2. our whole path (raw_forward on the reference's input tensor, shared post-processing with the recipe's
   mask_paste) -> IoU against its masks, matched as compare_rcnn.py matches (label, score 1e-3, box 0.5 px);
3. for every matched instance under IoU 0.99: box size, differing pixels, max |ours - ref| of the 28x28
   probabilities, and how close the reference's probabilities are to 0.5 (cells within that difference of 0.5,
   min |p - 0.5| over the cells the differing pixels sample).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import cv2
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_SRC = os.path.join(os.path.dirname(os.path.dirname(HERE)), "src")
sys.path.insert(0, HERE)
from table import TOL, mask_iou, match_instances  # noqa: E402

torch.set_grad_enabled(False)


def build(meta: dict, extra: list[str]):
    from pathlib import Path

    from instaseg.models.factory import _shapes, build_model
    from instaseg.models.recipes import apply_overrides, load_recipe
    from instaseg.models.registry import architecture
    from instaseg.models.weights.loading import load_published

    # the recipes as shipped (PaddleDetection's conventions set by them; R50-FPN's is maskrcnn_r50_fpn_paddlex), with
    # only RoIAlign's aligned flag as the dump had it (current PaddleDetection forces it off)
    name = {"maskrcnn_r50_fpn": "maskrcnn_r50_fpn_paddlex"}.get(meta["model"], meta["model"])
    cascade = name.startswith("cascade")
    over = [f"model.roi_align_aligned={str(meta['aligned']).lower()}"]
    if meta.get("fpn_channels"):
        over += [f"model.fpn_channels={meta['fpn_channels']}"]
    recipe = apply_overrides(load_recipe(name), over + extra)
    m = recipe["model"]
    assert (m["anchors"], m["roi_sampling_ratio"], m["rpn_min_size"], m["mask_paste"]) == ("exact", 0, 1.0, "exact")
    model = build_model(recipe, meta["num_classes"], weights="none")
    arch = "cascade_maskrcnn" if cascade else "maskrcnn"
    entry = next(w for w in architecture(arch).published if w.recipe == name and w.publisher == "PaddleX")
    load_published(model, entry, Path(meta["run"], "weights.pdparams"), _shapes(recipe), name)
    return model.eval(), over + extra


def det_rows(labels, scores, boxes) -> np.ndarray:
    return np.concatenate([np.asarray(labels)[:, None] - 1, np.asarray(scores)[:, None], boxes], 1).astype(np.float64)


def pairs_of(ref_det, our_det):
    """compare_rcnn's greedy matching, returning the pairs (ref index, our index)."""
    used, pairs = np.zeros(len(our_det), bool), []
    for i, r in enumerate(ref_det):
        best, best_d = -1, None
        for j, o in enumerate(our_det):
            if used[j] or int(o[0]) != int(r[0]):
                continue
            d = max(abs(o[1] - r[1]) / TOL["score"], np.abs(o[2:] - r[2:]).max() / TOL["box_px"])
            if best_d is None or d < best_d:
                best, best_d = j, d
        if best >= 0 and best_d <= 1.0:
            used[best] = True
            pairs.append((i, best))
    return pairs


def full(crop, x0, y0, h, w) -> np.ndarray:
    out = np.zeros((h, w), bool)
    out[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return out


def sampled_cells(box, pixels, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The 28x28 cells (row, col) nearest to where each (y, x) pixel centre samples the map of ``box``."""
    ys, xs = pixels
    cx = (xs + 0.5 - box[0]) / (box[2] - box[0]) * m - 0.5
    cy = (ys + 0.5 - box[1]) / (box[3] - box[1]) * m - 0.5
    return np.clip(np.rint(cy), 0, m - 1).astype(int), np.clip(np.rint(cx), 0, m - 1).astype(int)


def picture(model, ref, meta, b: int) -> dict:
    from instaseg.inference.postprocess import RawDetections, paste_mask_exact, postprocess

    p = f"{b}."
    im_h, im_w = (int(v) for v in cv2.imread(meta["images"][b]).shape[:2])
    keep = ref[p + "det"][:, 0] >= 0
    ref_det, ref_masks = ref[p + "det"][keep].astype(np.float64), ref[p + "detmask"][keep].astype(bool)
    ref_probs = ref[p + "mask_probs"][keep]
    # 1. the paste alone: the reference's probabilities at its boxes
    alone = [mask_iou(full(*paste_mask_exact(pr, d[2:], im_h, im_w), im_h, im_w), mk)
             for pr, d, mk in zip(ref_probs, ref_det, ref_masks, strict=True)]
    # 2. our whole path
    x = torch.from_numpy(ref[p + "input"])[None]
    h, w = (int(v) for v in ref[p + "im_shape"])
    raw = model.raw_forward(x, [(h, w)])[0]
    d = postprocess(RawDetections.from_output(raw, model), (h, w), (im_h, im_w))
    masks = np.stack([mask_utils_decode(r) for r in d.rles]) if d.rles else np.zeros((0, im_h, im_w), bool)
    det = det_rows(d.labels, d.scores, d.boxes)
    stats = match_instances(ref_det, ref_masks, det, masks)
    # the same raw outputs through torchvision's paste (what the predictor did before mask_paste)
    import dataclasses

    tv = postprocess(dataclasses.replace(RawDetections.from_output(raw, model), mask_paste="torchvision"), (h, w),
                     (im_h, im_w))
    tv_masks = np.stack([mask_utils_decode(r) for r in tv.rles]) if tv.rles else np.zeros((0, im_h, im_w), bool)
    tv_stats = match_instances(ref_det, ref_masks, det_rows(tv.labels, tv.scores, tv.boxes), tv_masks)
    # 3. why the low ones differ; our raw outputs are in the same order as the post-processed ones
    low = []
    for i, j in pairs_of(ref_det, det):
        iou = mask_iou(masks[j], ref_masks[i])
        if iou >= 0.99:
            continue
        ours_p, theirs_p = raw.masks[j].numpy(), ref_probs[i]
        diff = float(np.abs(ours_p - theirs_p).max())
        xor = np.nonzero(masks[j] ^ ref_masks[i])
        ref_box, our_box = ref_det[i, 2:], det[j, 2:]
        # the value each differing pixel samples: (probabilities, box) of each side, and crossed
        values = {f"{pn}_probs_{bn}_box": [round(float(v), 4) for v in sample(pr, bx, (im_h, im_w))[xor]]
                  for pn, pr in (("ref", theirs_p), ("our", ours_p)) for bn, bx in (("ref", ref_box), ("our", our_box))}
        low.append({"iou": round(iou, 4), "box_wh": [round(float(ref_box[2] - ref_box[0]), 2),
                                                     round(float(ref_box[3] - ref_box[1]), 2)],
                    "box_corner_diff_px": float(np.abs(our_box - ref_box).max()),
                    "ours_px": int(masks[j].sum()), "ref_px": int(ref_masks[i].sum()), "differing_px": len(xor[0]),
                    "max_prob_diff": diff, **values, "ref_paste_alone_iou": round(alone[i], 4)})
    differing = sum(int((masks[j] ^ ref_masks[i]).sum()) for i, j in pairs_of(ref_det, det))
    foreground = sum(int(ref_masks[i].sum()) for i, _ in pairs_of(ref_det, det))
    margins = np.abs(ref_probs - 0.5).reshape(len(ref_probs), -1)
    return {"paste_alone_min": min(alone, default=1.0), "paste_alone_mean": float(np.mean(alone)) if alone else 1.0,
            "stats": stats, "tv_stats": tv_stats, "low": low,
            "median_margin": float(np.median(margins)) if len(margins) else None,
            "ref_masks": int(len(ref_masks)), "differing_px": differing, "ref_foreground_px": foreground,
            "ref_mask_sizes_px": sorted(int(m.sum()) for m in ref_masks)[:10]}


def sample(probs: np.ndarray, box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The [H,W] values the exact paste samples (before the threshold)."""
    from instaseg.models.common.rcnn_ops import paste_masks_exact

    return paste_masks_exact(torch.from_numpy(probs)[None].float(), torch.tensor(box, dtype=torch.float32)[None],
                             size)[0, 0].numpy()


def mask_utils_decode(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--json")
    ap.add_argument("-o", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    with open(os.path.join(args.run, "meta.json")) as f:
        meta = json.load(f)
    meta["run"] = args.run
    ref = np.load(os.path.join(args.run, "ref.npz"))
    import instaseg

    assert instaseg.__file__.startswith(REPO_SRC), f"instaseg from {instaseg.__file__}: run with PYTHONPATH={REPO_SRC}"
    model, over = build(meta, args.overrides)
    assert model.mask_paste == "exact"
    n = sum(1 for k in ref.files if k.endswith(".input"))
    pics = [picture(model, ref, meta, b) for b in range(n)]
    ious = [s["stats"] for s in pics]
    summary = {
        "run": os.path.basename(args.run.rstrip("/")), "overrides": over, "pictures": n,
        "matched": f"{sum(s['matched'] for s in ious)}/{sum(s['ref'] for s in ious)} "
                   f"(ours {sum(s['ours'] for s in ious)})",
        "box_px": max(s["box"] for s in ious), "score": max(s["score"] for s in ious),
        "mask_iou_mean": float(np.mean([s["mean_mask_iou"] for s in ious])),
        "mask_iou_min": min(s["min_mask_iou"] for s in ious),
        "torchvision_paste_iou_mean": float(np.mean([p["tv_stats"]["mean_mask_iou"] for p in pics])),
        "torchvision_paste_iou_min": min(p["tv_stats"]["min_mask_iou"] for p in pics),
        "ref_probs_pasted_by_ours_mean": float(np.mean([p["paste_alone_mean"] for p in pics])),
        "ref_probs_pasted_by_ours_min": min(p["paste_alone_min"] for p in pics),
        "median_ref_margin_from_half": [p["median_margin"] for p in pics],
        "differing_px": sum(p["differing_px"] for p in pics),
        "ref_foreground_px": sum(p["ref_foreground_px"] for p in pics),
        "smallest_ref_masks_px": [p["ref_mask_sizes_px"] for p in pics],
        "low": [dict(picture=b, **x) for b, p in enumerate(pics) for x in p["low"]],
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
