"""Regenerate tests/fixtures/paddle/: what CI needs of PaddleDetection without installing Paddle.

    PADDLE_PYTHON tools/paddle_fixtures.py [--out tests/fixtures/paddle] [--data ../shared/datasets/tiny_coco]

with PADDLE_PYTHON the Python of the reference environment (paddlepaddle CPU, PaddleDetection's source at the
commit docs/equivalence.md names in $PADDLEDET, PaddleClas's PP-HGNetV2 in $PADDLECLAS). It writes:

- ``layouts.json.gz``: tensor names and shapes of every file PaddleX / PaddleDetection publish for our recipes
  (Mask-RT-DETR S to H and PP-YOLOE_seg-S COCO models, their PP-HGNetV2 ImageNet classifiers, the Objects365
  PP-YOLOE+ s detector PP-YOLOE_seg-S starts from; the Mask R-CNN, Cascade Mask R-CNN and SOLOv2 COCO models and
  the ImageNet ResNets their configs start from), from the models the configs build with random initialisation;
  tests/test_paddle_weights.py converts each completely. ``--layouts-only`` rewrites just this file.
- for one reduced-width configuration per architecture: ``<arch>.pdparams`` (the reference's random weights,
  spread so that outputs are distinct, written by ``paddle.save`` as published files are) and ``<arch>.npz`` (a
  tiny_coco picture at the input size, the network input, backbone / neck features, raw head outputs, the final
  instances of the reference's own post-processing, training targets and losses); and the files the
  ``--weights imagenet`` tests load: ``<arch>_imagenet.pdparams`` (a PP-HGNetV2 classifier of the reduced width as
  PaddleClas writes it; a reduced Objects365 PP-YOLOE+ detector).

Every build runs in its own process: ppdet's load_config merges into one process-wide configuration.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import types

import numpy as np

PADDLEDET = os.environ.get("PADDLEDET", "/work/ref/paddle/PaddleDetection")
PADDLECLAS = os.environ.get("PADDLECLAS", "/work/ref/paddle/PaddleClas")
PICTURE = "000000391895.jpg"  # tiny_coco: a man on a motorbike, people, a bicycle
SEED = 0
MAX_OBJECTS = 8
DETECTORS = {
    **{f"mask_rtdetr_hgnetv2_{s}_6x_coco": f"configs/mask_rtdetr/mask_rtdetr_hgnetv2_{s}_6x_coco.yml" for s in "smlxh"},
    "ppyoloe_seg_s_80e_coco": "configs/ppyoloe_seg/ppyoloe_seg_s_80e_coco.yml",
    "ppyoloe_plus_crn_s_60e_objects365": "configs/ppyoloe/objects365/ppyoloe_plus_crn_s_60e_objects365.yml",
    # PaddleX's Mask R-CNNs, Cascade Mask R-CNNs and SOLOv2 (PaddleX's model sections equal these configs')
    **{c: f"configs/mask_rcnn/{c}.yml" for c in ("mask_rcnn_r50_1x_coco", "mask_rcnn_r50_fpn_1x_coco",
       "mask_rcnn_r50_vd_fpn_1x_coco", "mask_rcnn_r101_fpn_1x_coco", "mask_rcnn_r101_vd_fpn_1x_coco",
       "mask_rcnn_x101_vd_64x4d_fpn_1x_coco")},
    **{c: f"configs/cascade_rcnn/{c}.yml" for c in ("cascade_mask_rcnn_r50_fpn_1x_coco",
       "cascade_mask_rcnn_r50_vd_fpn_ssld_1x_coco")},
    **{c: f"configs/solov2/{c}.yml" for c in ("solov2_r50_fpn_1x_coco", "solov2_r50_fpn_3x_coco")},
}  # fmt: skip
# the ImageNet ResNets those configs start from (pretrain_weights): PaddleDetection's ResNet with the config's
# backbone settings; its loader matches the file's names by suffix, so they are the backbone's own names
RESNETS = {
    "ResNet50_cos_pretrained": {"depth": 50},
    "ResNet50_vd_pretrained": {"depth": 50, "variant": "d"},
    "ResNet50_vd_ssld_v2_pretrained": {"depth": 50, "variant": "d"},
    "ResNet101_pretrained": {"depth": 101},
    "ResNet101_vd_pretrained": {"depth": 101, "variant": "d"},
    "ResNeXt101_vd_64x4d_pretrained": {"depth": 101, "variant": "d", "groups": 64, "base_width": 4},
}
# PP-HGNetV2 ImageNet files: PaddleClas's B1, B2, B5 (S, M, X); PaddleDetection's L and H are PaddleClas's B4 and B6
CLASSIFIERS = {
    "PPHGNetV2_B1_ssld_stage1_pretrained": "PPHGNetV2_B1",
    "PPHGNetV2_B2_ssld_stage1_pretrained": "PPHGNetV2_B2",
    "PPHGNetV2_L_ssld_pretrained": "PPHGNetV2_B4",
    "PPHGNetV2_B5_ssld_stage1_pretrained": "PPHGNetV2_B5",
    "PPHGNetV2_H_ssld_pretrained": "PPHGNetV2_B6",
}
# our hgnetv2_nano table (instaseg.models.mask_rtdetr.backbone.ARCHS["nano"]), added to PaddleDetection's tables
NANO = {"stem_channels": [3, 16, 16], "stage_config": {
    "stage1": [16, 16, 32, 1, False, False, 3, 2], "stage2": [32, 24, 64, 1, True, False, 3, 2],
    "stage3": [64, 48, 128, 1, True, True, 5, 2], "stage4": [128, 64, 256, 1, True, True, 5, 2]}}  # fmt: skip
MASK_RTDETR_REDUCED = dict(size=128, hidden=64, ffn=128, expansion=0.5, mask_feat=[32, 32], prototypes=32,
                           queries=50, decoder_layers=3, heads=4, decoder_ffn=256, denoising=30)  # fmt: skip
PPYOLOE_REDUCED = dict(size=160, widen=0.0625)


# ---------------------------------------------------------------- the reference, one build per process
def ppdet():
    sys.path.insert(0, PADDLEDET)
    os.chdir(PADDLEDET)
    import paddle

    paddle.set_device("cpu")
    from ppdet.core import workspace
    from ppdet.modeling.backbones.hgnet_v2 import PPHGNetV2

    PPHGNetV2.arch_configs["nano"] = NANO
    return paddle, workspace


def paddleclas(name: str, **kwargs):
    sys.path.insert(0, PADDLECLAS)
    stub = types.ModuleType("ppcls.utils.download")  # only its downloader is missing from the extracted source
    stub.get_weights_path_from_url = None
    sys.modules["ppcls.utils.download"] = stub
    from ppcls.arch.backbone.legendary_models import pp_hgnet_v2

    return getattr(pp_hgnet_v2, name)(**kwargs) if name.startswith("PPHGNetV2_") else pp_hgnet_v2.PPHGNetV2(**kwargs)


def layout_of(name: str) -> list:
    if name in CLASSIFIERS:
        ppdet()
        state = paddleclas(CLASSIFIERS[name]).state_dict()
    elif name in RESNETS:
        ppdet()
        from ppdet.modeling.backbones.resnet import ResNet

        state = ResNet(**RESNETS[name], return_idx=[0, 1, 2, 3]).state_dict()
    else:
        paddle, workspace = ppdet()
        state = workspace.create(workspace.load_config(DETECTORS[name]).architecture).state_dict()
    return [[k, list(v.shape), str(v.dtype).replace("paddle.", "")] for k, v in state.items()]


# ---------------------------------------------------------------- pictures and targets
def picture(data: str, size: int) -> np.ndarray:
    """The picture stretched to size x size (cv2 bicubic, PaddleDetection's eval resize), RGB uint8: both sides
    read these pixels and resize nothing."""
    import cv2

    image = cv2.imread(os.path.join(data, "images", PICTURE))
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)[:, :, ::-1].copy()


def targets(data: str, size: int) -> dict:
    """The picture's largest non-crowd objects stretched to size x size: boxes xyxy, labels 0..79, masks."""
    import cv2
    from pycocotools import mask as mask_utils

    images, anns = {}, []
    for split in ("instances_train.json", "instances_val.json"):
        with open(os.path.join(data, "annotations", split)) as f:
            coco = json.load(f)
        images.update({i["file_name"]: i for i in coco["images"]})
        anns += coco["annotations"]
        cats = sorted(c["id"] for c in coco["categories"])
    info = images[PICTURE]
    h, w = info["height"], info["width"]
    objs = [a for a in anns if a["image_id"] == info["id"] and not a.get("iscrowd", 0) and min(a["bbox"][2:]) > 1]
    objs = sorted(objs, key=lambda a: -a["area"])[:MAX_OBJECTS]
    sx, sy = size / w, size / h
    boxes, labels, masks = [], [], []
    for a in objs:
        x, y, bw, bh = a["bbox"]
        boxes.append([x * sx, y * sy, (x + bw) * sx, (y + bh) * sy])
        labels.append(cats.index(a["category_id"]))
        rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], h, w))
        masks.append(cv2.resize(mask_utils.decode(rle), (size, size), interpolation=cv2.INTER_NEAREST))
    return {"boxes": np.array(boxes, np.float32), "labels": np.array(labels, np.int64),
            "masks": np.array(masks, np.uint8)}  # fmt: skip


def sequence(shape) -> np.ndarray:
    """The stand-in for uniform random draws both sides share (sampling points, denoising box noise): the
    R-sequence (Roberts' low-discrepancy sequence) over the second-to-last axis, broadcast over the leading ones."""
    shape = [int(s) for s in shape]
    one = len(shape) == 1
    n, d = (shape[0], 1) if one else shape[-2:]
    g = 2.0
    for _ in range(60):  # the root of x^(d+1) = x + 1
        g = (1 + g) ** (1.0 / (d + 1))
    alpha = g ** -np.arange(1, d + 1, dtype=np.float64)
    values = np.mod(0.5 + np.arange(1, n + 1, dtype=np.float64)[:, None] * alpha[None], 1.0).astype(np.float32)
    return values[:, 0].copy() if one else np.broadcast_to(values, shape).copy()


# ---------------------------------------------------------------- random weights that give distinct outputs
def spread(paddle, model, head: str) -> None:
    """BatchNorm statistics and affine terms drawn around their defaults; ``head``'s score and box layers spread
    so that random outputs are not all tied (ties break differently in paddle.topk and torch.topk)."""
    rng = np.random.default_rng(SEED)
    state = model.state_dict()
    new = {}
    for k, v in state.items():
        a = v.numpy()
        stem = k.rsplit(".", 1)[0]
        if k.endswith("._mean"):
            new[k] = rng.normal(0, 0.1, a.shape)
        elif k.endswith("._variance"):
            new[k] = rng.uniform(0.5, 1.5, a.shape)
        elif f"{stem}._mean" in state or (".norm" in k and a.ndim == 1):
            new[k] = a * rng.uniform(0.8, 1.2, a.shape) if k.endswith("weight") else a + rng.normal(0, 0.1, a.shape)
        elif k.endswith((".alpha", ".lab.scale")):
            new[k] = a * rng.uniform(0.8, 1.2, a.shape)
    if head == "mask_rtdetr":
        new["transformer.score_head.weight"] = state["transformer.score_head.weight"].numpy() * 4
        bias = state["transformer.score_head.bias"].numpy()
        new["transformer.score_head.bias"] = bias + rng.normal(0, 1.0, bias.shape)
        last = max(int(k.split(".")[3]) for k in state if k.startswith("transformer.bbox_head.layers."))
        for p, std in (("weight", 0.02), ("bias", 0.3)):
            new[f"transformer.bbox_head.layers.{last}.{p}"] = rng.normal(
                0, std, state[f"transformer.bbox_head.layers.{last}.{p}"].shape
            )
        # border tokens share one content: a zero bias gives them a low score, so none is among the selected
        new["transformer.enc_output.0.bias"] = np.zeros(state["transformer.enc_output.0.bias"].shape)
        for k in state:
            if k.endswith("cross_attn.attention_weights.weight"):  # zero at init: give the sampling a direction
                new[k] = rng.normal(0, 0.02, state[k].shape)
    else:
        for k in state:
            if k.startswith(("yolo_head.pred_cls.", "yolo_head.pred_reg.")):
                cls = "pred_cls" in k
                mean, std = (0.0, 0.01) if k.endswith("weight") else ((-3.0 if cls else 1.0), 1.0)
                new[k] = rng.normal(mean, std, state[k].shape)
    model.set_state_dict({k: paddle.to_tensor(np.asarray(a, np.float32)) for k, a in new.items()})


# ---------------------------------------------------------------- the reduced configurations
def packed(masks: np.ndarray) -> dict:
    return {"shape": np.array(masks.shape), "bits": np.packbits(masks.astype(bool), axis=None)}


def reduced_mask_rtdetr(data: str, out: str) -> None:
    c = MASK_RTDETR_REDUCED

    def edit(cfg) -> None:
        cfg["PPHGNetV2"]["arch"] = "nano"
        cfg["hidden_dim"], cfg["num_prototypes"], cfg["eval_size"] = c["hidden"], c["prototypes"], [c["size"]] * 2
        enc = cfg["MaskHybridEncoder"]
        enc.update(hidden_dim=c["hidden"], expansion=c["expansion"], mask_feat_channels=c["mask_feat"])
        enc["encoder_layer"].update(d_model=c["hidden"], dim_feedforward=c["ffn"])
        cfg["MaskRTDETR"].update(num_queries=c["queries"], num_decoder_layers=c["decoder_layers"], nhead=c["heads"],
                                 dim_feedforward=c["decoder_ffn"], num_denoising=c["denoising"],
                                 label_noise_ratio=0.0)  # no label flips: their draws have no shared stream

    paddle, model, state = reference("mask_rtdetr_hgnetv2_l_6x_coco", edit, "mask_rtdetr")
    rgb = picture(data, c["size"])
    x = (rgb.astype(np.float32) / 255).transpose(2, 0, 1)[None]  # NormalizeImage mean 0, std 1, is_scale
    t = paddle.to_tensor
    inputs = {"image": t(x), "im_shape": t(np.array([[c["size"]] * 2], np.float32)),
              "scale_factor": t(np.ones((1, 2), np.float32))}  # fmt: skip
    res = {"picture": rgb, "input": x}
    with paddle.no_grad():
        body = model.backbone(inputs)
        res.update({f"backbone.{i}": f.numpy() for i, f in enumerate(body)})
        feats, mask_feat = model.neck(list(body))
        res.update({f"encoder.{i}": f.numpy() for i, f in enumerate(feats)})
        res["mask_feat"] = mask_feat.numpy()
        outputs = model.transformer((feats, mask_feat), None, inputs)
        logits, boxes, masks, enc_out = outputs[:4]
        res.update(logits=logits[-1].numpy(), boxes=boxes[-1].numpy(), masks=masks[-1].numpy(),
                   enc_logits=enc_out[0].numpy(), enc_boxes=enc_out[1].numpy())  # fmt: skip
        det, _, det_masks = model.post_process(model.detr_head(outputs, body), inputs["im_shape"],
                                               inputs["scale_factor"], x.shape[2:])  # fmt: skip
        final = model(inputs)
        assert np.allclose(final["bbox"].numpy(), det.numpy(), atol=1e-4), "the stages differ from the forward"
    res["det"] = det.numpy()
    res.update({f"detmask.{k}": v for k, v in packed(det_masks.numpy()).items()})
    res.update(losses(paddle, model, "mask_rtdetr", x, targets(data, c["size"])))
    write(out, "mask_rtdetr", state, res, {"reduced": c, "config": DETECTORS["mask_rtdetr_hgnetv2_l_6x_coco"]})
    backbone = paddleclas("", stage_config=NANO["stage_config"], stem_channels=NANO["stem_channels"], use_lab=True,
                          class_expand=64, class_num=10)  # fmt: skip
    spread(paddle, backbone, "")
    paddle.save(backbone.state_dict(), os.path.join(out, "mask_rtdetr_imagenet.pdparams"))


def reduced_ppyoloe(data: str, out: str) -> None:
    c = PPYOLOE_REDUCED
    paddle, model, state = reference("ppyoloe_seg_s_80e_coco", reduced_width, "ppyoloe")
    rgb = picture(data, c["size"])
    x = (rgb.astype(np.float32) / 255).transpose(2, 0, 1)[None]  # NormalizeImage mean 0, std 1, is_scale
    t = paddle.to_tensor
    res = {"picture": rgb, "input": x}
    with paddle.no_grad():
        body = model.backbone({"image": t(x)})
        res.update({f"backbone.{i}": f.numpy() for i, f in enumerate(body)})
        neck = model.neck(list(body))
        res.update({f"neck.{i}": f.numpy() for i, f in enumerate(neck)})  # Paddle's order: coarsest first
        head = model.yolo_head(neck)
        res.update(cls=head[0].numpy(), dist=head[1].numpy(), coef=head[2].numpy(), proto=head[3].numpy())
        det, _, det_masks, _ = model.yolo_head.post_process(
            head, im_shape=t(np.array([[c["size"]] * 2], np.float32)), scale_factor=t(np.ones((1, 2), np.float32)),
            infer_shape=x.shape[2:])  # fmt: skip
    res["det"] = det.numpy()
    res.update({f"detmask.{k}": v for k, v in packed(det_masks.numpy()).items()})
    res.update(losses(paddle, model, "ppyoloe", x, targets(data, c["size"])))
    write(out, "ppyoloe_seg", state, res, {"reduced": c, "config": DETECTORS["ppyoloe_seg_s_80e_coco"]})


def reduced_objects365(out: str) -> None:
    """The reduced PP-YOLOE+ Objects365 detector (365 classes, no mask branch): the --weights imagenet start."""
    paddle, _, state = reference("ppyoloe_plus_crn_s_60e_objects365", reduced_width, "ppyoloe")
    paddle.save(state, os.path.join(out, "ppyoloe_seg_imagenet.pdparams"))


def reduced_width(cfg) -> None:
    cfg["width_mult"], cfg["eval_size"] = PPYOLOE_REDUCED["widen"], [PPYOLOE_REDUCED["size"]] * 2


def reference(config: str, edit, head: str):
    """(paddle, PaddleDetection's model of ``config`` as ``edit`` changes it, in eval mode with spread random
    weights, those weights): taken before any training forward, which updates the BatchNorm statistics."""
    paddle, workspace = ppdet()
    paddle.seed(SEED)
    cfg = workspace.load_config(DETECTORS[config])
    edit(cfg)
    model = workspace.create(cfg.architecture)
    model.eval()
    spread(paddle, model, head)
    return paddle, model, {k: v.clone() for k, v in model.state_dict().items()}


def losses(paddle, model, arch: str, x: np.ndarray, target: dict) -> dict:
    """One training forward on the picture and its objects; uniform draws from the shared `sequence`."""
    t = paddle.to_tensor
    h, w = x.shape[-2:]
    inputs = {"image": t(x), "im_shape": t(np.array([[h, w]], np.float32)),
              "scale_factor": t(np.ones((1, 2), np.float32)), "epoch_id": 0}  # fmt: skip
    if arch == "mask_rtdetr":
        b = target["boxes"] / np.array([w, h, w, h], np.float32)
        inputs["gt_bbox"] = [t(np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], 1))]
        inputs["gt_class"] = [t(target["labels"][:, None].astype(np.int32))]
        inputs["gt_segm"] = [t(target["masks"].astype(np.float32))]
    else:
        inputs.update(gt_bbox=[t(target["boxes"])], gt_class=[t(target["labels"][:, None].astype(np.int32))],
                      pad_gt_mask=[t(np.ones((len(target["labels"]), 1), np.float32))],
                      gt_segm=[t(target["masks"])])  # fmt: skip
    out = {f"target.{k}": v for k, v in target.items()}
    if arch == "mask_rtdetr":
        return {**out, **{f"loss.{k}": v for k, v in training_forward(paddle, model, inputs).items()}}
    # as published, PPYOLOEInsHead.get_loss normalises the boxes of its mask loss by a hard-coded
    # paddle.to_tensor([640, 640]); the reduced input is smaller: "loss" has that one tensor at the real size
    out.update({f"loss_as_published.{k}": v for k, v in training_forward(paddle, model, inputs).items()})
    to_tensor = paddle.to_tensor
    real_size = lambda data: [h, w] if isinstance(data, list) and data == [640, 640] else data  # noqa: E731
    paddle.to_tensor = lambda data, *a, **k: to_tensor(real_size(data), *a, **k)
    try:
        out.update({f"loss.{k}": v for k, v in training_forward(paddle, model, inputs).items()})
    finally:
        paddle.to_tensor = to_tensor
    return out


def training_forward(paddle, model, inputs: dict) -> dict:
    model.train()
    rand = paddle.rand
    paddle.rand = lambda shape, dtype=None, name=None: paddle.to_tensor(sequence(shape))
    try:
        with paddle.no_grad():
            values = model(inputs)
    finally:
        paddle.rand = rand
        model.eval()
    return {k: np.float64(np.asarray(v.numpy()).reshape(-1)[0]) for k, v in values.items()}


def write(out: str, arch: str, state: dict, res: dict, info: dict) -> None:
    import paddle

    info.update(picture=PICTURE, seed=SEED, paddle=paddle.__version__)
    np.savez_compressed(os.path.join(out, f"{arch}.npz"), info=np.array(json.dumps(info)), **res)
    paddle.save(state, os.path.join(out, f"{arch}.pdparams"))


# ---------------------------------------------------------------- driver
def child(args: list[str]) -> str:
    done = subprocess.run([sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return done.stdout


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "paddle"))
    p.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "datasets", "tiny_coco"))
    p.add_argument("--layout", help=argparse.SUPPRESS)  # one build, in a child process
    p.add_argument("--reduced", help=argparse.SUPPRESS)
    p.add_argument("--layouts-only", action="store_true", help="rewrite layouts.json.gz only")
    args = p.parse_args()
    out, data = os.path.abspath(args.out), os.path.abspath(args.data)
    if args.layout:
        print(json.dumps(layout_of(args.layout)))
        return
    if args.reduced:
        {"mask_rtdetr": lambda: reduced_mask_rtdetr(data, out), "ppyoloe_seg": lambda: reduced_ppyoloe(data, out),
         "objects365": lambda: reduced_objects365(out)}[args.reduced]()  # fmt: skip
        return
    os.makedirs(out, exist_ok=True)
    layouts = {
        name: json.loads(child(["--layout", name]).strip().splitlines()[-1])
        for name in [*DETECTORS, *CLASSIFIERS, *RESNETS]
    }
    with tempfile.NamedTemporaryFile("wb", dir=out, delete=False) as f:
        f.write(gzip.compress(json.dumps({"layouts": layouts}).encode(), mtime=0))  # the same bytes every time
    os.replace(f.name, os.path.join(out, "layouts.json.gz"))
    if args.layouts_only:
        return
    for arch in ("mask_rtdetr", "ppyoloe_seg", "objects365"):
        child(["--reduced", arch, "--out", out, "--data", data])
    for name in sorted(os.listdir(out)):
        print(f"{name}: {os.path.getsize(os.path.join(out, name)) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
