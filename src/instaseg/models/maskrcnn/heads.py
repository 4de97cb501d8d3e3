"""Mask R-CNN's RoI heads: torchvision's, with box post-processing that exports well, and the C4 design's box head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_loss
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
    `per_class_postprocess`, and whose box loss has its smooth-L1 beta a setting (torchvision fixes it at 1/9)."""

    def __init__(self, *args, box_loss_beta: float = 1 / 9, **kwargs):
        super().__init__(*args, **kwargs)
        self.box_loss_beta = float(box_loss_beta)

    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):
        if torch.onnx.is_in_onnx_export():
            return per_class_postprocess(self, class_logits, box_regression, proposals, image_shapes)
        return super().postprocess_detections(class_logits, box_regression, proposals, image_shapes)

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        return [], self.losses(features, proposals, image_shapes, targets)

    def losses(self, features, proposals, image_shapes, targets) -> dict[str, torch.Tensor]:
        """torchvision's training path (sampling, box and mask losses) with the box loss's beta."""
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        features_ = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(features_)
        labels_, targets_ = torch.cat(labels), torch.cat(regression_targets)
        pos = torch.where(labels_ > 0)[0]
        deltas = box_regression.reshape(len(labels_), -1, 4)[pos, labels_[pos]]
        box_loss = F.smooth_l1_loss(deltas, targets_[pos], beta=self.box_loss_beta, reduction="sum")
        losses = {"loss_classifier": F.cross_entropy(class_logits, labels_), "loss_box_reg": box_loss / len(labels_)}
        fg = [torch.where(lab > 0)[0] for lab in labels]
        boxes = [p[i] for p, i in zip(proposals, fg, strict=True)]
        mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))
        gt_masks, gt_labels = [t["masks"] for t in targets], [t["labels"] for t in targets]
        matched = [m[i] for m, i in zip(matched_idxs, fg, strict=True)]
        losses["loss_mask"] = maskrcnn_loss(mask_logits, boxes, gt_masks, gt_labels, matched)
        return losses


class Res5BoxHead(nn.Sequential):
    """res5 stage + global average pooling: the box head of a C4 detector."""

    def __init__(self, res5: nn.Module):
        super().__init__(res5, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
