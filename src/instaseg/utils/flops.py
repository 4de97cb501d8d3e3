"""FLOPs of one call, the single counter every measurement in instaseg uses (zoo, export, benchmark)."""

from __future__ import annotations

from typing import Any

import torch


def count_flops(fn: Any, *inputs: Any) -> int:
    """FLOPs of ``fn(*inputs)`` by torch's FlopCounterMode: convolutions and matrix products, a multiply-add
    counting 2; element-wise ops, normalisation, pooling, RoIAlign and NMS are not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(*inputs)
    return counter.get_total_flops()
