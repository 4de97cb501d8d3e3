"""MMDetection as the reference, in its own environment: import this module first.

The environment (docs/equivalence.md says how to make it): ``mmengine``, ``mmdet==3.3.0`` and
``mmcv-lite==2.1.0`` with ``numpy<2`` and the system torch. mmdet imports ``mmcv.ops``, whose compiled
``mmcv._ext`` mmcv-lite lacks: a stand-in module answers every operator with one that raises, so imports work and
an operator actually called fails loudly; the one RTMDet-Ins calls, NMS, is routed to torchvision's (the same
IoU rule for offset 0). Nothing of MMDetection is copied here: its models are built from the configs its package
ships (``mmdet/.mim/configs``).
"""

from __future__ import annotations

import importlib.machinery
import logging
import os
import sys
import types

import torch
import torchvision


class _Unavailable:
    def __init__(self, name: str):
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(f"mmcv._ext.{self.__name__}: no compiled operators in mmcv-lite")


class _ExtStandIn(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unavailable(name)


def _install_ext() -> None:
    if "mmcv._ext" in sys.modules:
        return
    module = _ExtStandIn("mmcv._ext")
    # no loader: mmengine's mmcv_full_available() stays False, as for mmcv-lite without the stand-in
    module.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", None)
    sys.modules["mmcv._ext"] = module


class _TorchvisionNMS(torch.autograd.Function):
    """mmcv.ops.nms's NMSop, by torchvision (offset 0 only)."""

    @staticmethod
    def forward(ctx, boxes, scores, iou_threshold, offset, score_threshold, max_num):
        if offset != 0:
            raise NotImplementedError("offset 1 boxes")
        index = torch.arange(len(scores), device=scores.device)
        if score_threshold > 0:
            keep = scores > score_threshold
            boxes, scores, index = boxes[keep], scores[keep], index[keep]
        kept = torchvision.ops.nms(boxes.float(), scores.float(), float(iou_threshold))
        return index[kept[:max_num] if max_num > 0 else kept]


_install_ext()
import mmcv.ops  # noqa: E402,F401  (after the stand-in)

sys.modules["mmcv.ops.nms"].NMSop = _TorchvisionNMS

import mmdet  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402

register_all_modules()
MMLogger.get_current_instance().setLevel(logging.WARNING)
CONFIGS = os.path.join(os.path.dirname(mmdet.__file__), ".mim", "configs")
RTMDET = {s: f"rtmdet/rtmdet-ins_{s}_8xb{16 if s == 'x' else 32}-300e_coco.py" for s in ("tiny", "s", "m", "l", "x")}
SOLOV2 = {"r50": "solov2/solov2_r50_fpn_1x_coco.py", "r50_3x": "solov2/solov2_r50_fpn_ms-3x_coco.py"}
CSPNEXT = {s: f"rtmdet/classification/cspnext-{s}_8xb256-rsb-a1-600e_in1k.py" for s in ("tiny", "s", "m", "l", "x")}


def load_config(relative: str, **model_changes) -> Config:
    """A shipped config, its backbone's ImageNet download removed (no network here), ``model_changes`` merged."""
    cfg = Config.fromfile(os.path.join(CONFIGS, relative))
    if cfg.model.get("backbone", {}).get("init_cfg"):
        cfg.model.backbone.init_cfg = None
    cfg.merge_from_dict({f"model.{k}": v for k, v in model_changes.items()})
    return cfg


def build(cfg: Config) -> torch.nn.Module:
    """The reference network of a config, initialised by its own init_weights (BatchNorm as on one GPU)."""
    from mmengine.model import revert_sync_batchnorm

    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    return model.eval()


# ---------------------------------------------------------------- weights that make outputs worth comparing
def _normal_(t: torch.Tensor, std: float, gen: torch.Generator, mean: float = 0.0) -> None:
    t.copy_(torch.empty_like(t).normal_(mean, std, generator=gen))


@torch.no_grad()
def perturb_norms(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Norm affine parameters drawn at random (BatchNorm and GroupNorm): init's ones and zeros would hide a
    mislaid scale or shift."""
    for m in model.modules():
        if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm)) and m.weight is not None:
            m.weight.copy_(torch.empty_like(m.weight).uniform_(0.7, 1.3, generator=gen))
            m.bias.copy_(torch.empty_like(m.bias).normal_(0.0, 0.1, generator=gen))


@torch.no_grad()
def calibrate_batchnorm(model: torch.nn.Module, forward, inputs: torch.Tensor) -> None:
    """Running statistics measured on real pictures (a train-mode pass, cumulative average), as a trained model's."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    forward(inputs)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


def _spread(conv: torch.nn.Conv2d, output: torch.Tensor, std: float) -> None:
    """Scale a predictor conv's weights so its output varies by ``std`` around its bias on these pictures."""
    varying = output - (conv.bias[None, :, None, None] if conv.bias is not None else 0)
    conv.weight.mul_(std / varying.std().clamp(min=1e-6))


def _through(layers: torch.nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


@torch.no_grad()
def make_rtmdet_distinct(ref: torch.nn.Module, x: torch.Tensor, gen: torch.Generator) -> None:
    """RTMDet-Ins's own init, then norms at random, statistics from the pictures, and predictors with a trained
    model's scale whatever the network's width: class logits -3 +- 1.5 (scores spread below and above the 0.05
    cut), box distances 2 +- 0.5 strides, dynamic kernels and prototypes whose mask logits reach tens."""
    perturb_norms(ref, gen)
    calibrate_batchnorm(ref, lambda t: ref.bbox_head(ref.neck(ref.backbone(t))), x)
    head = ref.bbox_head
    _normal_(head.mask_head.projection.weight, 0.05, gen)
    for cls, reg, ker in zip(head.rtm_cls, head.rtm_reg, head.rtm_kernel, strict=True):
        for conv, mean, std in ((cls, -3.0, 0.5), (reg, 2.0, 0.5), (ker, 0.0, 0.5)):
            _normal_(conv.weight, 0.05, gen)
            _normal_(conv.bias, std, gen, mean=mean)
    feats = ref.neck(ref.backbone(x))
    cls_feats = [_through(tower, f) for tower, f in zip(head.cls_convs, feats, strict=True)]
    ker_feats = [_through(tower, f) for tower, f in zip(head.kernel_convs, feats, strict=True)]
    for i, (c, k) in enumerate(zip(cls_feats, ker_feats, strict=True)):
        _spread(head.rtm_cls[i], head.rtm_cls[i](c), 1.5)
        _spread(head.rtm_reg[i], head.rtm_reg[i](c), 0.5)
        _spread(head.rtm_kernel[i], head.rtm_kernel[i](k), 0.5)
    _spread(head.mask_head.projection, head.mask_head(feats), 3.0)


@torch.no_grad()
def make_solov2_distinct(ref: torch.nn.Module, x: torch.Tensor, gen: torch.Generator) -> None:
    """Kaiming convs (SOLOv2's init would download ResNet-50), norms at random, statistics from the pictures, and
    predictors of a trained model's scale: category logits -2.5 +- 0.7 (scores around the 0.1 candidate cut),
    mask logits spread by about 4."""
    for m in ref.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=gen)
            if m.bias is not None:
                _normal_(m.bias, 0.01, gen)
    perturb_norms(ref, gen)
    calibrate_batchnorm(ref, lambda t: ref.mask_head(ref.neck(ref.backbone(t))), x)
    head = ref.mask_head
    _normal_(head.conv_cls.bias, 0.6, gen, mean=-2.5)
    _normal_(head.conv_kernel.bias, 0.05, gen)
    kernels, cls, feat = head(ref.neck(ref.backbone(x)))
    _spread(head.conv_cls, torch.cat([c.flatten(2) for c in cls], 2)[..., None], 0.7)
    flat = torch.cat([k.flatten(2) for k in kernels], 2)[0].T  # [cells, E]
    logits = flat @ feat[0].flatten(1)
    scale = 4.0 / logits.std().clamp(min=1e-6)
    head.conv_kernel.weight.mul_(scale)
    head.conv_kernel.bias.mul_(scale)


# ---------------------------------------------------------------- the reference's own pre-processing
def pipeline_inputs(ref: torch.nn.Module, cfg: Config, paths: list[str]) -> tuple[torch.Tensor, list]:
    """The reference's test pipeline (annotations not loaded) and data pre-processor: (batch, data samples)."""
    from mmcv.transforms import Compose

    steps = [s for s in cfg.test_dataloader.dataset.pipeline if s["type"] != "LoadAnnotations"]
    pipe = Compose(steps)
    datas = [pipe(dict(img_path=p, img_id=i)) for i, p in enumerate(paths)]
    batch = ref.data_preprocessor(dict(inputs=[d["inputs"] for d in datas],
                                       data_samples=[d["data_samples"] for d in datas]), False)  # fmt: skip
    return batch["inputs"], batch["data_samples"]


def set_test_size(cfg: Config, width: int, height: int, pad: bool) -> None:
    """The test pipeline's resize scale (and RTMDet's Pad canvas) set to width x height."""
    for step in cfg.test_dataloader.dataset.pipeline:
        if step["type"] == "Resize":
            step["scale"] = (width, height)
        if step["type"] == "Pad" and pad:
            step["size"] = (width, height)
