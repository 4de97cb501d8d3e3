"""Our side for PaddleX's SOLOv2 (system python3, torch): the reference's weights.pdparams through our published-
weights loader (the PaddleX entry's key map), each stage from the reference's input to it, then the instances.

    PYTHONPATH=src python3 tools/paddle_rcnn_full/compare_solov2.py RUNS/solov2_r50_fpn [--json out.json]
        [--recipe solov2_r50_fpn_paddlex] [--no-own] [-o model.key=value ...]

The dump is ref_dump_rcnn.py's for configs/solov2/solov2_r50_fpn_1x_coco.yml (PaddleX's SOLOv2). PaddleDetection
outputs no boxes for SOLOv2: instances match by label and score, then mask IoU.
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare_rcnn import load_published_file, open_run  # noqa: E402
from compare_rcnn import our_instances as rcnn_instances  # noqa: E402
from input_diff import input_row  # noqa: E402
from table import TOL, Table, instances_row, match_instances  # noqa: E402

torch.set_grad_enabled(False)
RECIPE = "solov2_r50_fpn_paddlex"  # the recipe PaddleX's SOLOv2 entry points at
TIE = 1e-5  # class probabilities this close are equal to float32 rounding (features agree to ~1e-5 relative)
SCORE_FLOOR = 0.05  # PaddleDetection's MaskMatrixNMS update_threshold: rows below it are its filler rows


def build_ours(recipe_name: str, meta: dict, extra: list[str]):
    from instaseg.models.factory import build_model
    from instaseg.models.recipes import apply_overrides, load_recipe

    recipe = apply_overrides(load_recipe(recipe_name), list(extra))
    return build_model(recipe, meta["num_classes"], weights="none"), recipe


def reference_instances(ref, p: str) -> tuple[np.ndarray, np.ndarray, int]:
    """The reference's rows [label, score, NaN box] and masks, without the filler rows its post-processing appends
    (the last candidate whatever its score: PaddleDetection's guard against an empty result), and how many."""
    scores, labels, masks = ref[p + "det_scores"], ref[p + "det_labels"], ref[p + "detmask"]
    keep = scores >= SCORE_FLOOR
    det = np.array([[labels[i], scores[i], np.nan, np.nan, np.nan, np.nan] for i in np.flatnonzero(keep)])
    return det.reshape(-1, 6), masks[keep], int((~keep).sum())


def our_instances(model, batch: torch.Tensor, size: tuple[int, int], im: tuple[int, int]):
    """`compare_rcnn.our_instances`' rows with NaN boxes (the reference's output has none) and masks."""
    _, det, masks = rcnn_instances(model, batch, size, im)
    det[:, 2:] = np.nan
    return det, masks


def reference_style_masks(probs: torch.Tensor, padded, size: tuple[int, int], im: tuple[int, int]) -> np.ndarray:
    """PaddleDetection's get_seg_single: stride-4 probabilities x4 bilinear to the padded input, cut to the resized
    picture, bilinear to the original size, > 0.5."""
    if len(probs) == 0:
        return np.zeros((0,) + im, bool)
    up = F.interpolate(probs[None], size=tuple(padded), mode="bilinear", align_corners=False)
    up = up[:, :, : size[0], : size[1]]
    return (F.interpolate(up, size=im, mode="bilinear", align_corners=False)[0] > 0.5).numpy()


def near_tie(probs: np.ndarray, y: int, x: int, c: int) -> bool:
    """Whether cell (y, x) of class c has a neighbour in its point-NMS window (the cell, the one above, left and
    above-left) within TIE of its own score: which of two equal scores survives is float32 rounding's choice."""
    window = probs[max(y - 1, 0) : y + 1, max(x - 1, 0) : x + 1, c].ravel()
    others = np.delete(window, np.flatnonzero(window == probs[y, x, c])[:1])
    return bool(others.size and np.abs(others - probs[y, x, c]).min() <= TIE)


def stages(model, ref, p: str, tag: str, table: Table) -> list[torch.Tensor]:
    """Backbone, FPN (from the reference's C2-C5), mask feature and head (from its P2-P6); our kernels."""
    from instaseg.models.common.backbones import stage_features
    from instaseg.models.solov2.decode import point_nms

    x = torch.from_numpy(ref[p + "input"])[None]
    for i, f in enumerate(stage_features(model.backbone.body, x, model.backbone.nhwc).values()):
        table.tensor(f"{tag}backbone C{i + 2}", f, ref[f"{p}backbone.{i}"])
    body = {str(i): torch.from_numpy(ref[f"{p}backbone.{i}"]) for i in range(4)}
    for i, f in enumerate(model.backbone.fpn(body).values()):
        table.tensor(f"{tag}FPN P{i + 2}", f, ref[f"{p}fpn.{i}"])
    feats = [torch.from_numpy(ref[f"{p}fpn.{i}"]) for i in range(5)]
    table.tensor(f"{tag}mask feature (stride 4)", model.mask_head(feats[:4]), ref[p + "mask_feat"])
    cls, kernels = model.head(feats)
    a, ties, others = 0.0, 0, 0
    for i, c in enumerate(cls):
        probs = c.sigmoid()[0].permute(1, 2, 0).numpy()
        ours, theirs = point_nms(c.sigmoid())[0].permute(1, 2, 0).numpy(), ref[f"{p}cate.{i}"][0]
        one_sided = (ours == 0) != (theirs == 0)  # kept by one side's point NMS only
        tie = np.array([near_tie(probs, *cell) for cell in np.argwhere(one_sided)], bool)
        ties, others = ties + int(tie.sum()), others + int((~tie).sum())
        a = max(a, float(np.abs(ours - theirs)[~one_sided].max()))
    table.add(f"{tag}class scores after point NMS (5 grids)", a, a, a <= 1e-4 and others == 0,
              f"{ties} cells kept by one side only, each within {TIE:g} of a neighbour (a tie); {others} others")
    a = max(float(np.abs(k.numpy() - ref[f"{p}kernel.{i}"]).max()) for i, k in enumerate(kernels))
    r = a / max(float(np.abs(ref[f"{p}kernel.{i}"]).max()) for i in range(5))
    table.add(f"{tag}dynamic kernels (5 grids)", a, r, r <= TOL["feat_rel"])
    return kernels


def same_input(model, ref, meta, table: Table, n: int) -> None:
    """Per picture the stages; then instances from the reference's head outputs through our decoding (masks
    resampled the reference's way), and our whole path from the reference's input tensor."""
    from instaseg.models.common.points import flatten_levels
    from instaseg.models.solov2.decode import detect_single

    decoded, whole, fillers = [], [], 0
    for b in range(n):
        p = f"{b}."
        kernels = stages(model, ref, p, f"picture {b}: ", table)
        x = torch.from_numpy(ref[p + "input"])[None]
        size = tuple(int(v) for v in ref[p + "im_shape"])
        im = tuple(int(v) for v in cv2.imread(meta["images"][b]).shape[:2])
        det_ref, masks_ref, filler = reference_instances(ref, p)
        fillers += filler
        cells = flatten_levels([torch.from_numpy(ref[f"{p}cate.{i}"]).permute(0, 3, 1, 2) for i in range(5)])
        _, sc, labels, probs = detect_single(cells[0], flatten_levels(kernels)[0],
                                             torch.from_numpy(ref[p + "mask_feat"])[0], model.cell_strides,
                                             model.mask_stride, model.test_cfg)  # fmt: skip
        ours = np.concatenate([(labels - 1).numpy()[:, None], sc.numpy()[:, None], np.full((len(sc), 4), np.nan)], 1)
        decoded.append(match_instances(det_ref, masks_ref, ours,
                                       reference_style_masks(probs, x.shape[-2:], size, im)))  # fmt: skip
        whole.append(match_instances(det_ref, masks_ref, *our_instances(model, x, size, im)))
    instances_row(table, "instances, reference head outputs -> our decoding, masks resampled the reference's way",
                  decoded)  # fmt: skip
    instances_row(table, "instances, same input, our post-processing (original image)", whole,
                  f"{fillers} filler rows of the reference dropped")


def own_preprocessing(model, ref, meta, table: Table, n: int) -> None:
    from instaseg.inference.preprocess import preprocess

    stats = []
    for b in range(n):
        img = cv2.cvtColor(cv2.imread(meta["images"][b]), cv2.COLOR_BGR2RGB)
        batch, (size,) = preprocess([img], model.input_spec)
        det_ref, masks_ref, _ = reference_instances(ref, f"{b}.")
        stats.append(match_instances(det_ref, masks_ref, *our_instances(model, batch, size, img.shape[:2])))
    instances_row(table, "instances, each side's own pre+post-processing", stats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a ref_dump_rcnn.py dump of solov2_r50_fpn")
    ap.add_argument("--recipe", default=RECIPE, help="ours (default: the recipe PaddleX's SOLOv2 belongs to)")
    ap.add_argument("--no-own", action="store_true", help="skip each side's own pre- and post-processing")
    ap.add_argument("--json", help="write the table's rows here")
    ap.add_argument("-o", dest="overrides", action="append", default=[], help="a recipe override, key=value")
    args = ap.parse_args()
    meta, ref = open_run(args.run)
    model, recipe = build_ours(args.recipe, meta, args.overrides)
    n_ref, conv = load_published_file(model, recipe, args.run, args.recipe)
    report = {"unexpected": conv.unplaced, "mismatch": conv.mismatched, "unset": conv.unset}
    model.eval()
    spec = model.input_spec
    table = Table(f"{meta['model']} ({meta['paddlex']}), input short side {meta['short']}: {n_ref} reference "
                  f"tensors -> {len(conv.state)} of ours; unexpected {len(report['unexpected'])}, mismatch "
                  f"{len(report['mismatch'])}, unset {len(report['unset'])}; ours: recipe {args.recipe} (resize_order "
                  f"{spec.resize_order}, normalisation {spec.normalisation}, mask_resample {model.mask_resample})"
                  f"{' ' + ' '.join(args.overrides) if args.overrides else ''}")
    if report["unexpected"] or report["mismatch"] or report["unset"]:
        print(json.dumps({k: v[:20] for k, v in report.items()}, indent=1))
        sys.exit(1)
    n = sum(1 for k in ref.files if k.endswith(".input"))
    same_input(model, ref, meta, table, n)
    if not args.no_own:
        input_row(table, model, ref, meta)
        own_preprocessing(model, ref, meta, table, n)
    table.report(args.json)


if __name__ == "__main__":
    main()
