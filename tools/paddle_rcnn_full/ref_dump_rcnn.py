"""Reference side (paddle venv): build a PaddleDetection R-CNN / Cascade / SOLOv2 model from its config with random
weights, perturb them (identically converted to ours), and dump weights, inputs, every stage's tensors, the final
instances and the training losses to npz.

    PADDLE_PYTHON tools/paddle_rcnn_full/ref_dump_rcnn.py maskrcnn_r50_fpn RUNS/maskrcnn_r50_fpn [--aligned]
        [--short 800 --long 1333] [--fpn-channels 64] [--images 1 --train-images 1] [--bn-from-pictures]

PADDLE_PYTHON: the reference environment's Python (/work/ref/paddle/venv/bin/python, see docs/equivalence.md);
PaddleDetection's source is imported from $PADDLEDET_DIR (default /work/ref/paddle/PaddleDetection).

--aligned   undo PaddleDetection's 2024 override (RoIAlign.aligned forced False, "npu kernel"): use the config's
            `aligned: True`, the value the published weights were trained and evaluated with.
--bn-from-pictures
            every BatchNorm layer's running mean / variance set to the statistics of its own input on the first
            picture, unperturbed (default: those statistics perturbed, as the runs of docs/equivalence.md's first
            full-size table were dumped). Still random, untrained weights, but every layer's output normalised: a
            deep random network then no longer amplifies float32 rounding into visibly different boxes and masks.
One architecture per process (ppdet's load_config merges into a process-wide config).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PADDLEDET = os.environ.get("PADDLEDET_DIR", "/work/ref/paddle/PaddleDetection")
CWD = os.getcwd()  # the output folder is relative to where the script was started
sys.path.insert(0, HERE)
sys.path.insert(0, PADDLEDET)
os.chdir(PADDLEDET)  # ppdet reads its configs relative to its source tree

import paddle  # noqa: E402

paddle.set_device("cpu")
from configs import MODELS  # noqa: E402
from ppdet.core.workspace import create, load_config  # noqa: E402
from ppdet.data.transform.operators import Decode, NormalizeImage, Permute, Resize  # noqa: E402
from ppdet.modeling.heads import roi_extractor  # noqa: E402
from rcnn_common import load_targets, pick_images  # noqa: E402

args_dense = [0.0]  # --dense: SOLOv2 class bias raised so thousands of cells pass the candidate threshold


def t(x):
    return paddle.to_tensor(np.asarray(x))


# ---------------------------------------------------------------------------------------------- weights
def perturb(model, arch: str, seed: int) -> None:
    """Non-trivial BN/GN statistics and affine terms; heads spread so scores and boxes are not near-ties."""
    rng = np.random.default_rng(seed)
    sd = model.state_dict()
    new = {}
    for k, v in sd.items():
        a = v.numpy()
        if ".norm." in k and k.endswith(".weight"):
            new[k] = (a * rng.uniform(0.8, 1.2, a.shape)).astype(a.dtype)
        elif ".norm." in k and k.endswith(".bias"):
            new[k] = (a + rng.normal(0, 0.1, a.shape)).astype(a.dtype)

    def normal(k, std, mean=0.0):
        new[k] = rng.normal(mean, std, sd[k].shape).astype("float32")

    for k in sd:
        if arch == "solov2":
            # a few hundred cells above the 0.1 candidate threshold (under the 500 that enter Matrix NMS)
            if "solo_cate." in k:
                normal(k, 0.01) if k.endswith("weight") else normal(k, 0.3, -5.0 + args_dense[0])
            elif "solo_kernel." in k:
                normal(k, 0.005) if k.endswith("weight") else normal(k, 0.3)
            continue
        if k.startswith("rpn_head.rpn_rois_score") or k.startswith("rpn_head.rpn_rois_delta"):
            normal(k, 0.05 if "score" in k else 0.01) if k.endswith("weight") else normal(k, 0.3)
        elif k.startswith("bbox_head.bbox_score"):
            normal(k, 0.015) if k.endswith("weight") else normal(k, 1.0)
        elif k.startswith("bbox_head.bbox_delta"):
            normal(k, 0.01) if k.endswith("weight") else normal(k, 0.1)
        elif k.startswith("mask_head.mask_fcn_logits"):
            # mostly saturated, as trained masks are: a pasting rule then shows its geometry, not threshold noise
            normal(k, 0.3) if k.endswith("weight") else normal(k, 0.5)
    # SOLOv2 registers some layers twice: keep both names on one value
    for twin, orig in (("solov2_head.solo_kernel.", "solov2_head.bbox_head.solo_kernel."),
                       ("solov2_head.solo_cate.", "solov2_head.bbox_head.solo_cate."),
                       ("mask_head.conv_pred.", "mask_head.mask_feat_head.conv_pred.0.")):
        for k in list(new):
            if k.startswith(orig):
                new[twin + k[len(orig):]] = new[k]
    for k, a in new.items():
        assert tuple(a.shape) == tuple(sd[k].shape), k
    model.set_state_dict({k: paddle.to_tensor(a) for k, a in new.items()})


def calibrate_bn(model, inputs: dict, seed: int, exact: bool = False) -> None:
    """BatchNorm statistics from one forward on a real picture (each layer's input, per channel), then perturbed
    (``exact``: left as measured): random statistics would let a 50-layer network's activations grow by orders of
    magnitude and saturate every score. One forward sets all layers in order: a pre-hook writes a layer's
    statistics before it runs, so every later layer sees the normalised activations."""
    rng = np.random.default_rng(seed + 1)
    hooks, seen = [], []

    def hook(layer, args):
        x = args[0].numpy().astype(np.float64)
        mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
        if not exact:
            var = var + 1e-3
            mean = mean + rng.normal(0, 0.1, mean.shape) * np.sqrt(var)
            var = var * rng.uniform(0.7, 1.3, var.shape)
        layer._mean.set_value(mean.astype(np.float32))
        layer._variance.set_value(var.astype(np.float32))
        seen.append(id(layer))

    # ResNet's frozen BN is nn.BatchNorm2D(use_global_stats=True); sync_bn configs build nn.SyncBatchNorm: both
    # keep their statistics in _mean / _variance
    norms = [la for la in model.sublayers() if isinstance(la, paddle.nn.layer.norm._BatchNormBase)]
    for layer in norms:
        hooks.append(layer.register_forward_pre_hook(hook))
    with paddle.no_grad():
        model.backbone(inputs)
        if arch_has_c4_head(model):
            # C4: res5 is the box head; calibrate it on the res4 map (its RoI features look alike)
            feats = model.backbone(inputs)
            model.bbox_head.head(feats[0])
    for h in hooks:
        h.remove()
    missed = [la.full_name() for la in norms if id(la) not in seen]
    assert not (exact and missed), f"BatchNorm layers the calibration forward did not reach: {missed[:5]}"


def arch_has_c4_head(model) -> bool:
    return hasattr(model, "bbox_head") and hasattr(model.bbox_head.head, "res5")


# ---------------------------------------------------------------------------------------------- input
def preprocess(path: str, arch: str, short: int, long: int, pad: int) -> dict:
    """The config's EvalReader: Decode (RGB), Resize keep-ratio (cv2 cubic on uint8 for R-CNN; SOLOv2 normalises
    first and resizes the float image bilinearly), NormalizeImage (/255, ImageNet mean/std), Permute, PadBatch."""
    sample = {"im_file": path}
    norm = NormalizeImage(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], is_scale=True)
    if arch == "solov2":
        ops = (Decode(), norm, Resize([short, long], keep_ratio=True, interp=1), Permute())
    else:
        ops = (Decode(), Resize([short, long], keep_ratio=True, interp=2), norm, Permute())
    for op in ops:
        sample = op(sample)
    im = sample["image"]
    if pad > 0:
        h, w = im.shape[1:]
        ph, pw = -(-h // pad) * pad, -(-w // pad) * pad
        out = np.zeros((3, ph, pw), np.float32)
        out[:, :h, :w] = im
        sample["image"] = out
    return sample


# ---------------------------------------------------------------------------------------------- R-CNN
def rpn_raw(model, feats, out: dict, p: str) -> None:
    rpn = model.rpn_head
    for i, f in enumerate(rpn.rpn_feat(feats)):
        out[f"{p}rpn_logits.{i}"] = rpn.rpn_rois_score(f).numpy()
        out[f"{p}rpn_deltas.{i}"] = rpn.rpn_rois_delta(f).numpy()


def run_rcnn(model, inputs: dict, out: dict, p: str, cascade: bool) -> None:
    body = model.backbone(inputs)
    for i, f in enumerate(body):
        out[f"{p}backbone.{i}"] = f.numpy()
    feats = model.neck(body) if model.neck is not None else body
    if model.neck is not None:
        for i, f in enumerate(feats):
            out[f"{p}fpn.{i}"] = f.numpy()
    rpn_raw(model, feats, out, p)
    rois, rois_num, _ = model.rpn_head(feats, inputs)
    out[f"{p}proposals"] = rois[0].numpy()
    preds, feat_func = model.bbox_head(feats, rois, rois_num, inputs)
    deltas, probs = preds
    out[f"{p}box_deltas"], out[f"{p}box_probs"] = deltas.numpy(), probs.numpy()
    if cascade:
        out[f"{p}refined_rois"] = model.bbox_head.get_refined_rois()[0].numpy()
        box_rois = model.bbox_head.get_refined_rois()
    else:
        box_rois = rois
    im_shape, scale = inputs["im_shape"], inputs["scale_factor"]
    bbox, bbox_num, _ = model.bbox_post_process(preds, (box_rois, rois_num), im_shape, scale)
    out[f"{p}det_input"] = bbox.numpy()  # [label, score, x1, y1, x2, y2] in the network-input frame
    if cascade:
        bbox, bbox_pred, bbox_num = model.bbox_post_process.get_pred(bbox, bbox_num, im_shape, scale)
        mask_out = model.mask_head(feats, bbox, bbox_num, inputs)
    else:
        mask_out = model.mask_head(feats, bbox, bbox_num, inputs, feat_func=feat_func)
        bbox, bbox_pred, bbox_num = model.bbox_post_process.get_pred(bbox, bbox_num, im_shape, scale)
    out[f"{p}mask_probs"] = mask_out.numpy()
    origin_shape = model.bbox_post_process.get_origin_shape()
    masks = model.mask_post_process(mask_out, bbox_pred, bbox_num, origin_shape)
    out[f"{p}det"] = bbox_pred.numpy()
    out[f"{p}detmask"] = masks.numpy().astype(np.uint8)


def run_solov2(model, inputs: dict, out: dict, p: str) -> None:
    body = model.backbone(inputs)
    for i, f in enumerate(body):
        out[f"{p}backbone.{i}"] = f.numpy()
    feats = model.neck(body)
    for i, f in enumerate(feats):
        out[f"{p}fpn.{i}"] = f.numpy()
    seg_pred = model.mask_head(feats)
    cate, kernel = model.solov2_head(feats)
    out[f"{p}mask_feat"] = seg_pred.numpy()
    for i, (c, k) in enumerate(zip(cate, kernel, strict=True)):
        out[f"{p}cate.{i}"] = c.numpy()  # eval: sigmoid, point NMS, NHWC
        out[f"{p}kernel.{i}"] = k.numpy()
    masks, labels, scores, _ = model.solov2_head.get_prediction(cate, kernel, seg_pred, inputs["im_shape"],
                                                               inputs["scale_factor"])
    out[f"{p}det_labels"], out[f"{p}det_scores"] = labels.numpy(), scores.numpy()
    out[f"{p}detmask"] = masks.numpy().astype(np.uint8)


def forward_inputs(s: dict) -> dict:
    return {"image": t(s["image"][None]), "im_shape": t(np.asarray(s["im_shape"], np.float32)[None]),
            "scale_factor": t(np.asarray(s["scale_factor"], np.float32)[None])}


# ---------------------------------------------------------------------------------------------- training
def train_losses(model, arch: str, s: dict, target: dict) -> dict:
    """One training forward on one picture (the eval pre-processing; boxes, classes and polygons resized with it)."""
    model.train()
    inputs = forward_inputs(s)
    inputs["epoch_id"] = 0
    inputs["gt_bbox"] = [t(target["boxes"].astype(np.float32))]
    inputs["gt_class"] = [t(target["labels"][:, None].astype(np.int32))]
    inputs["is_crowd"] = [t(np.zeros((len(target["labels"]), 1), np.int32))]
    inputs["gt_poly"] = [target["polys"]]
    with paddle.no_grad():
        losses = model(inputs)
    model.eval()
    return {k: float(np.asarray(v.numpy()).reshape(-1)[0]) for k, v in losses.items()}


def solov2_train_losses(model, s: dict, target: dict) -> dict:
    """One training forward of SOLOv2 on one (padded) picture, its targets from PaddleDetection's own
    Gt2Solov2Target batch transform (the config's grids, scale ranges and sigma)."""
    from ppdet.data.transform.batch_operators import Gt2Solov2Target

    h, w = s["image"].shape[1:]
    segm = np.zeros((len(target["labels"]), h, w), np.uint8)
    segm[:, : target["masks"].shape[1], : target["masks"].shape[2]] = target["masks"]
    sample = {"image": s["image"], "gt_bbox": target["boxes"].astype(np.float32),
              "gt_class": target["labels"][:, None].astype(np.int32), "gt_segm": segm,
              "is_crowd": np.zeros((len(target["labels"]), 1), np.int32)}
    op = Gt2Solov2Target(num_grids=[40, 36, 24, 16, 12], scale_ranges=[[1, 96], [48, 192], [96, 384], [192, 768],
                                                                        [384, 2048]], coord_sigma=0.2)
    sample = op([sample])[0]
    inputs = forward_inputs(s)
    for k, v in sample.items():
        if k.startswith(("ins_label", "cate_label", "grid_order")):
            inputs[k] = t(np.asarray(v)[None])
    inputs["fg_num"] = t(np.asarray([sample["fg_num"]], np.int32))
    model.train()
    with paddle.no_grad():
        losses = model(inputs)
    model.eval()
    return {k: float(np.asarray(v.numpy()).reshape(-1)[0]) for k, v in losses.items()}


# ---------------------------------------------------------------------------------------------- main
def configure(cfg, args, arch: str) -> None:
    if args.fpn_channels:
        cfg["FPN"]["out_channel"] = args.fpn_channels
    if arch != "solov2":
        # sampling off: the first positives / negatives in index order on both sides
        cfg["RPNHead"]["rpn_target_assign"]["use_random"] = False
        cfg["BBoxAssigner"]["use_random"] = False


def patch_aligned(aligned: bool) -> None:
    init = roi_extractor.RoIAlign.__init__

    def __init__(self, *a, **kw):
        init(self, *a, **kw)
        self.aligned = kw.get("aligned", False) if aligned else False

    roi_extractor.RoIAlign.__init__ = __init__


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("out")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--train-images", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--short", type=int, default=800)
    ap.add_argument("--long", type=int, default=1333)
    ap.add_argument("--fpn-channels", type=int, default=0)
    ap.add_argument("--aligned", action="store_true")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--dense", action="store_true")
    ap.add_argument("--bn-from-pictures", action="store_true")
    args = ap.parse_args()
    args_dense[0] = 2.5 if args.dense else 0.0
    out_dir = os.path.abspath(os.path.join(CWD, args.out))
    os.makedirs(out_dir, exist_ok=True)
    arch = "solov2" if args.model.startswith("solov2") else "cascade" if "cascade" in args.model else "maskrcnn"
    paddle.seed(args.seed)
    np.random.seed(args.seed)
    patch_aligned(args.aligned)
    cfg = load_config(MODELS[args.model][0])
    configure(cfg, args, arch)
    t0 = time.time()
    model = create(cfg.architecture)
    model.eval()
    pad = 32 if (arch == "solov2" or model.neck is not None) else 0
    paths = pick_images(args.images)
    samples = [preprocess(p, arch, args.short, args.long, pad) for p in paths]
    perturb(model, arch, args.seed)
    calibrate_bn(model, forward_inputs(samples[0]), args.seed, exact=args.bn_from_pictures)
    sd = model.state_dict()
    paddle.save(sd, os.path.join(out_dir, "weights.pdparams"))
    np.savez(os.path.join(out_dir, "weights.npz"), **{k: v.numpy() for k, v in sd.items()})
    n_params = int(sum(np.prod(v.shape) for v in model.parameters()))
    print(f"built {args.model}: {len(sd)} tensors, {n_params / 1e6:.2f}M parameters ({time.time() - t0:.1f}s)")

    out: dict = {}
    t0 = time.time()
    with paddle.no_grad():
        for b, s in enumerate(samples):
            p = f"{b}."
            out[p + "input"] = s["image"]
            out[p + "im_shape"] = np.asarray(s["im_shape"], np.float32)
            out[p + "scale_factor"] = np.asarray(s["scale_factor"], np.float32)
            inputs = forward_inputs(s)
            if arch == "solov2":
                run_solov2(model, inputs, out, p)
            else:
                run_rcnn(model, inputs, out, p, arch == "cascade")
                res = model(inputs)  # the model's own forward must give what the pieces gave
                assert np.allclose(res["bbox"].numpy(), out[p + "det"], atol=1e-4), "pieces differ from forward"
    print(f"eval forward: {time.time() - t0:.1f}s")

    losses = []
    if not args.no_train:
        t0 = time.time()
        for b in range(args.train_images):
            s = samples[b]
            h, w = (int(v) for v in s["im_shape"])
            target = load_targets([paths[b]], h, w, float(s["scale_factor"][1]), float(s["scale_factor"][0]))[0]
            for k in ("boxes", "labels", "masks"):
                out[f"target.{b}.{k}"] = target[k]
            if arch == "solov2":
                losses.append(solov2_train_losses(model, s, target))
            else:
                losses.append(train_losses(model, arch, s, target))
        print(f"train forward: {time.time() - t0:.1f}s")
    np.savez_compressed(os.path.join(out_dir, "ref.npz"), **out)
    meta = {"model": args.model, "config": MODELS[args.model][0], "paddlex": MODELS[args.model][1], "images": paths,
            "losses": losses, "num_classes": int(cfg["num_classes"]), "params": n_params, "seed": args.seed,
            "short": args.short, "long": args.long, "fpn_channels": args.fpn_channels, "aligned": args.aligned,
            "pad": pad, "dense": args.dense, "bn_from_pictures": args.bn_from_pictures,
            "scale_factors": [[float(v) for v in s["scale_factor"]] for s in samples]}
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(losses, indent=1))


if __name__ == "__main__":
    main()
