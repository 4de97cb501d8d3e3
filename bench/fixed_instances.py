"""Random-init instaseg models made to output exactly N instances, and the square tiny_coco pictures they run on:
what `bench/peer_speed.py` and `bench/graph_profile.py` time (bench/peer_ultralytics.py does the same to YOLO-seg).

How a model is made to output N instances (the same rule on both sides of the comparison):
- 0: every class-predictor bias -20 (weights zeroed), so no score reaches any threshold.
- N > 0: class predictors zeroed, bias +5 for class 0 on the coarsest level (stride 32: 20 x 20 = 400 points on a
  640 x 640 picture) and -20 elsewhere; box predictors zeroed, biased so every box is a square two strides wide
  centred on its point (64 px). Neighbouring boxes overlap with IoU at most 0.5 (after clipping at the border),
  below every NMS threshold in play (0.6-0.7), so all 400 survive NMS, and the cap on detections per image
  (``eval.max_dets`` here, ``max_det`` in Ultralytics) keeps exactly N. Mask branches stay random, with kernels /
  coefficients spread so masks come out partly filled; RTMDet-Ins's dynamic kernels give a diamond inside each box
  (`local_mask_kernel`), since its masks are not cut to boxes.
SOLOv2 and Mask-RT-DETR have no box predictor: N > 0 is their ``make_outputs_busy`` state capped at N.

Pictures: tiny_coco's, centre-cropped to a square and resized to 640 x 640, so neither tool pads (a padded band
would hold candidates too) and masks in the network frame are masks in the picture's frame for both.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import torch

TINY_COCO = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "tiny_coco" / "images"
SIZE = 640
SCORE_ON, SCORE_OFF = 5.0, -20.0


def square_pictures(count: int, size: int = SIZE, folder: Path = TINY_COCO) -> list[np.ndarray]:
    """``count`` RGB pictures size x size: tiny_coco's first ones (sorted), centre-cropped and resized."""
    paths = sorted(folder.glob("*.jpg"))[:count]
    if len(paths) < count:
        raise SystemExit(f"need {count} pictures in {folder}, found {len(paths)}")
    out = []
    for path in paths:
        image = cv2.imread(str(path))[..., ::-1]
        h, w = image.shape[:2]
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        crop = image[y0 : y0 + side, x0 : x0 + side]
        out.append(np.ascontiguousarray(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)))
    return out


def normalise_activations(model: torch.nn.Module, forward) -> None:
    """Each (transposed) convolution rescaled so its output on one picture has unit std (LSUV-style), in one
    ``forward()``: hooks fire in execution order, so each layer is measured on its already rescaled inputs. Left at
    their initialisations (std 0.01 in one-stage heads, PyTorch's default in YOLO) random networks shrink their
    activations to 1e-8..1e-12 by the neck: flat prototypes and masks all empty or all full. A convolution shared
    by several pyramid levels is rescaled on its first call only."""
    seen: set[int] = set()

    def rescale(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if id(module) in seen:
            return None
        seen.add(id(module))
        std = float(output.std())
        if not np.isfinite(std) or std == 0:
            return None
        module.weight.div_(std)
        if module.bias is not None:
            module.bias.div_(std)
        return output / std

    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    handles = [m.register_forward_hook(rescale) for m in convs]
    try:
        with torch.no_grad():
            forward()
    finally:
        for handle in handles:
            handle.remove()


def _set_class_biases(convs: list[torch.nn.Conv2d], instances: int) -> None:
    """Zero weights; SCORE_OFF everywhere, and SCORE_ON for class 0 on the last (coarsest) level when N > 0."""
    for level, conv in enumerate(convs):
        conv.weight.zero_()
        conv.bias.fill_(SCORE_OFF)
        if instances and level == len(convs) - 1:
            conv.bias[0] = SCORE_ON


def _spread(conv: torch.nn.Conv2d) -> None:
    """Kernels / coefficients that differ from point to point, so masks are partly filled and all distinct."""
    conv.weight.normal_(0.0, conv.weight[0].numel() ** -0.5 * 4)
    conv.bias.normal_(0.0, 1.0)


MASK_RADIUS = 32.0  # px: half the side of the fixed boxes


def local_mask_kernel(dyn_sizes: list[tuple[int, int]], stride: int, radius: float = MASK_RADIUS) -> torch.Tensor:
    """The dynamic-convolution parameters (layer weights [out, in] row-major, then biases) of a mask positive within
    ``radius`` px (L1) of the instance's point: a diamond inside its box. RTMDet-Ins does not cut masks to boxes (as
    in MMDetection) and random kernels give masks spread over the whole picture, each then pasted at full size;
    trained masks stay near their object. Layer 1 gives relu(+-dx), relu(+-dy) of the relative coordinates (its
    first two inputs, in units of 8 x stride), layer 2 their sum, layer 3 ``gain * (radius - sum)``."""
    (o1, i1), (o2, i2), (o3, i3) = dyn_sizes
    w1, w2, w3 = torch.zeros(o1, i1), torch.zeros(o2, i2), torch.zeros(o3, i3)
    w1[0, 0], w1[1, 0], w1[2, 1], w1[3, 1] = 1.0, -1.0, 1.0, -1.0
    w2[0, :4] = 1.0
    gain = 64.0
    w3[0, 0] = -gain
    b3 = torch.full((o3,), gain * radius / (8.0 * stride))
    return torch.cat([w1.reshape(-1), w2.reshape(-1), w3.reshape(-1), torch.zeros(o1 + o2), b3])


def fix_rtmdet_ins(model: torch.nn.Module, instances: int) -> None:
    head = model.head
    _set_class_biases(list(head.rtm_cls), instances)
    for reg, kernel, stride in zip(head.rtm_reg, head.rtm_kernel, head.strides, strict=True):
        reg.weight.zero_()
        reg.bias.fill_(1.0)  # relu(1) x stride: one stride each side
        kernel.weight.zero_()
        kernel.bias.copy_(local_mask_kernel(head.dyn_sizes, int(stride)))


def fix_ppyoloe_seg(model: torch.nn.Module, instances: int) -> None:
    head = model.head
    _set_class_biases(list(head.pred_cls), instances)
    bins = head.reg_max + 1
    for reg, ins in zip(head.pred_reg, head.pred_ins, strict=True):
        reg.weight.zero_()
        reg.bias.fill_(SCORE_OFF)
        reg.bias.view(4, bins)[:, 1] = -SCORE_OFF  # each side's distance distribution all at 1 stride
        _spread(ins)


def fix_solov2(model: torch.nn.Module, instances: int) -> None:
    model.make_outputs_busy()
    if not instances:
        model.head.conv_cls.weight.zero_()
        model.head.conv_cls.bias.fill_(SCORE_OFF)


def fix_mask_rtdetr(model: torch.nn.Module, instances: int) -> None:
    model.make_outputs_busy()
    if not instances:
        head = model.transformer.score_head
        head.weight.zero_()
        head.bias.fill_(SCORE_OFF)


def fix_rcnn(model: torch.nn.Module, instances: int) -> None:
    """Mask R-CNN and Cascade: every proposal classified as class 1 (background for 0) by every stage, box deltas
    zero, so the boxes are the RPN's proposals, which NMS thins and the cap keeps at N."""
    heads = model.roi_heads
    stages = [heads.box_predictor] if hasattr(heads, "box_predictor") else list(heads.stages)
    for stage in stages:
        stage.cls_score.weight.zero_()
        stage.cls_score.bias.fill_(SCORE_OFF)
        stage.cls_score.bias[1 if instances else 0] = SCORE_ON
        stage.bbox_pred.weight.zero_()
        stage.bbox_pred.bias.zero_()


FIXERS = {
    "maskrcnn": fix_rcnn,
    "cascade_maskrcnn": fix_rcnn,
    "rtmdet_ins": fix_rtmdet_ins,
    "ppyoloe_seg": fix_ppyoloe_seg,
    "solov2": fix_solov2,
    "mask_rtdetr": fix_mask_rtdetr,
}


def instance_checkpoint(recipe_name: str, instances: int, folder: Path, size: int = SIZE) -> Path:
    """A random-init checkpoint of ``recipe_name`` at ``size`` px that outputs exactly ``instances`` per picture."""
    from instaseg.models.checkpoint import save_checkpoint
    from instaseg.models.factory import build_model
    from instaseg.models.recipes import apply_overrides, load_recipe

    overrides = [f"input.min_size={size}", f"input.max_size={size}"]
    if instances:
        overrides.append(f"eval.max_dets={instances}")
    recipe = apply_overrides(load_recipe(recipe_name), overrides)
    torch.manual_seed(0)
    model = build_model(recipe, 80, weights="none")
    model.eval()
    picture = square_pictures(1, size)[0]
    normalise_activations(model, lambda: model([torch.from_numpy(picture).permute(2, 0, 1).float() / 255]))
    with torch.no_grad():
        FIXERS[recipe["model"]["architecture"]](model, instances)
    names = [f"class{i}" for i in range(1, 81)]
    folder.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(folder / f"{recipe_name}_{instances}.pt", model, recipe, names, list(range(1, 81)))


def export_fixed(
    recipe_name: str,
    instances: int,
    precision: str,
    folder: Path,
    calib: list[np.ndarray] | None = None,
    size: int = SIZE,
) -> Path:
    """The OpenVINO export (static ``size`` x ``size`` graph) of `instance_checkpoint`, cached in ``folder``.
    ``precision``: fp32 | bf16 | int8 (NNCF, calibrated on ``calib``)."""
    from instaseg.export.exporter import export_model

    out = folder / f"{recipe_name}_{instances}" if size == SIZE else folder / f"{recipe_name}_{instances}_{size}"
    int8 = precision == "int8"
    name = {"fp32": "model.xml", "bf16": "model_bf16.xml", "int8": "model_int8.xml"}[precision]
    if (out / name).is_file():
        return out / name
    checkpoint = instance_checkpoint(recipe_name, instances, out, size)
    calib_dir = None
    if int8:
        calib_dir = out / "calib"
        calib_dir.mkdir(exist_ok=True)
        for i, picture in enumerate(calib or []):
            cv2.imwrite(str(calib_dir / f"{i:03d}.png"), picture[..., ::-1])
    # The 0-instance model detects nothing by construction, so the export's rule of calibrating only on pictures
    # with a detection (which keeps a real model's mask-branch ranges honest) would leave nothing: here every
    # picture calibrates, and no mask is ever computed from those ranges.
    calibrate_on_all = mock.patch("instaseg.export.quantize.detecting_feeds", lambda model, feeds: feeds)
    with calibrate_on_all if int8 and instances == 0 else nullcontext():
        result = export_model(
            checkpoint,
            format="openvino",
            out=out,
            precision="fp32" if int8 else precision,
            int8=int8,
            calib_data=calib_dir,
            calib_size=len(calib or []) or 1,
        )
    return Path(result["path"])
