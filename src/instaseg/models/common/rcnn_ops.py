"""The R-CNN operations whose conventions differ between publishers, with the switch that picks one:

- `RoIPooler`: torchvision's `MultiScaleRoIAlign` (same level mapping, same exported graph) that can also sample
  at half-pixel-shifted positions (``aligned``, Detectron2's ROIAlignV2). torchvision's own pooler cannot; the
  published PaddleDetection and mmdetection R-CNN configs set ``aligned: True`` (PaddleDetection's code has forced
  it off since 2024, its weights were trained with it on).
- `CellAnchorGenerator`: torchvision's `AnchorGenerator` (``exact=False``) or the exact anchors of
  PaddleDetection, mmdetection and Detectron2. torchvision rounds the cell anchors to whole pixels (a 32 px anchor at
  ratio 0.5 is 46 px wide, 45.25 elsewhere) and takes a level's stride as padded size // map size: on an input padded
  to 32 but not 64, the max-pooled P6 map of a 800 px side has 13 cells and its stride comes out 61, not 64, so its
  anchors drift up to 36 px from where the others place them.
- `ExactPasteTransform`: torchvision's `GeneralizedRCNNTransform` (through `CanvasTransform`, which can also round
  the resized sides as PaddleDetection's ``Resize`` does: ``size_rounding: round``) whose eval-mode output pastes
  each box's [M,M] mask the way Detectron2, mmdetection and PaddleDetection do (``mask_paste: exact``): the map
  spans the box exactly and is sampled bilinearly at every pixel centre, zero beyond it. torchvision pads the map by
  one pixel, enlarges the box to match and truncates it to whole pixels, which moves a small object's mask by up to
  a pixel and changes its outline (mean mask IoU 0.3-0.6 against PaddleDetection's on its own detections).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import MultiScaleRoIAlign, poolers, roi_align

from instaseg.models.canvas import CanvasTransform


class RoIPooler(MultiScaleRoIAlign):
    """`MultiScaleRoIAlign` with RoIAlign's ``aligned`` flag; unaligned, it is torchvision's pooler unchanged."""

    def __init__(self, featmap_names: list[str], output_size: int, sampling_ratio: int, aligned: bool = False):
        super().__init__(featmap_names, output_size, sampling_ratio)
        self.aligned = aligned

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        if not self.aligned:
            return super().forward(x, boxes, image_shapes)
        x_filtered = poolers._filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = poolers._setup_scales(
                x_filtered, image_shapes, self.canonical_scale, self.canonical_level
            )
        rois = poolers._convert_to_roi_format(boxes)
        if len(x_filtered) == 1:
            return self._pool(x_filtered[0], rois, self.scales[0])
        levels = self.map_levels(boxes)
        # torchvision's level-by-level pooling, merged back into RoI order the same way (a gather once exported)
        per_level = [
            self._pool(feature, rois[torch.where(levels == level)[0]], scale)
            for level, (feature, scale) in enumerate(zip(x_filtered, self.scales, strict=True))
        ]
        if torchvision._is_tracing():
            return poolers._onnx_merge_levels(levels, per_level)
        result = per_level[0].new_zeros((len(rois),) + per_level[0].shape[1:])
        for level, pooled in enumerate(per_level):
            result[torch.where(levels == level)[0]] = pooled.to(result.dtype)
        return result

    def _pool(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        return roi_align(feature, rois, self.output_size, scale, self.sampling_ratio, aligned=True)


class CellAnchorGenerator(AnchorGenerator):
    """torchvision's `AnchorGenerator` (same anchor order: ratio-major within a location); ``exact``: cell anchors
    not rounded, and each level's stride the power of two its map size implies (4, 8, ... 64), whatever the
    padding."""

    def __init__(self, sizes, aspect_ratios, exact: bool = False):
        self.exact = exact  # set first: the base class builds the cell anchors in __init__
        super().__init__(sizes, aspect_ratios)

    def forward(self, image_list, feature_maps: list[Tensor]) -> list[Tensor]:
        if not self.exact:
            return super().forward(image_list, feature_maps)
        size = image_list.tensors.shape[-2:]
        grids = [f.shape[-2:] for f in feature_maps]
        device = feature_maps[0].device
        # a level's stride is a constant of the network: a traced graph may hold it as one
        strides = [[self._stride(s, n, device) for s, n in zip(size, g, strict=True)] for g in grids]
        self.set_cell_anchors(feature_maps[0].dtype, device)
        anchors = torch.cat(self.grid_anchors(grids, strides))
        return [anchors for _ in image_list.image_sizes]

    @staticmethod
    def _stride(image: int, cells: int, device) -> Tensor:
        return torch.tensor(2 ** round(math.log2(int(image) / int(cells))), device=device)

    def generate_anchors(self, scales, aspect_ratios, dtype=torch.float32, device=torch.device("cpu")) -> Tensor:
        if not self.exact:
            return super().generate_anchors(scales, aspect_ratios, dtype, device)
        scales = torch.as_tensor(scales, dtype=dtype, device=device)
        aspect_ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
        h_ratios = torch.sqrt(aspect_ratios)
        ws = ((1 / h_ratios)[:, None] * scales[None, :]).view(-1)
        hs = (h_ratios[:, None] * scales[None, :]).view(-1)
        return torch.stack([-ws, -hs, ws, hs], dim=1) / 2


def paste_masks_exact(masks: Tensor, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """[N,1,H,W] probabilities: each [M,M] map of ``masks`` [N,M,M] spanning its box of ``boxes`` [N,4] exactly,
    sampled at every pixel centre of the image (bilinear, zero beyond the map; Detectron2's paste_masks_in_image)."""
    h, w = image_size
    if masks.shape[0] == 0:
        return masks.new_zeros((0, 1, h, w))
    x0, y0, x1, y1 = boxes[:, :, None].unbind(1)
    gx = (torch.arange(w, device=masks.device, dtype=masks.dtype) + 0.5 - x0) / (x1 - x0) * 2 - 1
    gy = (torch.arange(h, device=masks.device, dtype=masks.dtype) + 0.5 - y0) / (y1 - y0) * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(-1, h, -1), gy[:, :, None].expand(-1, -1, w)], dim=3)
    return F.grid_sample(masks[:, None], grid, align_corners=False)


class ExactPasteTransform(CanvasTransform):
    """torchvision's transform (the same resizing, normalisation and padding; sides rounded as ``size_rounding``
    says, resized in the order ``resize_order`` names) whose eval-mode post-processing pastes the masks with
    `paste_masks_exact` into each original image."""

    def __init__(
        self,
        min_size: int,
        max_size: int,
        mean: list[float],
        std: list[float],
        size_rounding: str = "floor",
        resize_order: str = "float",
        normalisation: str = "unit",
        size_divisible: int = 32,
    ) -> None:
        # no canvas, zero padding
        super().__init__(
            min_size, max_size, mean, std, False, None, size_rounding, resize_order, normalisation, size_divisible
        )

    def postprocess(self, result, image_shapes, original_image_sizes):
        if self.training:
            return result
        for pred, size, original in zip(result, image_shapes, original_image_sizes, strict=True):
            pred["boxes"] = resize_boxes(pred["boxes"], size, original)
            if "masks" in pred:
                pred["masks"] = paste_masks_exact(pred["masks"][:, 0], pred["boxes"], original)
        return result
