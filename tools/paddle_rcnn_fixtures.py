"""Regenerate the R-CNN and SOLOv2 part of tests/fixtures/paddle/ (tools/paddle_fixtures.py writes the rest):

    PADDLE_PYTHON tools/paddle_rcnn_fixtures.py [--out tests/fixtures/paddle] [--data ../shared/datasets/tiny_coco]

with PADDLE_PYTHON the Python of the reference environment (tools/paddle_fixtures.py). One reduced-width
configuration per architecture of PaddleDetection's ``mask_rcnn_r50_fpn_1x_coco``, ``cascade_mask_rcnn_r50_fpn_1x_coco``
and ``solov2_r50_fpn_1x_coco`` (ResNet-18's layout at stage widths 8/16/16/32; R-CNN: 16 channels in the FPN, box and
mask heads, RoIAlign aligned as the configs say, 160 px; SOLOv2: 32 channels everywhere, one stacked conv, grids
12/10/8/6/4, 128 px), on a tiny_coco picture, with random weights spread as real ones are (BatchNorm statistics from a
forward on the picture, predictors widened). Per architecture it writes ``<arch>.pdparams`` (the detector, as
``paddle.save`` writes published files), ``<arch>_imagenet.pdparams`` (Mask R-CNN: its backbone alone, named as
PaddleDetection's ImageNet ResNets are) and ``<arch>.npz``: the picture (the network input is its normalisation),
backbone and FPN features, then R-CNN: RPN logits and deltas per level, the proposals, the box head's class
probabilities and deltas on them, the detections in the input frame and the mask head's probabilities for the first
of them; SOLOv2: the mask feature, the class scores after point NMS and the dynamic kernels per grid.

``--paste`` (also run after the architectures) writes ``rcnn_paste.npz``: PaddleDetection's own MaskPostProcess of
each R-CNN fixture's mask probabilities at its detections, the boxes scaled to an "original" picture of another size
(`PASTE_SIZE`) the way instaseg's post-processing scales them: the masks its predictor gives, to compare pixel by
pixel with ``mask_paste: exact``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import textwrap

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paddle_fixtures import SEED, picture, ppdet  # noqa: E402

CONFIGS = {
    "maskrcnn": "configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.yml",
    "cascade_maskrcnn": "configs/cascade_rcnn/cascade_mask_rcnn_r50_fpn_1x_coco.yml",
    "solov2": "configs/solov2/solov2_r50_fpn_1x_coco.yml",
}
REDUCED = {"size": 160, "depth": 18, "widths": [8, 16, 16, 32], "fpn": 16, "fc": 16, "mask": 16, "proposals": 50,
           "masks": 10}  # fmt: skip
# 32 channels: PaddleDetection's SOLOv2 GroupNorm has 32 groups
REDUCED_SOLOV2 = {"size": 128, "depth": 18, "widths": [8, 16, 16, 32], "channels": 32, "stacked_convs": 1,
                  "grids": [12, 10, 8, 6, 4]}  # fmt: skip
# predictors drawn wider than their initialisation: (name prefix, weight std, bias mean, bias std); SOLOv2's so that
# a few dozen cells pass its 0.1 candidate threshold
WIDENED = (("rpn_head.rpn_rois_", 0.05, 0.0, 0.3), ("bbox_head.bbox_score", 0.015, 0.0, 1.0),
           ("bbox_head.bbox_delta", 0.01, 0.0, 0.1), ("mask_head.mask_fcn_logits", 0.3, 0.0, 0.5),
           ("solov2_head.bbox_head.solo_cate.", 0.01, -3.0, 0.5),
           ("solov2_head.bbox_head.solo_kernel.", 0.005, 0.0, 0.3))
# SOLOv2 registers these layers under two names (second name, first name)
TWINS = (("solov2_head.solo_kernel.", "solov2_head.bbox_head.solo_kernel."),
         ("solov2_head.solo_cate.", "solov2_head.bbox_head.solo_cate."),
         ("mask_head.conv_pred.", "mask_head.mask_feat_head.conv_pred.0."))  # fmt: skip
PASTE_SIZE = (227, 251)  # (h, w) of the picture the 160 px input is taken to be resized from (ratios 1.42, 1.57)
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def network_input(rgb: np.ndarray) -> np.ndarray:
    """The config's NormalizeImage (/255, ImageNet mean and std) and Permute, on a picture at the input size."""
    return ((rgb.astype(np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1)[None].copy()


def narrow_resnet(widths: list[int]) -> None:
    """PaddleDetection's ResNet fixes its stage widths (64..512) inside ``__init__``: rebuilt with ``widths``."""
    from ppdet.modeling.backbones import resnet

    source = textwrap.dedent(inspect.getsource(resnet.ResNet.__init__))
    narrowed = source.replace("ch_out_list = [64, 128, 256, 512]", f"ch_out_list = {widths}")
    assert narrowed != source, "PaddleDetection's ResNet changed: update narrow_resnet"
    namespace: dict = {}
    exec(compile(narrowed, resnet.__file__, "exec"), resnet.__dict__, namespace)  # its module's own names
    resnet.ResNet.__init__ = namespace["__init__"]


def aligned_roi_align() -> None:
    """PaddleDetection forces RoIAlign's ``aligned`` off since 2024 (an NPU kernel's limit); the config, and the
    published weights' training, say aligned: restored."""
    from ppdet.modeling.heads import roi_extractor

    init = roi_extractor.RoIAlign.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.aligned = kwargs.get("aligned", False)

    roi_extractor.RoIAlign.__init__ = __init__


def reduce(cfg, arch: str) -> dict:
    """The config narrowed (see the module's notes); returns the reduction."""
    c = REDUCED_SOLOV2 if arch == "solov2" else REDUCED
    cfg["ResNet"]["depth"] = c["depth"]
    if arch == "solov2":
        cfg["FPN"]["out_channel"] = c["channels"]
        head, mask = cfg["SOLOv2Head"], cfg["SOLOv2MaskHead"]
        head["seg_feat_channels"] = head["kernel_out_channels"] = c["channels"]
        head["stacked_convs"], head["num_grids"] = c["stacked_convs"], c["grids"]
        mask["in_channels"] = mask["mid_channels"] = mask["out_channels"] = head["in_channels"] = c["channels"]
        return c
    cfg["FPN"]["out_channel"] = c["fpn"]
    cfg["CascadeTwoFCHead" if arch == "cascade_maskrcnn" else "TwoFCHead"]["out_channel"] = c["fc"]
    cfg["MaskFeat"]["out_channel"] = c["mask"]
    cfg["RPNHead"]["test_proposal"]["pre_nms_top_n"] = 3 * c["proposals"]
    cfg["RPNHead"]["test_proposal"]["post_nms_top_n"] = c["proposals"]
    return c


def build(paddle, workspace, arch: str):
    narrow_resnet(REDUCED["widths"])
    aligned_roi_align()
    cfg = workspace.load_config(CONFIGS[arch])
    reduction = reduce(cfg, arch)
    paddle.seed(SEED)
    model = workspace.create(cfg.architecture)
    model.eval()
    return model, reduction


def spread(paddle, model, x) -> None:
    """BatchNorm statistics from the picture (each layer's input, then jittered: random statistics let the
    activations grow layer after layer), normalisation affine terms jittered; predictors widened so that scores and
    boxes are distinct and masks mostly saturated, as trained ones are. SOLOv2's twice-registered layers keep one
    value under both names."""
    rng = np.random.default_rng(SEED)
    state = model.state_dict()
    new = {}
    for k, v in state.items():
        a = v.numpy()
        if ".norm." in k and k.endswith(".weight"):
            new[k] = a * rng.uniform(0.8, 1.2, a.shape)
        elif ".norm." in k and k.endswith(".bias"):
            new[k] = a + rng.normal(0, 0.1, a.shape)
        for prefix, weight_std, bias_mean, bias_std in WIDENED:
            if k.startswith(prefix):
                weight = k.endswith("weight")
                new[k] = rng.normal(0 if weight else bias_mean, weight_std if weight else bias_std, a.shape)
    for twin, original in TWINS:
        new.update({twin + k[len(original) :]: a for k, a in list(new.items()) if k.startswith(original)})
    model.set_state_dict({k: paddle.to_tensor(np.asarray(a, np.float32)) for k, a in new.items()})

    def statistics(layer, args):
        f = args[0].numpy().astype(np.float64)
        mean, var = f.mean(axis=(0, 2, 3)), f.var(axis=(0, 2, 3)) + 1e-3
        layer._mean.set_value((mean + rng.normal(0, 0.1, mean.shape) * np.sqrt(var)).astype(np.float32))
        layer._variance.set_value((var * rng.uniform(0.7, 1.3, var.shape)).astype(np.float32))

    hooks = [m.register_forward_pre_hook(statistics) for m in model.sublayers() if isinstance(m, paddle.nn.BatchNorm2D)]
    with paddle.no_grad():
        model.backbone({"image": x})
    for h in hooks:
        h.remove()


def features(model, inputs: dict, out: dict) -> list:
    body = model.backbone(inputs)
    out.update({f"backbone.{i}": f.numpy() for i, f in enumerate(body)})
    feats = model.neck(body)
    out.update({f"fpn.{i}": f.numpy() for i, f in enumerate(feats)})
    return feats


def rcnn_stages(paddle, model, inputs: dict, cascade: bool) -> dict:
    """Every stage's tensors, each computed from the previous stage's reference output."""
    out: dict = {}
    feats = features(model, inputs, out)
    for i, f in enumerate(model.rpn_head.rpn_feat(feats)):
        out[f"rpn_logits.{i}"] = model.rpn_head.rpn_rois_score(f).numpy()
        out[f"rpn_deltas.{i}"] = model.rpn_head.rpn_rois_delta(f).numpy()
    rois, rois_num, _ = model.rpn_head(feats, inputs)
    out["proposals"] = rois[0].numpy()
    preds, feat_func = model.bbox_head(feats, rois, rois_num, inputs)
    out["box_deltas"], out["box_probs"] = preds[0].numpy(), preds[1].numpy()  # cascade: last stage's, stages' mean
    box_rois = model.bbox_head.get_refined_rois() if cascade else rois
    bbox, bbox_num, _ = model.bbox_post_process(preds, (box_rois, rois_num), inputs["im_shape"],
                                                inputs["scale_factor"])  # fmt: skip
    n = min(REDUCED["masks"], int(bbox_num[0]))
    bbox, bbox_num = bbox[:n], paddle.to_tensor([n], dtype="int32")
    out["det_input"] = bbox.numpy()  # [label 0..79, score, x1, y1, x2, y2] in the input frame
    head = {} if cascade else {"feat_func": feat_func}
    out["mask_probs"] = model.mask_head(feats, bbox, bbox_num, inputs, **head).numpy()
    return out


def solov2_stages(paddle, model, inputs: dict) -> dict:
    out: dict = {}
    feats = features(model, inputs, out)
    out["mask_feat"] = model.mask_head(feats).numpy()
    cate, kernel = model.solov2_head(feats)
    for i, (c, k) in enumerate(zip(cate, kernel, strict=True)):
        out[f"cate.{i}"] = c.numpy()  # in eval: sigmoid, point NMS, channels last
        out[f"kernel.{i}"] = k.numpy()
    return out


def reference(arch: str, data: str, out: str) -> None:
    paddle, workspace = ppdet()
    model, reduction = build(paddle, workspace, arch)
    size = reduction["size"]
    rgb = picture(data, size)
    image = paddle.to_tensor(network_input(rgb))
    spread(paddle, model, image)
    state = model.state_dict()
    inputs = {"image": image, "im_shape": paddle.to_tensor([[size, size]], dtype="float32"),
              "scale_factor": paddle.to_tensor([[1.0, 1.0]], dtype="float32")}  # fmt: skip
    with paddle.no_grad():
        if arch == "solov2":
            res = solov2_stages(paddle, model, inputs)
        else:
            res = rcnn_stages(paddle, model, inputs, arch == "cascade_maskrcnn")
    info = {"reduced": reduction, "config": CONFIGS[arch], "seed": SEED, "paddle": paddle.__version__}
    # the network input is not stored: `network_input` makes it from the picture (tests/test_paddle_rcnn.py too)
    np.savez_compressed(os.path.join(out, f"{arch}.npz"), info=np.array(json.dumps(info)), picture=rgb, **res)
    paddle.save(state, os.path.join(out, f"{arch}.pdparams"))
    if arch == "maskrcnn":
        backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        paddle.save(backbone, os.path.join(out, f"{arch}_imagenet.pdparams"))


def paste(out: str) -> None:
    """PaddleDetection's pasted masks of each R-CNN fixture's [10,28,28] probabilities (see the module notes)."""
    paddle, _ = ppdet()
    from ppdet.modeling.post_process import MaskPostProcess

    h, w = PASTE_SIZE
    res = {"size": np.array(PASTE_SIZE, dtype=np.int64)}
    for arch in ("maskrcnn", "cascade_maskrcnn"):
        ref = np.load(os.path.join(out, f"{arch}.npz"))
        det = ref["det_input"].copy()
        size = REDUCED["size"]
        # instaseg's scale_boxes: float32 boxes times float32 ratios
        det[:, 2:] = det[:, 2:] * np.array([w / size, h / size, w / size, h / size], dtype=np.float32)
        masks = MaskPostProcess()(paddle.to_tensor(ref["mask_probs"]), paddle.to_tensor(det),
                                  paddle.to_tensor([len(det)], dtype="int32"),
                                  paddle.to_tensor([[h, w]], dtype="int32")).numpy()  # fmt: skip
        res[f"{arch}.boxes"] = det[:, 2:]
        res[f"{arch}.masks"] = np.packbits(masks.astype(bool), axis=-1)
    np.savez_compressed(os.path.join(out, "rcnn_paste.npz"), **res)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "paddle"))
    p.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "datasets", "tiny_coco"))
    p.add_argument("--arch", choices=sorted(CONFIGS), help="one architecture (each runs in its own process)")
    p.add_argument("--paste", action="store_true", help="only rcnn_paste.npz, from the R-CNN fixtures there")
    args = p.parse_args()
    out, data = os.path.abspath(args.out), os.path.abspath(args.data)
    if args.arch or args.paste:
        reference(args.arch, data, out) if args.arch else paste(out)
        return
    for arch in CONFIGS:  # ppdet's configuration is process-wide: one process each
        subprocess.run([sys.executable, os.path.abspath(__file__), "--arch", arch, "--out", out, "--data", data],
                       check=True)  # fmt: skip
    subprocess.run([sys.executable, os.path.abspath(__file__), "--paste", "--out", out], check=True)
    for name in sorted(os.listdir(out)):
        print(f"{name}: {os.path.getsize(os.path.join(out, name)) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
