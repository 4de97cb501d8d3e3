"""Every published RTMDet-Ins size and SOLOv2 R50-FPN against MMDetection itself, on real pictures.

    PYTHONPATH=src MMDET_PYTHON tools/mmdet_equivalence.py rtmdet_ins_tiny [solov2_r50_fpn ...] [--images 2]
        [--pictures NAME.jpg ...] [--data ../shared/datasets/tiny_coco] [--json equivalence.json]
        [--f64 auto|always|never] [--reference-channels bgr|rgb]
    MMDET_PYTHON tools/mmdet_equivalence.py --table equivalence.json     # the table of earlier runs

with MMDET_PYTHON the Python of the reference environment (docs/equivalence.md says how to make it). Per model:
the reference is built from the config MMDetection ships for it, with random weights made to give distinct
outputs (as tools/mmdet_fixtures.py makes them); those weights are saved in the published format and loaded by
``build_model(recipe, 80, weights=FILE)``, i.e. through our key map. Then, on ``--images`` tiny_coco pictures (or
the ``--pictures`` named), after checking that our input spec resizes each to the reference's size (JSON
``resized``; a line on stderr where they differ):

- features (backbone, neck) and head outputs before decoding on the reference's input tensor: the largest
  error relative to the reference's largest magnitude (tolerance 1e-4); where float32 rounding through the deep
  random network exceeds it, the same in float64 on both sides (first picture; for RTMDet-Ins with its instances
  on the same input) shows whether the functions agree;
- instances on the same input tensor, each side's decoding; and instances after each side's own pre- and
  post-processing (MMDetection's test pipeline and ``predict(rescale=True)``; our ``Predictor``): the same set,
  box corners within 0.5 px, scores within 1e-3, mask IoU >= 0.99. Each side runs one picture at a time there,
  as a user calls it on one file (MMDetection's pipeline and ``predict`` on a batch of one, as our ``Predictor``):
  the reference's convolutions on a batch of two round differently from one picture alone, which the deep random
  networks amplify (l 2.1e-3, x 3.5e-2 at the features);
- training losses on the same batch and targets (1e-3 relative) and, for RTMDet-Ins, the assignment.

Two diagnostics separate pre- from post-processing where the instances after each side's own processing differ:
our inference and post-processing on the reference's input tensor, and (RTMDet-Ins) our mask logits resampled
with the geometry of the reference's ``rescale`` (JSON only).

``--reference-channels rgb`` (RTMDet-Ins only; default ``bgr``, the reference as published): the reference reads BGR
and our conversion reverses the stem's input channels so that ours reads RGB. That is exact in real arithmetic, but
float32 sums the first convolution's three channels in the other order, and the deep random network amplifies that
rounding (from 2e-7 after the first convolution to 7.9e-3 (l) and 0.11 (x) at the neck and head). Its BatchNorm
statistics are already the pictures' own (``calibrate_batchnorm``: a train-mode pass with cumulative averages);
measured instead in eval mode with pre-hooks, layer by layer, they move by at most 0.2% (tiny) and 3.3% (l) of a
variance, and the drift stays the same (l 5.5e-3, x 9.6e-2 at the features): the amplification is the random
network's, not its statistics'. With ``rgb`` the reference's first convolution is reversed on its input channels
too, and a pre-hook reverses the BGR tensor it receives: the reference then does our stem's arithmetic, while its
pipeline, ``predict`` and ``loss`` stay its own. The weights are those of the default run (made distinct, then
converted, before the reversal). The JSON and the table's last column give how far the reference moves by this
reversal alone (``channel_order_drift``: MMDetection against itself, no code of ours involved); the other columns
then compare equal arithmetic. The float64 comparison (``--f64``) remains the proof that the published BGR network
and ours are the same function.

Prints one markdown table row per model (the header first) and, with ``--json``, merges the numbers into a file
(``rgb`` runs into a file of their own: their table has one more column).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmdet_fixtures as FX  # noqa: E402
import mmdet_reference as R  # noqa: E402  (installs the mmcv._ext stand-in first)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from equivalence_tables import compare_instances, header, save, table_row, worst  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmdet_conventions import canvas_masks  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402

from instaseg.inference.backends.torch import TorchBackend  # noqa: E402
from instaseg.inference.predictor import Predictor  # noqa: E402
from instaseg.inference.preprocess import preprocess  # noqa: E402
from instaseg.models.factory import build_model  # noqa: E402

PICTURES = ["000000005802.jpg", "000000037777.jpg", "000000006818.jpg"]
MODELS = {f"rtmdet_ins_{s}": ("rtmdet_ins", R.RTMDET[s]) for s in ("tiny", "s", "m", "l", "x")}
MODELS["solov2_r50_fpn"] = ("solov2", R.SOLOV2["r50"])
FEATURE_TOL, LOSS_TOL = 1e-4, 1e-3  # the instance tolerances are in equivalence_tables.py


def rel_err(ref, ours) -> float:
    """Largest error relative to the reference's largest magnitude, over a tensor or a list of them."""
    if isinstance(ref, (list, tuple)):
        return max(rel_err(r, o) for r, o in zip(ref, ours, strict=True))
    ref, ours = torch.as_tensor(ref).detach().double(), torch.as_tensor(ours).detach().double()
    if ref.shape != ours.shape:
        return float("inf")
    return float((ref - ours).abs().max() / ref.abs().max().clamp(min=1e-12)) if ref.numel() else 0.0


# ---------------------------------------------------------------- instances
def reference_instances(result, clip: tuple[int, int] | None = None) -> dict:
    boxes = result.bboxes.clone()
    if clip is not None:  # ours are clipped to the picture, the reference's to its padded canvas
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, clip[1])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, clip[0])
    return {"boxes": boxes.numpy(), "scores": result.scores.numpy(), "labels": result.labels.numpy() + 1,
            "masks": result.masks.numpy()}  # fmt: skip


def predicted(model, picture: np.ndarray) -> dict:
    result = next(iter(Predictor(TorchBackend(model), [str(i) for i in range(80)], threshold=0.0).predict(picture)))
    return {"boxes": result.boxes, "scores": result.scores, "labels": result.labels, "masks": result.masks}


# ---------------------------------------------------------------- pictures and targets
def read_rgb(path: str) -> np.ndarray:
    return cv2.imread(path)[:, :, ::-1].copy()


def load_annotations(data: str) -> tuple[dict, dict, list]:
    images, anns, cats = {}, {}, None
    for split in ("train", "val"):
        with open(os.path.join(data, "annotations", f"instances_{split}.json")) as f:
            coco = json.load(f)
        images.update({im["file_name"]: im for im in coco["images"]})
        for a in coco["annotations"]:
            anns.setdefault(a["image_id"], []).append(a)
        cats = cats or sorted(c["id"] for c in coco["categories"])
    return images, anns, cats


def picture_targets(data: str, name: str, sample, frame: tuple[int, int], max_objects: int = 20) -> dict:
    """A picture's objects in the reference pipeline's frame: boxes scaled by its scale factor, masks rasterised
    at the original size, resized (nearest) to the resized picture and padded to the batch ``frame`` (h, w)."""
    images, anns, cats = load_annotations(data)
    image = images[name]
    h0, w0 = image["height"], image["width"]
    sx, sy = sample.scale_factor
    size = (int(w0 * sx + 0.5), int(h0 * sy + 0.5))  # mmcv.imrescale's rounding
    boxes, labels, masks = [], [], []
    for a in [a for a in anns.get(image["id"], []) if not a.get("iscrowd", 0)][:max_objects]:
        rle = mask_utils.frPyObjects(a["segmentation"], h0, w0)
        full = mask_utils.decode(mask_utils.merge(rle) if isinstance(rle, list) else rle)
        small = cv2.resize(full, size, interpolation=cv2.INTER_NEAREST)
        x, y, w, h = a["bbox"]
        box = [x * sx, y * sy, (x + w) * sx, (y + h) * sy]
        if small.any() and box[2] - box[0] > 1 and box[3] - box[1] > 1:
            padded = np.zeros(frame, np.uint8)
            padded[: size[1], : size[0]] = small
            boxes.append(box)
            labels.append(cats.index(a["category_id"]))
            masks.append(padded)
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "labels": np.array(labels, np.int64),
            "masks": np.stack(masks) if masks else np.zeros((0, *frame), np.uint8)}  # fmt: skip


def our_targets(targets: list[dict]) -> list[dict]:
    return [{"boxes": torch.from_numpy(t["boxes"]), "labels": torch.from_numpy(t["labels"]) + 1,
             "masks": torch.from_numpy(t["masks"])} for t in targets]  # fmt: skip


# ---------------------------------------------------------------- the two sides
@torch.no_grad()
def temper_class_logits(ref: torch.nn.Module, x: torch.Tensor, bound: float = 10.0) -> None:
    """RTMDet-Ins: class predictors scaled down where a logit on these pictures exceeds ``bound``. At full size
    the random towers' features are heavy-tailed: logits reach 30 on some pictures and more than 100 candidates
    score exactly 1.0 in float32, so which 100 survive is a tie either side may break its own way."""
    head = ref.bbox_head
    feats = ref.neck(ref.backbone(x))
    for conv, tower, f in zip(head.rtm_cls, head.cls_convs, feats, strict=True):
        varying = conv(R._through(tower, f)) - conv.bias[None, :, None, None]
        peak = float((varying + conv.bias[None, :, None, None]).max())
        if peak > bound:
            conv.weight.mul_((bound - float(conv.bias.max())) / float(varying.max()))


@torch.no_grad()
def limit_solov2_candidates(ref: torch.nn.Module, cfg, paths: list[str], most: int = 1000) -> None:
    """SOLOv2: category logits shifted down until no picture has more than ``most`` (cell, class) candidates above
    the 0.1 score cut. At full size the random model would have tens of thousands, for each of which the reference
    computes a full mask (more memory than this machine has), and ours stops at ``max_candidates`` (2000)."""
    cut = math.log(0.1 / 0.9)
    highest = -math.inf
    for path in paths:
        x, _ = R.pipeline_inputs(ref, cfg, [path])
        _, cls, _ = ref.mask_head(ref.neck(ref.backbone(x)))
        logits = torch.cat([c.flatten() for c in cls])
        highest = max(highest, float(logits.topk(min(most, logits.numel())).values[-1]))
    if highest > cut:
        ref.mask_head.conv_cls.bias.sub_(highest - cut)


def converted(ref: torch.nn.Module, config: str, recipe: str, folder: str) -> torch.nn.Module:
    """The reference's weights in the published format, loaded through our key map."""
    path = os.path.join(folder, f"{recipe}.pth")
    FX.published_file(path, "random weights of " + config, {k: v.clone() for k, v in ref.state_dict().items()})
    return build_model(recipe, 80, weights=path).eval()


@torch.no_grad()
def rtmdet_outputs(backbone, neck, head, x: torch.Tensor) -> tuple[list, list]:
    """(backbone and neck features, head outputs: class logits, box distances, kernels per level, prototypes)."""
    b = list(backbone(x))
    n = list(neck(b))
    cls, reg, ker, protos = head(n)
    return b + n, [*cls, *reg, *ker, protos]


def rtmdet_stage_a(ref, ours, x: torch.Tensor) -> tuple[float, float]:
    """(features, head outputs) errors; ours reads RGB, the reference BGR (the converted stem is flipped)."""
    rf, rh = rtmdet_outputs(ref.backbone, ref.neck, ref.bbox_head, x)
    of, oh = rtmdet_outputs(ours.backbone, ours.neck, ours.head, x.flip(1))
    return rel_err(rf, of), rel_err(rh, oh)


@torch.no_grad()
def reference_reads_rgb(ref, x: torch.Tensor) -> dict:
    """``--reference-channels rgb``: the reference's first convolution reversed on its input channels, with a
    pre-hook that reverses the BGR tensor it receives, i.e. the arithmetic of our converted stem on our RGB input
    (the same function in exact arithmetic; in float32 the three channels are summed in our order). The
    reference's pipeline, ``predict`` and ``loss`` are otherwise untouched. Returns how far the reference moves
    by this alone (features, head outputs on ``x``): the float32 rounding the network amplifies from one summation
    order to the other, with no code of ours involved."""
    before = rtmdet_outputs(ref.backbone, ref.neck, ref.bbox_head, x)
    conv = ref.backbone.stem[0].conv
    conv.weight.copy_(conv.weight.flip(1))
    conv.register_forward_pre_hook(lambda module, args: (args[0].flip(1), *args[1:]))
    after = rtmdet_outputs(ref.backbone, ref.neck, ref.bbox_head, x)
    return {"features": rel_err(before[0], after[0]), "head": rel_err(before[1], after[1])}


def solov2_stage_a(ref, ours, x: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        rb = ref.backbone(x)
        body = ours.backbone.body(x)
        body = list(body.values()) if isinstance(body, dict) else body
        rn = ref.neck(rb)
        rker, rcls, rfeat = ref.mask_head(rn)
        ocls, oker, ofeat = ours._features(x)
        features = max(rel_err(list(rb), body), rel_err(list(rn), list(ours.backbone(x).values())))
    return features, max(rel_err(list(rcls), list(ocls)), rel_err(list(rker), list(oker)), rel_err(rfeat, ofeat))


def float64_stage_a(arch: str, ref, ours, x: torch.Tensor, samples: list) -> dict:
    """Features, head outputs and (RTMDet-Ins) the instances on the same input, in float64 on both sides (copies:
    the float32 models go on to the instances and losses)."""
    import copy

    ref64, ours64, x64 = copy.deepcopy(ref).double(), copy.deepcopy(ours).double(), x.double()
    stage_a = rtmdet_stage_a if arch == "rtmdet_ins" else solov2_stage_a
    out = dict(zip(("features", "head"), stage_a(ref64, ours64, x64), strict=True))
    if arch == "rtmdet_ins":
        with torch.no_grad():
            out["same_input"] = worst(rtmdet_same_input(ref64, ours64, x64, samples))
    return out


def our_post_processing(ours, x: torch.Tensor, sample) -> dict:
    """Our inference and post-processing on the reference's input tensor (one picture): with the instances after
    each side's own processing, tells a pre-processing difference (the resize) from a post-processing one."""
    h0, w0 = sample.ori_shape
    sx, sy = sample.scale_factor
    size = (int(h0 * sy + 0.5), int(w0 * sx + 0.5))
    out = ours.full_size(ours.raw_forward(x, [size])[0], size, (h0, w0))
    return {"boxes": out["boxes"].numpy(), "scores": out["scores"].numpy(), "labels": out["labels"].numpy(),
            "masks": (out["masks"][:, 0] > 0.5).numpy()}  # fmt: skip


def canvas_resampling(ours, x: torch.Tensor, sample) -> dict:
    """Diagnostic: our stride-8 mask logits resampled with the geometry of the reference's ``rescale`` (K1,
    `mmdet_conventions.canvas_masks`). Ours maps the resized picture exactly onto the original; where the two agree
    on this, our masks differ from the reference's by that geometry alone."""
    h0, w0 = sample.ori_shape
    sx, sy = sample.scale_factor
    size = (int(h0 * sy + 0.5), int(w0 * sx + 0.5))
    raw = ours.raw_forward(x, [size])[0]
    out = ours.full_size(raw, size, (h0, w0))
    masks = canvas_masks(raw.masks, ours.mask_stride, (sx, sy), (h0, w0))
    return {"boxes": out["boxes"].numpy(), "scores": out["scores"].numpy(), "labels": out["labels"].numpy(),
            "masks": masks.numpy()}  # fmt: skip


def rtmdet_same_input(ref, ours, x, samples) -> list[dict]:
    cls, reg, ker, protos = ref.bbox_head(ref.neck(ref.backbone(x)))
    metas = [s.metainfo for s in samples]
    raw = ref.bbox_head.predict_by_feat(list(cls), list(reg), list(ker), protos, batch_img_metas=metas,
                                        rescale=False)  # fmt: skip
    frames = [tuple(s.img_shape) for s in samples]  # the padded canvas, which the reference clips to
    same_input = []
    for r, (boxes, scores, labels, logits) in zip(raw, ours.raw_outputs(x.flip(1), frames), strict=True):
        masks = F.interpolate(logits[None], scale_factor=8, mode="bilinear", align_corners=False)[0] > 0
        mine = {"boxes": boxes.numpy(), "scores": scores.numpy(), "labels": labels.numpy(), "masks": masks.numpy()}
        same_input.append(compare_instances(reference_instances(r), mine))
    return same_input


def rtmdet_instances(ref, ours, cfg, x, samples, paths) -> tuple[dict, ...]:
    """Same input (the batch), each side's own processing one picture at a time, and the two diagnostics."""
    own, post, canvas = [], [], []
    with torch.no_grad():
        same_input = rtmdet_same_input(ref, ours, x, samples)
        for i, (s, path) in enumerate(zip(samples, paths, strict=True)):
            alone, alone_samples = R.pipeline_inputs(ref, cfg, [path])  # one picture, as a user predicts one file
            f = ref.predict(alone, [DetDataSample(metainfo=alone_samples[0].metainfo)], rescale=True)[0]
            reference = reference_instances(f.pred_instances, clip=s.ori_shape)
            own.append(compare_instances(reference, predicted(ours, read_rgb(path))))
            post.append(compare_instances(reference, our_post_processing(ours, x[i : i + 1].flip(1), s)))
            canvas.append(compare_instances(reference, canvas_resampling(ours, x[i : i + 1].flip(1), s)))
    return worst(same_input), worst(own), worst(post), worst(canvas)


def solov2_instances(ref, ours, cfg, paths) -> tuple[dict, dict, dict]:
    """One picture at a time, as MMDetection's test loader runs SOLOv2 (its grids divide the padded input)."""
    same_input, own, post = [], [], []
    with torch.no_grad():
        for path in paths:
            x, samples = R.pipeline_inputs(ref, cfg, [path])
            kernels, cls, feat = ref.mask_head(ref.neck(ref.backbone(x)))
            metas = [dict(s.metainfo, ori_shape=s.img_shape) for s in samples]
            r = ref.mask_head.predict_by_feat([k.clone() for k in kernels], [c.clone() for c in cls], feat,
                                              batch_img_metas=metas)[0]  # fmt: skip
            h, w = samples[0].img_shape
            out = ours.raw_forward(x, [(h, w)])[0]
            masks = F.interpolate(out.masks[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, :h, :w]
            mine = {"boxes": out.boxes.numpy(), "scores": out.scores.numpy(), "labels": out.labels.numpy(),
                    "masks": (masks > 0.5).numpy()}  # fmt: skip
            same_input.append(compare_instances(reference_instances(r), mine, boxes=False))
            final = ref.predict(x, [DetDataSample(metainfo=s.metainfo) for s in samples], rescale=True)[0]
            reference = reference_instances(final.pred_instances)
            own.append(compare_instances(reference, predicted(ours, read_rgb(path)), boxes=False))
            post.append(compare_instances(reference, our_post_processing(ours, x, samples[0]), boxes=False))
    return worst(same_input), worst(own), worst(post)


def losses(ref, ours, arch: str, x, samples, targets: list[dict]) -> tuple[dict, str]:
    """Both sides' training losses on the same batch and targets (train mode), and the assignment (RTMDet-Ins)."""
    ref_samples = [FX.loss_samples([s], t)[0] for s, t in zip(samples, targets, strict=True)]
    assigned_ref, assigned_ours = [], []
    assignment = "-"
    if arch == "rtmdet_ins":
        original, ours_assigner = ref.bbox_head.assigner.assign, ours.assigner
        ref.bbox_head.assigner.assign = lambda *a, **k: assigned_ref.append(original(*a, **k)) or assigned_ref[-1]
        ours.assigner = lambda *a, **k: assigned_ours.append(ours_assigner(*a, **k)) or assigned_ours[-1]
    ref.train()
    ours.train()
    try:
        rl = ref.loss(x, ref_samples)
        ol = ours.losses(x.flip(1) if arch == "rtmdet_ins" else x, our_targets(targets))
    finally:
        ref.eval()
        ours.eval()
        if arch == "rtmdet_ins":
            ref.bbox_head.assigner.assign, ours.assigner = original, ours_assigner
    if arch == "rtmdet_ins":
        names = {"loss_cls": sum(rl["loss_cls"]), "loss_box": sum(rl["loss_bbox"]), "loss_mask": rl["loss_mask"]}
        same = [torch.equal((r.gt_inds - 1).clamp(min=-1), o.gt_index) for r, o in zip(assigned_ref, assigned_ours,
                                                                                        strict=True)]  # fmt: skip
        positives = sum(int((o.gt_index >= 0).sum()) for o in assigned_ours)
        assignment = f"{'same' if all(same) else 'DIFFERENT'} ({positives} positives)"
    else:
        names = {"loss_cls": rl["loss_cls"], "loss_mask": rl["loss_mask"]}
    out = {}
    for k, v in names.items():
        r, o = float(v.detach()), float(ol[k].detach())
        out[k] = {"reference": r, "ours": o, "rel": abs(r - o) / abs(r)}
    return out, assignment


def resized_sizes(ours, samples, pictures: list[str]) -> dict:
    """Per picture, the (h, w) the reference's Resize made of it (from its scale factor, ``new / original``) and
    the one our pre-processing makes; where they differ, a line on stderr."""
    out = {}
    for s, picture in zip(samples, pictures, strict=True):
        (h0, w0), (sx, sy) = s.ori_shape, s.scale_factor
        reference = [round(h0 * sy), round(w0 * sx)]
        mine = list(preprocess([np.zeros((h0, w0, 3), np.uint8)], ours.input_spec)[1][0])
        out[picture] = {"original": [h0, w0], "reference": reference, "ours": mine}
        if mine != reference:
            print(f"{picture}: resized to {mine} by ours, {reference} by the reference", file=sys.stderr)
    return out


def input_differences(arch: str, ours, x: torch.Tensor, samples, paths: list[str]) -> dict:
    """Per picture, |our pre-processed tensor - the reference's| over the resized picture (normalised units, RGB;
    RTMDet-Ins's reference reads BGR): mean, max and whether the two are equal bit for bit; where the sizes differ,
    null. Tells the resize order (K2, ``resize_order``) and the normalisation's arithmetic (``normalisation``)
    apart."""
    x = x.flip(1) if arch == "rtmdet_ins" else x
    out = {}
    for i, (s, path) in enumerate(zip(samples, paths, strict=True)):
        mine, sizes = preprocess([read_rgb(path)], ours.input_spec)
        h, w = sizes[0]
        (h0, w0), (sx, sy) = s.ori_shape, s.scale_factor
        if (h, w) != (round(h0 * sy), round(w0 * sx)):
            out[os.path.basename(path)] = None
            continue
        diff = (mine[0, :, :h, :w] - x[i, :, :h, :w]).abs()
        bits = torch.equal(mine[0, :, :h, :w], x[i, :, :h, :w])
        out[os.path.basename(path)] = {"mean": float(diff.mean()), "max": float(diff.max()), "bit_equal": bits}
    return out


def run(name: str, data: str, pictures: list[str], f64: str, folder: str, channels: str = "bgr") -> dict:
    arch, config = MODELS[name]
    start = time.time()
    cfg = R.load_config(config)
    ref = R.build(cfg)
    paths = [os.path.join(data, "images", p) for p in pictures]
    x, samples = R.pipeline_inputs(ref, cfg, paths)
    gen = torch.Generator().manual_seed(FX.SEED)
    if arch == "rtmdet_ins":
        R.make_rtmdet_distinct(ref, x, gen)
        temper_class_logits(ref, x)
    else:
        R.make_solov2_distinct(ref, x, gen)
        limit_solov2_candidates(ref, cfg, paths)
    ours = converted(ref, config, name, folder)
    drift = reference_reads_rgb(ref, x) if channels == "rgb" else None
    stage_a = rtmdet_stage_a if arch == "rtmdet_ins" else solov2_stage_a
    features, head = stage_a(ref, ours, x)
    out = {"model": name, "config": config, "pictures": pictures, "features": features, "head": head}
    if drift:
        out.update(reference_channels="rgb", channel_order_drift=drift)
    out["resized"] = resized_sizes(ours, samples, pictures)
    out["input_difference"] = input_differences(arch, ours, x, samples, paths)
    if f64 == "always" or (f64 == "auto" and max(features, head) > FEATURE_TOL):
        out["float64"] = float64_stage_a(arch, ref, ours, x[:1], samples[:1])
    if arch == "rtmdet_ins":
        instances = rtmdet_instances(ref, ours, cfg, x, samples, paths)
    else:
        instances = solov2_instances(ref, ours, cfg, paths)
    out["same_input"], out["own_processing"], out["reference_input_our_post_processing"] = instances[:3]
    if len(instances) > 3:
        out["reference_input_reference_mask_geometry"] = instances[3]
    frame = tuple(x.shape[-2:])
    targets = [picture_targets(data, os.path.basename(p), s, frame) for p, s in zip(paths, samples, strict=True)]
    out["losses"], out["assignment"] = losses(ref, ours, arch, x, samples, targets)
    out["seconds"] = round(time.time() - start)
    return out


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", help=" ".join(MODELS))
    p.add_argument("--images", type=int, default=2, choices=range(1, len(PICTURES) + 1))
    p.add_argument("--pictures", nargs="+", help="tiny_coco file names to use instead of the first --images")
    p.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "datasets", "tiny_coco"))
    p.add_argument("--json", help="merge the numbers into this file")
    p.add_argument("--table", help="print the table of a file --json wrote, running nothing")
    p.add_argument("--f64", choices=("auto", "always", "never"), default="auto")
    rgb = "rgb: RTMDet-Ins's reference sums its stem's input channels in our order (see the docstring)"
    p.add_argument("--reference-channels", choices=("bgr", "rgb"), default="bgr", help=rgb)
    args = p.parse_args()
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not (args.models or args.table):
        p.error(f"models: some of {', '.join(MODELS)} (unknown: {', '.join(unknown) or 'none given'})")
    if args.reference_channels == "rgb" and any(MODELS[m][0] != "rtmdet_ins" for m in args.models):
        p.error("--reference-channels rgb: RTMDet-Ins only (SOLOv2's reference reads RGB already)")
    if args.table:
        with open(args.table) as f:
            saved = json.load(f)
        print(header(any("channel_order_drift" in r for r in saved.values())))
        for name in [m for m in MODELS if m in saved]:
            print(table_row(saved[name]))
        return
    print(header(args.reference_channels == "rgb"), flush=True)
    torch.manual_seed(FX.SEED)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            pictures = args.pictures or PICTURES[: args.images]
            result = run(name, args.data, pictures, args.f64, folder, args.reference_channels)
            result.update(mmdet=R.mmdet.__version__, torch=torch.__version__, date=time.strftime("%Y-%m-%d"))
            print(table_row(result), flush=True)
            if args.json:
                save(args.json, name, result)


if __name__ == "__main__":
    main()
