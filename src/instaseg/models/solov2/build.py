"""SOLOv2 assembled from a recipe: an FPN backbone (P2..P5 and a pooled P6), the heads, the inference settings."""

from __future__ import annotations

from instaseg.models.common.backbones import build_fpn_backbone
from instaseg.models.solov2.decode import TestConfig
from instaseg.models.solov2.model import SOLOv2
from instaseg.models.solov2.recipe import DEFAULTS


def build(recipe: dict, num_classes: int, download_backbone: bool = False, freeze: bool = False) -> SOLOv2:
    """SOLOv2 for ``num_classes`` foreground classes, randomly initialised unless the backbone is."""
    cfg = {**DEFAULTS, **recipe["model"]}
    backbone = build_fpn_backbone(cfg, download_backbone, freeze, levels=[2, 3, 4, 5], extra_pool=True)
    test_cfg = TestConfig(
        cls_score_thr=float(cfg["cls_score_thr"]),
        mask_thr=float(cfg["mask_thr"]),
        max_candidates=int(cfg["max_candidates"]),
        nms_pre=int(cfg["nms_pre"]),
        nms_kernel=str(cfg["nms_kernel"]),
        nms_sigma=float(cfg["nms_sigma"]),
        score_threshold=float(recipe["eval"]["score_threshold"]),
        max_dets=int(recipe["eval"]["max_dets"]),
    )
    return SOLOv2(backbone, num_classes, cfg, recipe["input"]["min_size"], recipe["input"]["max_size"], test_cfg)
