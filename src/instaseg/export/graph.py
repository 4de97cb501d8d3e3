"""The exported network: a detector's `export_forward` on one pre-processed image, masks left at low resolution.

Why this cut: a detector's full forward also resizes (pre-processing) and pastes every mask at full image size
(post-processing). Both stay outside the graph and are shared with the eager backend
(`instaseg.inference.preprocess`, `instaseg.inference.postprocess`): pasting in the graph is the slow part of
exported instance segmenters and its loop is what trips exporters, and one pre/post-processing for every backend
is what makes parity hold by construction.

Why one image per call: two-stage detectors loop over the images of a batch in Python (torchvision's RPN and box
post-processing); a traced graph unrolls that loop, fixing the batch size and the output layout. A graph for one
image has fixed output names (`instaseg.models.detector.OUTPUT_NAMES`) whose first dimension is the number of
detections, zero included. The backends loop over a batch, giving each image only its own padding, exactly as
the eager model sees a batch of one.
"""

from __future__ import annotations

import torch
from torch import nn

from instaseg.models.detector import Detector


class DetectorGraph(nn.Module):
    """``forward(images [1,3,H,W] normalised and padded, image_size int64 [2] = (h, w) before padding)`` ->
    boxes [N,4] xyxy in the resized frame (clipped to ``image_size``), scores [N], labels [N] int64 (1..K) and
    mask probabilities in the detector's ``mask_stride`` frame: the `RawOutput` of the eager path."""

    def __init__(self, model: Detector):
        super().__init__()
        if not isinstance(model, Detector):
            raise TypeError(f"{type(model).__name__} is not an instaseg Detector")
        self.model = model

    def forward(self, images: torch.Tensor, image_size: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.export_forward(images, image_size)
