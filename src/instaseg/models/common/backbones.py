"""Feature extractors for the detectors: torchvision networks where torchvision has them, timm otherwise.

Every backbone is described by a `BackboneSpec` and built into a stage extractor (torchvision's
IntermediateLayerGetter or a timm features_only model) whose outputs C2..C5 (strides 4, 8, 16, 32)
`stage_features` returns as NCHW tensors. `FeaturePyramidBackbone` puts an FPN on top of the
chosen levels (`build_fpn_backbone` from a model section); `build_c4_backbone` gives the single stride-16 map and the
res5 stage for a C4 detector.

Module names mirror torchvision's detection models (``body``, ``fpn``, ``body.layer1`` ...), so torchvision's
COCO checkpoints load into the matching recipes by name.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models import get_model, get_weight
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from instaseg.errors import UserError
from instaseg.models.weights.download import download_guard, timm_download_guard

NORMS = ("frozen_bn", "bn")
LEVELS = (2, 3, 4, 5)  # C2..C5: the outputs of the four stages at strides 4, 8, 16, 32


@dataclass(frozen=True)
class BackboneSpec:
    """Where a backbone comes from and how to read its C2..C5 stages."""

    source: str  # "torchvision" or "timm"
    model: str  # torchvision builder name or timm model name
    imagenet: str  # torchvision weight enum ("ResNet50_Weights.IMAGENET1K_V1") or timm pretrained tag
    out_indices: tuple[int, ...] = (1, 2, 3, 4)  # timm stage indices of C2..C5
    nhwc: bool = False  # the network returns channels-last features (Swin)
    timm_kwargs: tuple[tuple[str, object], ...] = ()


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec("torchvision", "resnet18", "ResNet18_Weights.IMAGENET1K_V1"),
    "resnet50": BackboneSpec("torchvision", "resnet50", "ResNet50_Weights.IMAGENET1K_V1"),
    "resnet101": BackboneSpec("torchvision", "resnet101", "ResNet101_Weights.IMAGENET1K_V1"),
    "resnext101_32x8d": BackboneSpec("torchvision", "resnext101_32x8d", "ResNeXt101_32X8D_Weights.IMAGENET1K_V1"),
    "mobilenet_v3_large": BackboneSpec("torchvision", "mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V1"),
    # ResNet-18's layout at half width (32..256 channels, about 1/4 of its convolution cost); no pretrained weights.
    "resnet18_slim": BackboneSpec("timm", "resnet18", "", timm_kwargs=(("channels", (32, 64, 128, 256)),)),
    "resnet50d": BackboneSpec("timm", "resnet50d", "ra2_in1k"),
    "resnet101d": BackboneSpec("timm", "resnet101d", "ra2_in1k"),
    # ResNeXt-101 64x4d with ResNet-D's deep stem and average-pool shortcuts (PaddleClas' ResNeXt101_vd_64x4d, the
    # backbone of PaddleDetection's mask_rcnn_x101_vd_64x4d_fpn): timm's resnet101d at 64 groups of width 4. timm
    # publishes no ImageNet weights for it.
    "resnext101_64x4d_vd": BackboneSpec("timm", "resnet101d", "", timm_kwargs=(("cardinality", 64), ("base_width", 4))),
    "resnest50d": BackboneSpec("timm", "resnest50d", "in1k"),
    "convnext_tiny": BackboneSpec("timm", "convnext_tiny", "fb_in1k", out_indices=(0, 1, 2, 3)),
    # Swin is built for 224 px; dynamic_img_size pads each stage to whole windows and builds the shifted-window
    # masks for the actual size, so any input divisible by 32 (the detector pads to 32) works at any resolution.
    "swin_tiny": BackboneSpec(
        "timm",
        "swin_tiny_patch4_window7_224",
        "ms_in1k",
        out_indices=(0, 1, 2, 3),
        nhwc=True,
        timm_kwargs=(("dynamic_img_size", True),),
    ),
    "efficientnet_b2": BackboneSpec("timm", "efficientnet_b2", "ra_in1k"),
}


def backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}", record="model.backbone")
    return BACKBONES[name]


@dataclass(frozen=True)
class BodyInfo:
    """What the detector needs to know about a stage extractor's outputs."""

    channels: list[int]  # of C2..C5
    stage_prefixes: list[str]  # parameter-name prefix of each stage, to freeze the early ones
    nhwc: bool = False


def stage_features(body: nn.Module, x: torch.Tensor, nhwc: bool) -> dict[str, torch.Tensor]:
    """{"c2": ..., "c5": ...} as NCHW tensors from a torchvision IntermediateLayerGetter or a timm features model."""
    feats = body(x)
    feats = list(feats.values()) if isinstance(feats, dict) else list(feats)
    if nhwc:
        feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
    return {f"c{level}": f for level, f in zip(LEVELS, feats, strict=True)}


def check_backbone_and_norm(cfg: dict, bad: Callable[[str, str], Exception]) -> None:
    """The backbone name is known and its BatchNorm mode one of NORMS (a model section's shared rules)."""
    backbone_spec(cfg["backbone"])
    if cfg["norm"] not in NORMS:
        raise bad("norm", f"must be one of {', '.join(NORMS)}")


def freeze_stages(body: nn.Module, stage_prefixes: list[str], frozen_stages: int) -> None:
    """Stop gradients in the stem (0) and the first `frozen_stages` stages, as pretrained detectors do."""
    if frozen_stages < 0:
        return
    params = list(body.named_parameters())
    if frozen_stages == 0:
        boundary = next(i for i, (n, _) in enumerate(params) if n.startswith(stage_prefixes[0]))
    else:
        prefix = stage_prefixes[min(frozen_stages, len(stage_prefixes)) - 1]
        boundary = max(i for i, (n, _) in enumerate(params) if n.startswith(prefix)) + 1
    for _, p in params[:boundary]:
        p.requires_grad_(False)


def _torchvision_network(spec: BackboneSpec, norm: str, pretrained: bool) -> nn.Module:
    kwargs = {"norm_layer": FrozenBatchNorm2d} if norm == "frozen_bn" else {}
    if not pretrained:
        return get_model(spec.model, weights=None, **kwargs)
    weights = get_weight(spec.imagenet)
    with download_guard(weights.url):
        return get_model(spec.model, weights=weights, **kwargs)


def _timm_network(spec: BackboneSpec, norm: str, pretrained: bool) -> nn.Module:
    import timm
    from timm.layers import freeze_batch_norm_2d

    if pretrained and not spec.imagenet:
        raise UserError(f"backbone {spec.model} at this width has no ImageNet weights; use --weights none")
    name = f"{spec.model}.{spec.imagenet}" if spec.imagenet else spec.model
    kwargs = dict(features_only=True, out_indices=spec.out_indices, **dict(spec.timm_kwargs))
    if pretrained:
        with timm_download_guard(name):
            net = timm.create_model(name, pretrained=True, **kwargs)
    else:
        net = timm.create_model(name, pretrained=False, **kwargs)
    if norm == "frozen_bn":
        net = freeze_batch_norm_2d(net)
    return net


def _mobilenet_stage_ends(features: nn.Sequential) -> list[int]:
    """Index of the last block at strides 4, 8, 16, 32 (found by a tiny forward: the blocks do not say)."""
    ends: dict[int, int] = {}
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        for i, block in enumerate(features):
            x = block(x)
            ends[64 // x.shape[-1]] = i
    return [ends[s] for s in (4, 8, 16, 32)]


def build_feature_body(name: str, norm: str, pretrained: bool) -> tuple[nn.Module, BodyInfo]:
    """C2..C5 extractor for a named backbone; `norm` applies to its BatchNorm layers (frozen or trainable)."""
    spec = backbone_spec(name)
    if norm not in NORMS:
        raise UserError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}", record="model.norm")
    if spec.source == "timm":
        net = _timm_network(spec, norm, pretrained)
        prefixes = [m.replace(".", "_") + "." for m in net.feature_info.module_name()]
        if not hasattr(net, "return_layers"):  # EfficientNetFeatures keeps dotted names
            prefixes = [m + "." for m in net.feature_info.module_name()]
        return net, BodyInfo(list(net.feature_info.channels()), prefixes, nhwc=spec.nhwc)
    net = _torchvision_network(spec, norm, pretrained)
    if spec.model.startswith("mobilenet"):
        ends = _mobilenet_stage_ends(net.features)
        channels = [net.features[i].out_channels for i in ends]
        body = IntermediateLayerGetter(net.features, {str(i): f"c{lvl}" for i, lvl in zip(ends, LEVELS, strict=True)})
        return body, BodyInfo(channels, [f"{i}." for i in ends])
    stages = ["layer1", "layer2", "layer3", "layer4"]
    channels = [_stage_channels(getattr(net, s)) for s in stages]
    body = IntermediateLayerGetter(net, {s: f"c{lvl}" for s, lvl in zip(stages, LEVELS, strict=True)})
    return body, BodyInfo(channels, [f"{s}." for s in stages])


def _stage_channels(stage: nn.Sequential) -> int:
    last = stage[-1]
    return (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels


class FeaturePyramidBackbone(nn.Module):
    """A stage extractor with an FPN on the chosen levels (and a max-pooled extra level, as torchvision does)."""

    def __init__(
        self,
        body: nn.Module,
        info: BodyInfo,
        levels: list[int],
        out_channels: int,
        extra_pool: bool = True,
        norm_layer: type[nn.Module] | None = None,
    ):
        super().__init__()
        self.body = body
        self.nhwc = info.nhwc
        self.levels = list(levels)
        in_channels = [info.channels[LEVELS.index(lvl)] for lvl in self.levels]
        extra = LastLevelMaxPool() if extra_pool else None
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra, norm_layer=norm_layer)
        self.out_channels = out_channels

    @property
    def featmap_names(self) -> list[str]:
        """Names of the FPN maps the RoI heads read (the pooled extra level feeds only the RPN)."""
        return [str(i) for i in range(len(self.levels))]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = stage_features(self.body, x, self.nhwc)
        selected = OrderedDict((str(i), feats[f"c{lvl}"]) for i, lvl in enumerate(self.levels))
        return self.fpn(selected)


def build_fpn_backbone(
    cfg: dict,
    download: bool,
    freeze: bool,
    levels: list[int] | None = None,
    extra_pool: bool | None = None,
    norm_layer: type[nn.Module] | None = None,
) -> FeaturePyramidBackbone:
    """A model section's backbone (``backbone``, ``norm``, ``frozen_stages`` when ``freeze``) with an FPN of
    ``fpn_channels`` on its ``levels`` (the section's unless given), max-pooled extra level per ``extra_pool``."""
    body, info = build_feature_body(cfg["backbone"], cfg["norm"], download)
    if freeze:
        freeze_stages(body, info.stage_prefixes, int(cfg["frozen_stages"]))
    levels = cfg["levels"] if levels is None else levels
    extra_pool = cfg["extra_pool"] if extra_pool is None else extra_pool
    return FeaturePyramidBackbone(body, info, levels, int(cfg["fpn_channels"]), extra_pool, norm_layer)


class C4Backbone(nn.Module):
    """The stride-16 output of a ResNet's res4 stage as the only feature map (Detectron2's C4 design)."""

    def __init__(self, body: nn.Module, out_channels: int):
        super().__init__()
        self.body = body
        self.out_channels = out_channels
        self.featmap_names = ["0"]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict([("0", self.body(x)["0"])])


def build_c4_backbone(name: str, norm: str, pretrained: bool, frozen_stages: int) -> tuple[C4Backbone, nn.Module]:
    """(res2..res4 backbone, res5 stage). The res5 stage becomes the RoI head, as in Detectron2's R50-C4."""
    spec = backbone_spec(name)
    if spec.source != "torchvision" or not spec.model.startswith("res"):
        raise UserError(f"the C4 design needs a torchvision ResNet backbone, not {name!r}", record="model.backbone")
    net = _torchvision_network(spec, norm, pretrained)
    res5 = net.layer4
    body = IntermediateLayerGetter(net, {"layer3": "0"})  # drops layer4, avgpool and fc
    freeze_stages(body, ["layer1.", "layer2.", "layer3."], min(frozen_stages, 3))
    return C4Backbone(body, _stage_channels(net.layer3)), res5
