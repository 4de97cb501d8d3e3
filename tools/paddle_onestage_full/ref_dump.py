"""Reference side (paddle venv): build a PaddleDetection model with random weights, perturb them so outputs are
not degenerate, and dump weights, inputs, intermediate tensors, final detections and training losses to npz.

    PADDLE_PYTHON tools/paddle_onestage_full/ref_dump.py mask_rtdetr_l RUNS/mask_rtdetr_l [--images 3 --train-images 2]

PADDLE_PYTHON: the reference environment's Python (/work/ref/paddle/venv/bin/python, see docs/equivalence.md);
PaddleDetection's source is imported from $PADDLEDET_DIR (default /work/ref/paddle/PaddleDetection).

Writes OUT/weights.pdparams (paddle.save, the published format), OUT/weights.npz, OUT/ref.npz, OUT/meta.json.
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
from common import CONFIGS, det_rand_np, load_targets, pick_images  # noqa: E402
from ppdet.core.workspace import create, load_config  # noqa: E402
from ppdet.data.transform.operators import Decode, NormalizeImage, Permute, Resize  # noqa: E402


def perturb(model, arch: str, seed: int) -> None:
    """Non-trivial BN statistics and affine terms everywhere; spread the score and box heads."""
    rng = np.random.default_rng(seed)
    sd = model.state_dict()
    new = {}
    for k, v in sd.items():
        a = v.numpy()
        if k.endswith("._mean"):
            new[k] = rng.normal(0, 0.1, a.shape).astype(a.dtype)
        elif k.endswith("._variance"):
            new[k] = rng.uniform(0.5, 1.5, a.shape).astype(a.dtype)
        elif (k.endswith(".weight") and k[: -len("weight")] + "_mean" in sd) or k.endswith("norm.weight") \
                or ".norm" in k and k.endswith(".weight") and a.ndim == 1:
            new[k] = (a * rng.uniform(0.8, 1.2, a.shape)).astype(a.dtype)
        elif (k.endswith(".bias") and k[: -len("bias")] + "_mean" in sd) or ".norm" in k and k.endswith(".bias"):
            new[k] = (a + rng.normal(0, 0.1, a.shape)).astype(a.dtype)
        elif k.endswith(".lab.scale") or k.endswith(".alpha"):
            new[k] = (a * rng.uniform(0.8, 1.2, a.shape)).astype(a.dtype)
    if arch == "mask_rtdetr":
        w = sd["transformer.score_head.weight"].numpy()
        new["transformer.score_head.weight"] = (w * 4).astype(w.dtype)
        b = sd["transformer.score_head.bias"].numpy()
        new["transformer.score_head.bias"] = (b + rng.normal(0, 1.0, b.shape)).astype(b.dtype)
        last = len([k for k in sd if k.startswith("transformer.bbox_head.layers.") and k.endswith(".weight")]) - 1
        for p, std in (("weight", 0.02), ("bias", 0.3)):
            k = f"transformer.bbox_head.layers.{last}.{p}"
            a = sd[k].numpy()
            new[k] = rng.normal(0, std, a.shape).astype(a.dtype)
        # border tokens (invalid anchors) all carry the same content LN(enc_output bias): tied scores, and ties
        # break differently in paddle.topk and torch.topk. A zero bias makes that content 0, its logits the
        # score head's bias, low: no border token among the selected queries, on either side.
        k = "transformer.enc_output.0.bias"
        new[k] = np.zeros_like(sd[k].numpy())
        for k in sd:  # the deformable attention's weights start at zero: give them a direction
            if k.endswith("cross_attn.attention_weights.weight"):
                a = sd[k].numpy()
                new[k] = rng.normal(0, 0.02, a.shape).astype(a.dtype)
    else:
        for k in sd:
            a = sd[k].numpy()
            if k.startswith("yolo_head.pred_cls.") and k.endswith("weight"):
                new[k] = rng.normal(0, 0.01, a.shape).astype(a.dtype)
            elif k.startswith("yolo_head.pred_cls.") and k.endswith("bias"):
                new[k] = rng.normal(-3.0, 1.0, a.shape).astype(a.dtype)
            elif k.startswith("yolo_head.pred_reg.") and k.endswith("weight"):
                new[k] = rng.normal(0, 0.01, a.shape).astype(a.dtype)
            elif k.startswith("yolo_head.pred_reg.") and k.endswith("bias"):
                new[k] = rng.normal(1.0, 1.0, a.shape).astype(a.dtype)
    for k, a in new.items():
        assert tuple(a.shape) == tuple(sd[k].shape), k
    model.set_state_dict({k: paddle.to_tensor(a) for k, a in new.items()})


def preprocess(path: str, size: int = 640) -> dict:
    """PaddleDetection's EvalReader: Decode, Resize 640x640 (keep_ratio False, cv2 INTER_CUBIC), /255, CHW."""
    sample = {"im_file": path}
    for op in (Decode(), Resize([size, size], keep_ratio=False, interp=2),
               NormalizeImage(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], norm_type="none"), Permute()):
        sample = op(sample)
    return sample


def t(x):
    return paddle.to_tensor(np.asarray(x))


def run_mask_rtdetr(model, batch: np.ndarray, im_shape, scale, out: dict, prefix: str) -> None:
    x = t(batch)
    inputs = {"image": x, "im_shape": t(im_shape), "scale_factor": t(scale)}
    body = model.backbone(inputs)
    for i, f in enumerate(body):
        out[f"{prefix}backbone.{i}"] = f.numpy()
    enc_feats, mask_feat = model.neck(list(body))
    for i, f in enumerate(enc_feats):
        out[f"{prefix}encoder.{i}"] = f.numpy()
    out[f"{prefix}mask_feat"] = mask_feat.numpy()
    tr = model.transformer((enc_feats, mask_feat), None, inputs)
    logits, boxes, masks, enc_out = tr[0], tr[1], tr[2], tr[3]
    out[f"{prefix}logits"], out[f"{prefix}boxes"] = logits[-1].numpy(), boxes[-1].numpy()
    out[f"{prefix}masks"] = masks[-1].numpy()
    out[f"{prefix}enc_logits"], out[f"{prefix}enc_boxes"] = enc_out[0].numpy(), enc_out[1].numpy()
    preds = model.detr_head(tr, body)
    for b in range(batch.shape[0]):  # the post-process takes one image at a time
        one = tuple(p[b:b + 1] for p in preds)
        bbox, num, mask = model.post_process(one, t(im_shape[b:b + 1]), t(scale[b:b + 1]), x[b:b + 1].shape[2:])
        out[f"{prefix}det.{b}"] = bbox.numpy()
        out[f"{prefix}detmask.{b}"] = mask.numpy().astype(np.uint8)


def run_ppyoloe(model, batch: np.ndarray, im_shape, scale, out: dict, prefix: str) -> None:
    x = t(batch)
    inputs = {"image": x}
    body = model.backbone(inputs)
    for i, f in enumerate(body):
        out[f"{prefix}backbone.{i}"] = f.numpy()
    neck = model.neck(list(body))
    for i, f in enumerate(neck):
        out[f"{prefix}neck.{i}"] = f.numpy()
    head = model.yolo_head(neck)
    cls, dist, coef, proto = head[0], head[1], head[2], head[3]
    out[f"{prefix}cls"], out[f"{prefix}dist"] = cls.numpy(), dist.numpy()
    out[f"{prefix}coef"], out[f"{prefix}proto"] = coef.numpy(), proto.numpy()
    for b in range(batch.shape[0]):
        one = tuple(h[b:b + 1] for h in head[:4]) + tuple(head[4:])
        bbox, num, mask, keep = model.yolo_head.post_process(
            one, im_shape=t(im_shape[b:b + 1]), scale_factor=t(scale[b:b + 1]), infer_shape=x.shape[2:])
        out[f"{prefix}det.{b}"] = bbox.numpy()
        out[f"{prefix}detmask.{b}"] = mask.numpy().astype(np.uint8)


def patched_rand(shape, dtype=None, name=None):
    return paddle.to_tensor(det_rand_np([int(s) for s in shape]))


def train_losses(model, arch: str, batch: np.ndarray, targets: list[dict], num_classes: int) -> dict:
    """Losses of one training forward on a stretched 640x640 batch; sampling points made deterministic."""
    model.train()
    h, w = batch.shape[-2:]
    inputs = {"image": t(batch), "im_shape": t(np.array([[h, w]] * len(batch), np.float32)),
              "scale_factor": t(np.ones((len(batch), 2), np.float32)), "epoch_id": 0}
    if arch == "mask_rtdetr":
        gb = []
        for tg in targets:
            b = tg["boxes"] / np.array([w, h, w, h], np.float32)
            gb.append(t(np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], 1).astype(np.float32)))
        inputs["gt_bbox"] = gb
        inputs["gt_class"] = [t(tg["labels"][:, None].astype(np.int32)) for tg in targets]
        inputs["gt_segm"] = [t(tg["masks"].astype(np.float32)) for tg in targets]
    else:
        n = max(len(tg["labels"]) for tg in targets)
        inputs["gt_bbox"], inputs["gt_class"], inputs["pad_gt_mask"], inputs["gt_segm"] = [], [], [], []
        for tg in targets:
            k = len(tg["labels"])
            bb, cl = np.zeros((n, 4), np.float32), np.zeros((n, 1), np.int32)
            pm, sg = np.zeros((n, 1), np.float32), np.zeros((n, h, w), np.uint8)
            bb[:k], cl[:k, 0], pm[:k], sg[:k] = tg["boxes"], tg["labels"], 1, tg["masks"]
            for key, value in (("gt_bbox", bb), ("gt_class", cl), ("pad_gt_mask", pm), ("gt_segm", sg)):
                inputs[key].append(t(value))
    rand = paddle.rand
    paddle.rand = patched_rand
    try:
        with paddle.no_grad():
            losses = model(inputs)
    finally:
        paddle.rand = rand
    model.eval()
    return {k: float(np.asarray(v.numpy()).reshape(-1)[0]) for k, v in losses.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=sorted(CONFIGS))
    ap.add_argument("out")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--train-images", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out_dir = os.path.abspath(os.path.join(CWD, args.out))
    os.makedirs(out_dir, exist_ok=True)
    arch = "mask_rtdetr" if args.model.startswith("mask_rtdetr") else "ppyoloe_seg"
    paddle.seed(args.seed)
    np.random.seed(args.seed)
    cfg = load_config(CONFIGS[args.model])
    if arch == "mask_rtdetr":
        # no label flips (paddle.randint_like draws only for the flipped ones: no shared stream); box noise as
        # published (scale 1.0), from the deterministic sequence both sides share. Not scale 0: PaddleDetection
        # then skips the inverse sigmoid of the denoising boxes (it sits inside `if box_noise_scale > 0`).
        cfg["MaskRTDETR"]["label_noise_ratio"] = 0.0
    t0 = time.time()
    model = create(cfg.architecture)
    model.eval()
    perturb(model, arch, args.seed)
    sd = model.state_dict()
    paddle.save(sd, os.path.join(out_dir, "weights.pdparams"))
    np.savez(os.path.join(out_dir, "weights.npz"), **{k: v.numpy() for k, v in sd.items()})
    n_params = int(sum(np.prod(v.shape) for k, v in model.named_parameters()))
    print(f"built {args.model}: {len(sd)} tensors, {n_params / 1e6:.2f}M parameters ({time.time() - t0:.1f}s)")

    out: dict = {}
    paths = pick_images(args.images)
    samples = [preprocess(p) for p in paths]
    batch = np.stack([s["image"] for s in samples]).astype(np.float32)
    im_shape = np.stack([s["im_shape"] for s in samples]).astype(np.float32)
    scale = np.stack([s["scale_factor"] for s in samples]).astype(np.float32)
    out["input"], out["im_shape"], out["scale_factor"] = batch, im_shape, scale
    run = run_mask_rtdetr if arch == "mask_rtdetr" else run_ppyoloe
    t0 = time.time()
    with paddle.no_grad():
        run(model, batch, im_shape, scale, out, "")
        # the full model's own forward, image by image, must give what the pieces gave
        for b in range(len(paths)):
            res = model({"image": t(batch[b:b + 1]), "im_shape": t(im_shape[b:b + 1]),
                         "scale_factor": t(scale[b:b + 1])})
            assert np.allclose(res["bbox"].numpy(), out[f"det.{b}"], atol=1e-4), "pieces differ from forward"
    print(f"eval forward: {time.time() - t0:.1f}s")

    num_classes = int(cfg["num_classes"])
    targets = load_targets(paths[: args.train_images], 640, 640)
    t0 = time.time()
    losses = train_losses(model, arch, batch[: args.train_images], targets, num_classes)
    print(f"train forward: {time.time() - t0:.1f}s")
    for i, tg in enumerate(targets):
        for k in ("boxes", "labels", "masks"):
            out[f"target.{i}.{k}"] = tg[k]
    np.savez_compressed(os.path.join(out_dir, "ref.npz"), **out)
    meta = {"model": args.model, "config": CONFIGS[args.model], "images": paths, "losses": losses,
            "num_classes": num_classes, "params": n_params, "seed": args.seed}
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(losses, indent=1))


if __name__ == "__main__":
    main()
