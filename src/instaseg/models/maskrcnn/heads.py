"""Mask R-CNN's RoI heads: torchvision's, with box post-processing that exports well, and the C4 design's box head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops

from instaseg.models.common.nms import per_class_detections


def per_class_postprocess(heads: RoIHeads, class_logits, box_regression, proposals, image_shapes):
    """torchvision's `RoIHeads.postprocess_detections` for one image, as `per_class_detections`: the same
    detections, with NMS within each class as one ONNX NonMaxSuppression once exported."""
    boxes = box_ops.clip_boxes_to_image(heads.box_coder.decode(box_regression, proposals), image_shapes[0])
    probs = F.softmax(class_logits, -1)
    kept = per_class_detections(boxes[:, 1:], probs, heads.score_thresh, heads.nms_thresh, heads.detections_per_img)
    return tuple([part] for part in kept)


class MaskRoIHeads(RoIHeads):
    """torchvision's RoIHeads (same modules, same state_dict keys) whose box post-processing is, while exporting,
    `per_class_postprocess`."""

    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):
        if torch.onnx.is_in_onnx_export():
            return per_class_postprocess(self, class_logits, box_regression, proposals, image_shapes)
        return super().postprocess_detections(class_logits, box_regression, proposals, image_shapes)


class Res5BoxHead(nn.Sequential):
    """res5 stage + global average pooling: the box head of a C4 detector."""

    def __init__(self, res5: nn.Module):
        super().__init__(res5, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
