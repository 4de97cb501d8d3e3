"""The R-CNN family's exported graph: torchvision's RPN NMS and RoI-level merge in forms that export well.

- The RPN's ``batched_nms`` becomes `instaseg.models.common.nms.class_separated_nms`: torchvision's
  ``boxes + offsets[:, None]`` turns "no box left" into one stale row in OpenVINO (its CPU plugin broadcasts
  [0,4] + [0,1] to one row); shifting column by column adds equal shapes.
- `merge_levels`: torchvision scatters each level's pooled RoIs into a zero tensor through an index expanded to
  every element; in ONNX Runtime that took 160 ms of a ResNet-50-FPN image (1000 RoIs), a gather of rows a few.

`tracing_functions` swaps both into torchvision's modules while a graph is traced for export, and only then (eager
calls, e.g. counting FLOPs, run torchvision's own).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torchvision.ops import boxes as box_ops
from torchvision.ops import poolers

from instaseg.models.common.nms import class_separated_nms


def merge_levels(levels: torch.Tensor, per_level: list[torch.Tensor]) -> torch.Tensor:
    """torchvision's `_onnx_merge_levels` (RoIs pooled level by level, put back in RoI order) as one row gather."""
    order = torch.cat([torch.where(levels == level)[0] for level in range(len(per_level))])
    return torch.cat(per_level)[torch.argsort(order)]


@contextmanager
def tracing_functions() -> Iterator[None]:
    """While the graph is traced: the RPN's `batched_nms` is the empty-safe one, pooled RoIs merge by a gather.
    Both are module functions torchvision looks up at call time; nothing else is replaced."""
    saved = box_ops.batched_nms, poolers._onnx_merge_levels
    box_ops.batched_nms, poolers._onnx_merge_levels = class_separated_nms, merge_levels
    try:
        yield
    finally:
        box_ops.batched_nms, poolers._onnx_merge_levels = saved
