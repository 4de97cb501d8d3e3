"""Our side (system python3, torch): load what ref_dump_rcnn.py wrote, convert the reference's weights into our model,
run the same stages and print a table per model (features / raw outputs / instances / losses).

    PYTHONPATH=src python3 tools/paddle_rcnn_full/compare_rcnn.py RUNS/maskrcnn_r50_fpn [--json out.json]
        [--no-own] [--no-losses | --losses-only]
        [-o model.round_anchors=true ...]   (extra recipe overrides, e.g. to measure one difference alone)

Each stage runs from the REFERENCE's input to that stage (its features, its proposals, its final boxes), so an
error upstream cannot hide or cause one downstream; "instances" rows run our whole path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import OrderedDict
from contextlib import contextmanager

import cv2
import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_SRC = os.path.join(os.path.dirname(os.path.dirname(HERE)), "src")
sys.path.insert(0, HERE)
from input_diff import input_row  # noqa: E402
from sampling import ReferenceOrderSampler  # noqa: E402
from table import TOL, Table, err, instances_row, match_instances  # noqa: E402

torch.set_grad_enabled(False)

# PaddleDetection's conventions as our model-section switches (see instaseg.models.common.rcnn.RCNN_DEFAULTS)
PADDLE = ["model.anchors=exact", "model.roi_sampling_ratio=0", "model.rpn_min_size=1.0",
          "model.rpn_box_loss_beta=0.0", "model.box_loss_beta=0.0"]
# the recipe holding PaddleX's entry where it is not the dump's model name (maskrcnn_r50_fpn keeps torchvision's
# conventions; PaddleX's R50-FPN file is maskrcnn_r50_fpn_paddlex's)
PADDLEX_RECIPE = {"maskrcnn_r50_fpn": "maskrcnn_r50_fpn_paddlex"}


def build_ours(meta: dict, extra: list[str]):
    from instaseg.models.factory import build_model
    from instaseg.models.recipes import apply_overrides, load_recipe

    name = meta["model"]
    cascade = name.startswith("cascade")
    over = PADDLE + [f"model.roi_align_aligned={str(meta['aligned']).lower()}"]
    if cascade:
        over = [o for o in over if "model.box_loss_beta" not in o] + [
            "model.box_loss_beta=0.0", "model.stage_loss_weights=[0.3333333333,0.3333333333,0.3333333333]"]
    if name == "maskrcnn_r50_c4":
        over += ["model.rpn_post_nms_top_n_train=2000"]
    else:
        over += [f"model.rpn_post_nms_top_n_train={2000 if cascade else 1000}"]
    if meta.get("fpn_channels"):
        over += [f"model.fpn_channels={meta['fpn_channels']}"]
    recipe = apply_overrides(load_recipe(PADDLEX_RECIPE.get(name, name)), over + extra)
    return build_model(recipe, meta["num_classes"], weights="none"), over + extra, recipe


def open_run(run: str) -> tuple[dict, np.lib.npyio.NpzFile]:
    """The dump's meta.json and ref.npz, once instaseg is known to come from this checkout."""
    import instaseg

    assert instaseg.__file__.startswith(REPO_SRC), f"instaseg from {instaseg.__file__}: run with PYTHONPATH={REPO_SRC}"
    with open(os.path.join(run, "meta.json")) as f:
        return json.load(f), np.load(os.path.join(run, "ref.npz"))


def load_published_file(model, recipe: dict, run: str, recipe_name: str):
    """The reference's weights.pdparams (written by paddle.save) through the user's path: our restricted reader and
    the recipe's PaddleX key map (instaseg.models.weights.loading.load_published)."""
    from pathlib import Path

    from instaseg.models.factory import _shapes
    from instaseg.models.registry import architecture
    from instaseg.models.weights.convert import convert as map_convert
    from instaseg.models.weights.loading import load_published
    from instaseg.models.weights.readers import read_weights

    arch = model_arch(recipe_name)
    entry = next(w for w in architecture(arch).published if w.recipe == recipe_name and w.publisher == "PaddleX")
    path = Path(run, "weights.pdparams")
    load_published(model, entry, path, _shapes(recipe), recipe_name)
    tensors, _ = read_weights(path)
    conv = map_convert(tensors, model.state_dict(), entry.key_map)
    return len(tensors), conv


def model_arch(name: str) -> str:
    return "solov2" if name.startswith("solov2") else "cascade_maskrcnn" if name.startswith("cascade") else "maskrcnn"


# ---------------------------------------------------------------------------------------------- helpers
def paddle_probs_to_ours(p: np.ndarray) -> np.ndarray:
    """[N, K+1] with background last -> background first."""
    return np.concatenate([p[:, -1:], p[:, :-1]], 1)


def rpn_paddle_to_ours(a: np.ndarray, per: int, n_sizes: int) -> np.ndarray:
    """[1, A*per, H, W] in Paddle's anchor order (size-major) -> ours (ratio-major)."""
    from sampling import anchor_perm

    if n_sizes == 1:
        return a
    n, c, h, w = a.shape
    perm = anchor_perm(n_sizes, c // per // n_sizes)
    return a.reshape(n, c // per, per, h, w)[:, perm].reshape(a.shape)


def det_rows(boxes, scores, labels) -> np.ndarray:
    """[label 0..K-1, score, x1, y1, x2, y2] from ours (labels 1..K)."""
    return np.concatenate([(labels.numpy() - 1)[:, None], scores.numpy()[:, None], boxes.numpy()], 1).astype(np.float64)


@contextmanager
def reference_order_rpn_sampling(model, n_sizes: int):
    """The RPN samples in the reference's anchor order (`ReferenceOrderSampler`) inside the block."""
    real = model.rpn.fg_bg_sampler
    per = model.rpn.anchor_generator.num_anchors_per_location()[0]
    model.rpn.fg_bg_sampler = ReferenceOrderSampler(real, n_sizes, per)
    try:
        yield
    finally:
        model.rpn.fg_bg_sampler = real


@contextmanager
def ordered_sampling():
    """torch.randperm -> arange: the samplers take the first positives / negatives in index order, as
    PaddleDetection's with use_random False."""
    real = torch.randperm

    def first(n, *args, **kwargs):
        return torch.arange(n, device=kwargs.get("device"))

    torch.randperm = first
    try:
        yield
    finally:
        torch.randperm = real


# ---------------------------------------------------------------------------------------------- stages
def features_stage(model, ref, p: str, table: Table, c4: bool, tag: str) -> OrderedDict:
    from instaseg.models.common.backbones import stage_features

    x = torch.from_numpy(ref[p + "input"])[None]
    if c4:
        table.tensor(f"{tag}backbone res4 (stride 16)", model.backbone(x)["0"], ref[p + "backbone.0"])
        return OrderedDict([("0", torch.from_numpy(ref[p + "backbone.0"]))])
    body = model.backbone.body
    feats = stage_features(body, x, model.backbone.nhwc)
    for i, f in enumerate(feats.values()):
        table.tensor(f"{tag}backbone C{i + 2}", f, ref[f"{p}backbone.{i}"])
    ref_body = OrderedDict((str(i), torch.from_numpy(ref[f"{p}backbone.{i}"])) for i in range(4))
    fpn = model.backbone.fpn(ref_body)
    for i, f in enumerate(fpn.values()):
        table.tensor(f"{tag}FPN P{i + 2}", f, ref[f"{p}fpn.{i}"])
    names = list(fpn.keys())
    return OrderedDict((names[i], torch.from_numpy(ref[f"{p}fpn.{i}"])) for i in range(len(names)))


def rpn_stage(model, ref, p: str, feats: OrderedDict, table: Table, c4: bool, tag: str) -> None:
    from torchvision.models.detection.image_list import ImageList

    n_sizes = 5 if c4 else 1
    logits, deltas = model.rpn.head(list(feats.values()))
    a_l = max(err(o, rpn_paddle_to_ours(ref[f"{p}rpn_logits.{i}"], 1, n_sizes)) for i, o in enumerate(logits))
    a_d = max(err(o, rpn_paddle_to_ours(ref[f"{p}rpn_deltas.{i}"], 4, n_sizes)) for i, o in enumerate(deltas))
    table.add(f"{tag}RPN objectness logits (all levels)", *a_l, a_l[1] <= TOL["feat_rel"])
    table.add(f"{tag}RPN box deltas (all levels)", *a_d, a_d[1] <= TOL["feat_rel"])
    x = torch.from_numpy(ref[p + "input"])[None]
    h, w = (int(v) for v in ref[p + "im_shape"])
    proposals, _ = model.rpn(ImageList(x, [(h, w)]), feats)
    ours, theirs = proposals[0].numpy(), ref[p + "proposals"]
    n = min(len(ours), len(theirs))
    same = np.abs(ours[:n] - theirs[:n]).max(1) <= TOL["box_px"]
    first_bad = int(np.argmin(same)) if not same.all() else n
    note = f"ours {len(ours)} ref {len(theirs)}; rank by rank equal within 0.5 px for the first {first_bad}"
    # equal scores (saturated probabilities) make the rank order of ties arbitrary: the set is what the box head sees
    d = np.abs(ours[:, None, :] - theirs[None, :, :]).max(-1)
    twins = int((d.min(0) <= TOL["box_px"]).sum())
    a = float(d.min(0).max()) if len(ours) else 0.0
    table.add(f"{tag}RPN proposals (as a set)", a, a / 1333, twins == len(theirs) == len(ours), note)


def box_head_stage(model, ref, p: str, feats: OrderedDict, table: Table, cascade: bool, tag: str) -> None:
    h, w = (int(v) for v in ref[p + "im_shape"])
    props = [torch.from_numpy(ref[p + "proposals"])]
    heads = model.roi_heads
    if cascade:
        boxes, probs = heads.cascade(feats, props, [(h, w)])
        table.tensor(f"{tag}cascade class probabilities (mean of 3 stages)", probs[0],
                     paddle_probs_to_ours(ref[p + "box_probs"]))
        # the reference's final boxes: its last stage's deltas on its refined RoIs, weights (30, 30, 15, 15)
        rois, d = ref[p + "refined_rois"].astype(np.float64), ref[p + "box_deltas"].astype(np.float64)
        wh = rois[:, 2:] - rois[:, :2]
        ctr = rois[:, :2] + 0.5 * wh
        dxy, dwh = d[:, :2] / 30.0, np.minimum(d[:, 2:] / 15.0, np.log(1000 / 16))
        c, s = ctr + dxy * wh, np.exp(dwh) * wh
        ref_boxes = np.concatenate([c - s / 2, c + s / 2], 1).clip(0, [w, h, w, h])
        a, r = err(boxes[0], ref_boxes)
        table.add(f"{tag}cascade final boxes (decoded, clipped)", a, r, a <= TOL["box_px"] / 10)
        return
    pooled = heads.box_head(heads.box_roi_pool(feats, props, [(h, w)]))
    logits, deltas = heads.box_predictor(pooled)
    table.tensor(f"{tag}box head class probabilities", F.softmax(logits, -1),
                 paddle_probs_to_ours(ref[p + "box_probs"]))
    table.tensor(f"{tag}box head deltas", deltas[:, 4:], ref[p + "box_deltas"])


def detections_stage(model, ref, p: str, feats: OrderedDict, table: Table, tag: str) -> list:
    """Our RoI heads on the reference's proposals: detections in the input frame, then our mask head on the
    reference's detections."""
    h, w = (int(v) for v in ref[p + "im_shape"])
    props = [torch.from_numpy(ref[p + "proposals"])]
    out = model.detect(feats, props, [(h, w)])[0]
    det = ref[p + "det_input"].astype(np.float64)
    det = det[det[:, 0] >= 0]
    stats = match_instances(det, None, det_rows(out.boxes, out.scores, out.labels), None)
    instances_row(table, f"{tag}detections on the reference's proposals (input frame)", [stats])
    # mask head on the reference's boxes and labels
    heads = model.roi_heads
    boxes = [torch.from_numpy(ref[p + "det_input"][:, 2:].astype(np.float32))]
    labels = torch.from_numpy(ref[p + "det_input"][:, 0].astype(np.int64)) + 1
    logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(feats, boxes, [(h, w)])))
    probs = logits[torch.arange(len(labels)), labels].sigmoid()
    table.tensor(f"{tag}mask head probabilities (28x28, reference boxes)", probs, ref[p + "mask_probs"], tol_rel=2e-3)
    return [stats]


def paste_like_reference(masks: torch.Tensor, boxes: np.ndarray, im_h: int, im_w: int) -> np.ndarray:
    """PaddleDetection's paste_mask (Detectron2's): each [M,M] probability map grid-sampled (bilinear, zero
    padding, align_corners False) at every pixel centre of the image, the box spanning the map exactly; >= 0.5."""
    if len(boxes) == 0:
        return np.zeros((0, im_h, im_w), bool)
    b = torch.from_numpy(boxes.astype(np.float32))
    x0, y0, x1, y1 = b.split(1, dim=1)
    gx = (torch.arange(im_w, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
    gy = (torch.arange(im_h, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
    out = []
    for i in range(len(boxes)):
        grid = torch.stack(torch.broadcast_tensors(gx[i][None, :], gy[i][:, None]), -1)[None]
        out.append(F.grid_sample(masks[i][None, None].float(), grid, align_corners=False)[0, 0] >= 0.5)
    return torch.stack(out).numpy()


def same_input_sizes(ref, meta, b: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Picture ``b``'s network input size (the reference's) and its original size."""
    h, w = (int(v) for v in ref[f"{b}.im_shape"])
    return (h, w), tuple(int(v) for v in cv2.imread(meta["images"][b]).shape[:2])


def reference_instances(ref, b: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference's instances of picture ``b`` as rows [label, score, box] and masks; label -1 marks boxes the
    reference empties when clipping, left out."""
    keep = ref[f"{b}.det"][:, 0] >= 0
    return ref[f"{b}.det"][keep].astype(np.float64), ref[f"{b}.detmask"][keep]


def our_instances(model, batch: torch.Tensor, size: tuple[int, int], im_size: tuple[int, int]):
    """Our whole path from a one-picture input ``batch`` of network-input ``size`` to masks pasted into the
    original ``im_size`` (the predictor's post-processing): the raw output, rows [label, score, box] and masks."""
    from pycocotools import mask as mask_utils

    from instaseg.inference.postprocess import RawDetections, postprocess

    raw = model.raw_forward(batch, [size])[0]
    d = postprocess(RawDetections.from_output(raw, model), size, im_size)
    det = np.concatenate([(d.labels - 1)[:, None], d.scores[:, None], d.boxes], 1).astype(np.float64)
    masks = np.stack([mask_utils.decode(r) for r in d.rles]) if d.rles else np.zeros((0,) + im_size, bool)
    return raw, det, masks


def same_input_instances(model, ref, meta, b: int, dtype=torch.float32):
    """`our_instances` from the reference's input tensor of picture ``b``, the network in ``dtype``."""
    size, im_size = same_input_sizes(ref, meta, b)
    return our_instances(model, torch.from_numpy(ref[f"{b}.input"])[None].to(dtype), size, im_size)


def final_instances(model, ref, meta, table: Table, n: int, tag: str) -> None:
    """Ours from the reference's input tensor to pasted masks (predictor post-processing) vs the reference's; then
    our masks pasted the reference's way (the network and box post-processing alone)."""
    from instaseg.inference.postprocess import scale_boxes

    stats, ref_paste = [], []
    for b in range(n):
        (h, w), im_size = same_input_sizes(ref, meta, b)
        raw, det, masks = same_input_instances(model, ref, meta, b)
        stats.append(match_instances(*reference_instances(ref, b), det, masks))
        if model.mask_stride is None:
            boxes = scale_boxes(raw.boxes.numpy(), (h, w), im_size)
            pasted = paste_like_reference(raw.masks, boxes, *im_size)
            ref_paste.append(match_instances(*reference_instances(ref, b),
                                             det_rows(torch.from_numpy(boxes), raw.scores, raw.labels), pasted))
    instances_row(table, f"{tag}instances, same input, our post-processing (original image)", stats)
    if ref_paste:
        instances_row(table, f"{tag}instances, same input, our masks pasted the reference's way", ref_paste)


def own_preprocessing(model, ref, meta, table: Table, n: int) -> None:
    from instaseg.inference.preprocess import preprocess

    stats = []
    for b in range(n):
        img = cv2.cvtColor(cv2.imread(meta["images"][b]), cv2.COLOR_BGR2RGB)
        batch, (size,) = preprocess([img], model.input_spec)
        _, det, masks = our_instances(model, batch, size, img.shape[:2])
        stats.append(match_instances(*reference_instances(ref, b), det, masks))
    instances_row(table, "instances, each side's own pre+post-processing", stats)


# ---------------------------------------------------------------------------------------------- losses
LOSS_NAMES = {"loss_rpn_cls": "loss_objectness", "loss_rpn_reg": "loss_rpn_box_reg",
              "loss_bbox_cls": "loss_classifier", "loss_bbox_reg": "loss_box_reg", "loss_mask": "loss_mask"}


def losses(model, ref, meta, table: Table, cascade: bool, n_sizes: int) -> None:
    from torchvision.models.detection.image_list import ImageList

    for b, refl in enumerate(meta["losses"]):
        p = f"{b}."
        x = torch.from_numpy(ref[p + "input"])[None]
        h, w = (int(v) for v in ref[p + "im_shape"])
        target = {"boxes": torch.from_numpy(ref[f"target.{b}.boxes"]),
                  "labels": torch.from_numpy(ref[f"target.{b}.labels"]) + 1,
                  "masks": torch.from_numpy(ref[f"target.{b}.masks"])}
        model.train()
        with ordered_sampling(), reference_order_rpn_sampling(model, n_sizes):
            feats = model.features(x)
            images = ImageList(x, [(h, w)])
            proposals, rpn_losses = model.rpn(images, feats, [target])
            if cascade:
                head = model.roi_heads.losses(feats, proposals, [(h, w)], [target])
            else:
                _, head = model.roi_heads(feats, proposals, [(h, w)], [target])
        model.eval()
        ours = {**rpn_losses, **head}
        pairs = [(k, LOSS_NAMES[k]) for k in ("loss_rpn_cls", "loss_rpn_reg")]
        if cascade:
            pairs += [(f"loss_bbox_{kind}_stage{s}", f"loss_{our}_s{s + 1}") for s in range(3)
                      for kind, our in (("cls", "classifier"), ("reg", "box_reg"))]
            pairs += [("loss_mask", "loss_mask")]
        else:
            pairs += [(k, LOSS_NAMES[k]) for k in ("loss_bbox_cls", "loss_bbox_reg", "loss_mask")]
        for theirs, our in pairs:
            o, r = float(ours[our]), float(refl[theirs])
            table.add(f"picture {b}: {theirs}", abs(o - r), abs(o - r) / max(abs(r), 1e-12),
                      abs(o - r) <= TOL["loss_rel"] * abs(r), f"ours {o:.6g} ref {r:.6g}")
        if not cascade:
            o, r = polygon_mask_loss(model, feats, proposals, (h, w), target, meta, b), float(refl["loss_mask"])
            table.add(f"picture {b}: loss_mask, our logits on the reference's polygon targets", abs(o - r),
                      abs(o - r) / abs(r), abs(o - r) <= TOL["loss_rel"] * abs(r), f"ours {o:.6g} ref {r:.6g}")


def polygon_mask_loss(model, feats, proposals, size, target, meta, b) -> float:
    """Our mask logits on our sampled foreground RoIs against PaddleDetection's targets: each matched object's
    polygons rasterised inside the RoI at 28 x 28 (its rasterize_polygons_within_box), instead of torchvision's
    RoIAlign of the full-image bitmap."""
    from pycocotools import mask as mask_utils
    from rcnn_common import load_targets

    heads = model.roi_heads
    s = meta_scale(meta, b)
    polys = load_targets([meta["images"][b]], size[0], size[1], s[1], s[0])[0]["polys"]
    with ordered_sampling():
        props, matched, labels, _ = heads.select_training_samples(proposals, [target])
    fg = torch.where(labels[0] > 0)[0]
    boxes = props[0][fg]
    logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(feats, [boxes], [size])))
    logits = logits[torch.arange(len(fg)), labels[0][fg]]
    res = logits.shape[-1]
    tgt = []
    for box, gi in zip(boxes.numpy().astype(np.float64), matched[0][fg].numpy(), strict=True):
        w, h = box[2] - box[0], box[3] - box[1]
        scaled = []
        for poly in polys[gi]:
            q = np.asarray(poly, np.float64).copy()
            q[0::2] = (q[0::2] - box[0]) * res / max(w, 0.1)
            q[1::2] = (q[1::2] - box[1]) * res / max(h, 0.1)
            scaled.append(q.tolist())
        rle = mask_utils.merge(mask_utils.frPyObjects(scaled, res, res))
        tgt.append(mask_utils.decode(rle).astype(np.float32))
    return float(F.binary_cross_entropy_with_logits(logits, torch.from_numpy(np.stack(tgt))))


def meta_scale(meta, b) -> tuple[float, float]:
    return tuple(meta["scale_factors"][b])


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--no-own", action="store_true")
    ap.add_argument("--no-losses", action="store_true")
    ap.add_argument("--losses-only", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("-o", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    meta, ref = open_run(args.run)
    model, over, recipe = build_ours(meta, args.overrides)
    n_ref, conv = load_published_file(model, recipe, args.run, PADDLEX_RECIPE.get(meta["model"], meta["model"]))
    used, converted = range(n_ref), conv.state
    report = {"unexpected": conv.unplaced, "mismatch": conv.mismatched, "unset": conv.unset}
    model.eval()
    name = meta["model"]
    table = Table(f"{name} ({meta['paddlex']}), reference RoIAlign aligned={meta['aligned']}, input short side "
                  f"{meta['short']}: {len(used)} reference tensors -> {len(converted)} of ours; unexpected "
                  f"{len(report['unexpected'])}, mismatch {len(report['mismatch'])}, unset {len(report['unset'])}, "
                  f"torchvision background slots zero; ours: {' '.join(over)}")
    if report["unexpected"] or report["mismatch"] or report["unset"]:
        print(json.dumps({k: v[:20] for k, v in report.items() if k != "counters"}, indent=1))
        table.print()
        sys.exit(1)
    c4, cascade = name == "maskrcnn_r50_c4", name.startswith("cascade")
    n = 0 if args.losses_only else sum(1 for k in ref.files if k.endswith(".input"))
    for b in range(n):
        tag = f"picture {b}: "
        feats = features_stage(model, ref, f"{b}.", table, c4, tag)
        rpn_stage(model, ref, f"{b}.", feats, table, c4, tag)
        box_head_stage(model, ref, f"{b}.", feats, table, cascade, tag)
        detections_stage(model, ref, f"{b}.", feats, table, tag)
    if n:
        final_instances(model, ref, meta, table, n, "")
    if n and not args.no_own:
        input_row(table, model, ref, meta)
        own_preprocessing(model, ref, meta, table, n)
    if not args.no_losses and meta["losses"]:
        losses(model, ref, meta, table, cascade, 5 if c4 else 1)
    table.report(args.json)


if __name__ == "__main__":
    main()
