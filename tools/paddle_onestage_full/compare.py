"""Our side (system python3, torch): load what ref_dump.py wrote, convert the reference's weights into our model,
run the same stages and print a table per model (features / raw outputs / instances / losses).

    PYTHONPATH=src python3 tools/paddle_onestage_full/compare.py RUNS/mask_rtdetr_l [--json out.json]
        [--no-own] [--no-losses]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager

import cv2
import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "paddle_rcnn_full"))
from common import det_rand_np  # noqa: E402
from table import TOL, Table, err, instances_row, match_instances  # noqa: E402

torch.set_grad_enabled(False)
def clipped(det: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, int]:
    """The reference's detections with boxes clipped to the image (PaddleDetection's DETRPostProcess leaves them
    unclipped; our contract clips), and how many moved by more than the box tolerance."""
    det = det.astype(np.float64).copy()
    h, w = size
    before = det[:, 2:].copy()
    det[:, 2:] = det[:, 2:].clip(0, np.array([w, h, w, h], np.float64))
    return det, int((np.abs(det[:, 2:] - before).max(1, initial=0) > TOL["box_px"]).sum())


def ours_instances(model, raw_outs, input_sizes, image_sizes, eager: bool):
    """Our detections in original pixels: ``eager`` = the model's own eval output (masks resized whole),
    otherwise the shared predictor post-processing (masks pasted inside their boxes, RLE)."""
    from pycocotools import mask as mask_utils

    from instaseg.inference.postprocess import RawDetections, postprocess

    res = []
    for out, in_size, im_size in zip(raw_outs, input_sizes, image_sizes, strict=True):
        if eager:
            full = full_size_any(model, out, in_size, im_size)
            det = np.concatenate([(full["labels"] - 1).numpy()[:, None], full["scores"].numpy()[:, None],
                                  full["boxes"].numpy()], 1)
            masks = (full["masks"][:, 0] > 0.5).numpy()
        else:
            d = postprocess(RawDetections.from_output(out, model), in_size, im_size)
            det = np.concatenate([(d.labels - 1)[:, None], d.scores[:, None], d.boxes], 1)
            masks = np.stack([mask_utils.decode(r) for r in d.rles]) if d.rles else np.zeros((0,) + im_size, bool)
        res.append((det.astype(np.float64), masks))
    return res


def full_size_any(model, out, in_size, im_size):
    """TransformDetector.full_size for an input that was stretched (not aspect-kept): the resize ratios are per
    axis, which full_size handles already (it takes the input and image sizes)."""
    return model.full_size(out, tuple(in_size), tuple(im_size))


# ---------------------------------------------------------------------------------------------- training
@contextmanager
def det_rand():
    real = torch.rand

    def fake(*size, device=None, dtype=None, **kw):
        shape = list(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else list(size)
        return torch.from_numpy(det_rand_np(shape)).to(device=device or "cpu", dtype=dtype or torch.float32)

    real_like = torch.rand_like

    def fake_like(t, dtype=None, **kw):
        return fake(tuple(t.shape), device=t.device, dtype=dtype or t.dtype)

    torch.rand, torch.rand_like = fake, fake_like
    try:
        yield
    finally:
        torch.rand, torch.rand_like = real, real_like


def targets_of(ref, n: int) -> list[dict]:
    out = []
    for i in range(n):
        out.append({"boxes": torch.from_numpy(ref[f"target.{i}.boxes"]),
                    "labels": torch.from_numpy(ref[f"target.{i}.labels"]) + 1,
                    "masks": torch.from_numpy(ref[f"target.{i}.masks"])})
    return out


# ---------------------------------------------------------------------------------------------- Mask-RT-DETR
def compare_mask_rtdetr(model, ref, meta, table: Table, own_pre: bool) -> None:
    x = torch.from_numpy(ref["input"])
    feats = model.backbone(x)
    for i, f in enumerate(feats):
        table.tensor(f"backbone stride {4 * 2 ** i}", f, ref[f"backbone.{i}"])
    fused, mask_feat = model.encoder([torch.from_numpy(ref[f"backbone.{i}"]) for i in range(len(feats))])
    for i, f in enumerate(fused):
        table.tensor(f"encoder stride {8 * 2 ** i}", f, ref[f"encoder.{i}"])
    table.tensor("mask prototypes (stride 4)", mask_feat, ref["mask_feat"])
    # each stage from the reference's input to it: top-k selections must not flip on near-ties upstream
    fused = [torch.from_numpy(ref[f"encoder.{i}"]) for i in range(len(fused))]
    mask_feat = torch.from_numpy(ref["mask_feat"])
    layers, enc_out, _ = model.transformer(fused, mask_feat)
    # top-k of near-tied selection scores may list the same queries in another order (the decoder is
    # permutation-equivariant, so nothing downstream changes): align ours to the reference's order by the
    # selected queries' encoder boxes before comparing query by query
    perm, moved = align_queries(enc_out.boxes.numpy(), ref["enc_boxes"])
    enc_logits, enc_boxes = take(enc_out.logits, perm), take(enc_out.boxes, perm)
    note = f"{moved} queries listed in another order (near-tied selection scores)" if moved else ""
    table.tensor("query selection: logits", enc_logits, ref["enc_logits"], note=note)
    table.tensor("query selection: boxes", enc_boxes, ref["enc_boxes"])
    border = int((ref["enc_boxes"] == 1.0).all(-1).sum())
    if border:
        print(f"note: {border} border tokens (tied content) among the reference's selected queries")
    final = layers[-1]
    table.tensor("decoder logits", take(final.logits, perm), ref["logits"])
    a, r = err(take(final.boxes, perm) * 640, ref["boxes"] * 640)
    table.add("decoder boxes (x640 px)", a, r, a <= TOL["box_px"])
    table.tensor("decoder mask logits", take(final.masks, perm), ref["masks"])
    instances(model, ref, meta, table, x)
    if own_pre:
        torch_stretch(model, ref, meta, table)
        own_preprocessing(model, ref, meta, table)


def align_queries(ours: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, int]:
    """[B, Q] index into our queries for each of the reference's (nearest encoder box), and how many moved."""
    perm = np.stack([np.abs(o[None] - r[:, None]).sum(-1).argmin(1) for o, r in zip(ours, ref, strict=True)])
    return perm, int((perm != np.arange(perm.shape[1])[None]).sum())


def take(t: torch.Tensor, perm: np.ndarray) -> np.ndarray:
    return np.stack([t[b].numpy()[perm[b]] for b in range(len(perm))])


def instances(model, ref, meta, table: Table, x) -> None:
    b = x.shape[0]
    image_sizes = [tuple(int(v) for v in cv2.imread(p).shape[:2]) for p in meta["images"]]
    raw = model.raw_forward(x, [(640, 640)] * b)
    for eager in (True, False):
        got = ours_instances(model, raw, [(640, 640)] * b, image_sizes, eager)
        stats = []
        for i in range(b):
            det, n_clip = clipped(ref[f"det.{i}"], image_sizes[i])
            stats.append(match_instances(det, ref[f"detmask.{i}"], *got[i]) | {"clipped": n_clip})
        instances_row(table, "instances, same input, " + ("eager full_size" if eager else "predictor postprocess"),
                      stats)
    if hasattr(model, "_run"):
        got = reference_style_masks(model, x, image_sizes, raw)
        stats = []
        for i in range(b):
            det, n_clip = clipped(ref[f"det.{i}"], image_sizes[i])
            stats.append(match_instances(det, ref[f"detmask.{i}"], *got[i]) | {"clipped": n_clip})
        instances_row(table, "instances, same input, masks post-processed as the reference", stats)


def reference_style_masks(model, x, image_sizes, raw) -> list:
    """Our network's mask logits post-processed the reference's way (DETRPostProcess: the stride-4 logits of
    the kept queries resized bilinearly to the image, then > 0), our boxes and scores: isolates the network."""
    layers, _, _ = model._run(x)
    logits = layers[-1].logits
    res = []
    for b, (h, w) in enumerate(image_sizes):
        scores = logits[b].sigmoid().flatten()
        top = scores.topk(len(raw[b].scores)).indices
        query = top // model.num_classes
        m = F.interpolate(layers[-1].masks[b, query][None], size=(h, w), mode="bilinear", align_corners=False)[0]
        full = full_size_any(model, raw[b], (640, 640), (h, w))
        det = np.concatenate([(full["labels"] - 1).numpy()[:, None], full["scores"].numpy()[:, None],
                              full["boxes"].numpy()], 1)
        res.append((det.astype(np.float64), (m > 0).numpy()))
    return res


def torch_stretch(model, ref, meta, table: Table) -> None:
    """Ours fed the original pictures stretched to 640 x 640 by torch's bilinear resize (our resize kernel) instead
    of cv2's bicubic on uint8 (the reference's): the effect of the resize kernel alone."""
    stats = []
    for i, p in enumerate(meta["images"]):
        img = torch.from_numpy(cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float() / 255
        x = F.interpolate(img[None], size=(640, 640), mode="bilinear", align_corners=False)
        raw = model.raw_forward(x, [(640, 640)])
        got = ours_instances(model, raw, [(640, 640)], [tuple(img.shape[-2:])], eager=True)[0]
        det, n_clip = clipped(ref[f"det.{i}"], tuple(img.shape[-2:]))
        stats.append(match_instances(det, ref[f"detmask.{i}"], *got) | {"clipped": n_clip})
    instances_row(table, "instances, ours stretched by torch bilinear (kernel effect)", stats)


def own_preprocessing(model, ref, meta, table: Table) -> None:
    """Each side's own pre-processing: ours the shared predictor's (by the recipe's InputSpec)."""
    from instaseg.inference.preprocess import preprocess

    images = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in meta["images"]]
    stats = []
    for i, img in enumerate(images):
        batch, sizes = preprocess([img], model.input_spec)
        raw = model.raw_forward(batch, sizes)
        got = ours_instances(model, raw, sizes, [img.shape[:2]], eager=False)[0]
        det, n_clip = clipped(ref[f"det.{i}"], img.shape[:2])
        stats.append(match_instances(det, ref[f"detmask.{i}"], *got) | {"clipped": n_clip})
    instances_row(table, "instances, own pre+post-processing", stats)


def losses_mask_rtdetr(model, ref, meta, table: Table) -> None:
    n = sum(1 for k in ref.files if k.endswith(".labels"))
    x = torch.from_numpy(ref["input"][:n])
    model.cfg["label_noise_ratio"] = 0.0  # box noise as published, from the shared sequence
    model.train()
    with det_rand():
        ours = model.losses(x, targets_of(ref, n))
    model.eval()
    refl = meta["losses"]
    for key in ("class", "bbox", "giou", "mask", "dice"):
        for suffix, parts in (("", [""]), ("_aux", ["_aux"]), ("_dn", ["_dn", "_aux_dn"])):
            o = float(ours[f"loss_{key}{suffix}"])
            r = sum(refl[f"loss_{key}{p}"] for p in parts)
            table.add(f"loss_{key}{suffix}", abs(o - r), abs(o - r) / max(abs(r), 1e-12),
                      abs(o - r) <= TOL["loss_rel"] * abs(r), f"ours {o:.6g} ref {r:.6g}")


# ---------------------------------------------------------------------------------------------- PP-YOLOE-seg
def paddle_levels_to_ours(a: np.ndarray, sizes: list[int], axis: int) -> np.ndarray:
    """Paddle concatenates the levels coarsest first (strides 32, 16, 8); ours finest first."""
    parts = np.split(a, np.cumsum(sizes[::-1])[:-1], axis=axis)
    return np.concatenate(parts[::-1], axis=axis)


def compare_ppyoloe(model, ref, meta, table: Table, own_pre: bool) -> None:
    x = torch.from_numpy(ref["input"])
    feats = model.backbone(x)
    for i, f in enumerate(feats):
        table.tensor(f"backbone stride {8 * 2 ** i}", f, ref[f"backbone.{i}"])
    neck = model.neck([torch.from_numpy(ref[f"backbone.{i}"]) for i in range(len(feats))])
    for i, f in enumerate(neck):
        table.tensor(f"neck stride {8 * 2 ** i}", f, ref[f"neck.{2 - i}"])
    cls, reg, coef, protos = model.head([torch.from_numpy(ref[f"neck.{2 - i}"]) for i in range(len(neck))])
    sizes = [c.shape[-1] * c.shape[-2] for c in cls]
    from instaseg.models.common.points import flatten_levels

    table.tensor("class scores (sigmoid)", flatten_levels(cls).sigmoid(),
                 paddle_levels_to_ours(ref["cls"], sizes, 2).transpose(0, 2, 1))
    table.tensor("box distances (strides)", model.head.distances(flatten_levels(reg)),
                 paddle_levels_to_ours(ref["dist"], sizes, 1))
    table.tensor("mask coefficients", flatten_levels(coef),
                 paddle_levels_to_ours(ref["coef"], sizes, 2).transpose(0, 2, 1))
    table.tensor("prototypes", protos, ref["proto"])
    instances(model, ref, meta, table, x)
    ppyoloe_reference_style(model, ref, meta, table, x)
    if own_pre:
        torch_stretch(model, ref, meta, table)
        own_preprocessing(model, ref, meta, table)


def ppyoloe_reference_style(model, ref, meta, table: Table, x) -> None:
    """Our network's detections with masks post-processed PaddleDetection's way (process_mask_upsample: the
    stride-4 probabilities resized to the 640 input, cut at input pixels x1 <= c < x2 of the unclipped box,
    resized to the picture, > 0.5): isolates the network and the selection from the mask paste."""
    from instaseg.models.ppyoloe_seg.decode import select_per_class

    image_sizes = [tuple(int(v) for v in cv2.imread(p).shape[:2]) for p in meta["images"]]
    cls, reg, coef, protos, points, _, _ = model._features(x)
    boxes = model._boxes(reg, points)
    stats = []
    for b, (h, w) in enumerate(image_sizes):
        point, bx, sc, lab = select_per_class(cls[b].sigmoid(), boxes[b], model.test_cfg)
        m = (coef[b][point] @ protos[b].flatten(1)).sigmoid().reshape(-1, *protos.shape[-2:])
        m = F.interpolate(m[None], size=(640, 640), mode="bilinear", align_corners=False)[0]
        c = torch.arange(640, dtype=torch.float32)
        inside = ((c[None, None, :] >= bx[:, 0, None, None]) & (c[None, None, :] < bx[:, 2, None, None])
                  & (c[None, :, None] >= bx[:, 1, None, None]) & (c[None, :, None] < bx[:, 3, None, None]))
        m = F.interpolate((m * inside)[None], size=(h, w), mode="bilinear", align_corners=False)[0] > 0.5
        scale = torch.tensor([w / 640, h / 640] * 2)
        det = np.concatenate([(lab - 1).numpy()[:, None], sc.numpy()[:, None], (bx * scale).numpy()], 1)
        rdet = ref[f"det.{b}"].astype(np.float64)
        stats.append(match_instances(rdet, ref[f"detmask.{b}"], det.astype(np.float64), m.numpy()))
    instances_row(table, "instances, same input, masks post-processed as the reference (unclipped)", stats)


def losses_ppyoloe(model, ref, meta, table: Table) -> None:
    n = sum(1 for k in ref.files if k.endswith(".labels"))
    x = torch.from_numpy(ref["input"][:n])
    model.train()
    ours = model.losses(x, targets_of(ref, n))
    model.eval()
    refl = meta["losses"]
    weights = {"cls": 1.0, "iou": 2.5, "dfl": 0.5, "mask": 2.5}
    for key, w in weights.items():
        o, r = float(ours[f"loss_{key}"]), w * refl[f"loss_{key}"]
        table.add(f"loss_{key}", abs(o - r), abs(o - r) / max(abs(r), 1e-12),
                  abs(o - r) <= TOL["loss_rel"] * abs(r), f"ours {o:.6g} ref {r:.6g} (x{w})")


# ----------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--no-own", action="store_true", help="skip each side's own pre-processing")
    ap.add_argument("--no-losses", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    with open(os.path.join(args.run, "meta.json")) as f:
        meta = json.load(f)
    ref = np.load(os.path.join(args.run, "ref.npz"))
    name = meta["model"]
    import instaseg
    from instaseg.models.factory import build_model
    from instaseg.models.recipes import load_recipe
    from instaseg.models.registry import architecture
    from instaseg.models.weights.convert import convert
    from instaseg.models.weights.readers import read_pdparams

    print("instaseg from", instaseg.__file__)
    model = build_model(name, meta["num_classes"], weights="none")
    entry = [w for w in architecture(load_recipe(name)["model"]["architecture"]).published if w.recipe == name][0]
    published = read_pdparams(os.path.join(args.run, "weights.pdparams"))
    with torch.device("meta"):
        shapes = build_model(name, meta["num_classes"], weights="none").state_dict()
    conv = convert(published, shapes, entry.key_map)
    assert conv.problem() is None, conv.problem()
    model.load_state_dict(conv.state, strict=False)
    n_ours = sum(p.numel() for p in model.parameters())
    table = Table(f"{name}: {len(published)} reference tensors -> {len(conv.state)} of ours ({conv.summary()}); "
                  f"ours {n_ours / 1e6:.2f}M params, ref {meta['params'] / 1e6:.2f}M")
    model.eval()
    if name.startswith("mask_rtdetr"):
        compare_mask_rtdetr(model, ref, meta, table, not args.no_own)
        if not args.no_losses:
            losses_mask_rtdetr(model, ref, meta, table)
    else:
        compare_ppyoloe(model, ref, meta, table, not args.no_own)
        if not args.no_losses:
            losses_ppyoloe(model, ref, meta, table)
    table.report(args.json)


if __name__ == "__main__":
    main()
