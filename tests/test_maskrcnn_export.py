"""The exported graph's own versions of torchvision's box post-processing and RoI-level merge give torchvision's
results: in eager mode and, through ONNX Runtime and OpenVINO, as exported ops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops
from torchvision.ops import poolers

from instaseg.models.common.nms import PerClassNMS
from instaseg.models.common.rcnn_export import merge_levels
from instaseg.models.maskrcnn.heads import per_class_postprocess


def _overlapping(k: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes [K,N,4] crowded into a small area (plenty of suppression) and scores [K,N]."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, n, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 10 + torch.rand(k, n, 2, generator=g) * 60], dim=-1)
    return boxes, torch.rand(k, n, generator=g)


def _per_class_reference(boxes, scores, iou, threshold) -> set[tuple[int, int]]:
    k, n = scores.shape
    kept = set()
    for c in range(k):
        idx = torch.nonzero(scores[c] > threshold).squeeze(1)
        kept |= {(c, int(i)) for i in idx[box_ops.nms(boxes[c, idx], scores[c, idx], iou)]}
    return kept


class _NMSModule(torch.nn.Module):
    def forward(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return PerClassNMS.apply(boxes, scores, 0.5, 0.3)


def test_per_class_nms_exports_as_the_batched_onnx_op(tmp_path):
    import onnxruntime as ort
    import openvino as ov

    path = tmp_path / "nms.onnx"
    example = _overlapping(3, 20, seed=0)
    torch.onnx.export(
        _NMSModule(),
        example,
        str(path),
        input_names=["boxes", "scores"],
        dynamic_axes={"boxes": [0, 1], "scores": [0, 1]},
        opset_version=17,
        dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for k, n, seed in [(7, 300, 1), (1, 5, 2), (4, 0, 3)]:
        boxes, scores = _overlapping(k, n, seed)
        expected = _per_class_reference(boxes, scores, 0.5, 0.3)
        assert {(int(c), int(i)) for c, _, i in _NMSModule()(boxes, scores)} == expected  # eager
        feed = {"boxes": boxes.numpy(), "scores": scores.numpy()}
        assert {(int(c), int(i)) for c, _, i in session.run(None, feed)[0]} == expected
        if n:  # OpenVINO is not asked for zero boxes here; the graph never gives its NMS fewer than one RoI
            got = next(iter(compiled(feed).values()))
            assert {(int(c), int(i)) for c, _, i in got if c >= 0} == expected


@pytest.mark.parametrize("score_thresh", [0.0, 0.05])
def test_postprocess_detections_equals_torchvision(score_thresh):
    heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, score_thresh, 0.5, 100)
    g = torch.Generator().manual_seed(0)
    classes, n = 21, 200
    proposals = [_overlapping(1, n, seed=5)[0][0]]
    logits = torch.randn(n, classes, generator=g) * 3
    regression = torch.randn(n, classes * 4, generator=g) * 0.5
    regression[:5, 4:8] = torch.tensor([0.0, 0.0, -20.0, 0.0])  # collapsed boxes: removed as too small
    image_shapes = [(120, 110)]
    want = RoIHeads.postprocess_detections(heads, logits, regression, proposals, image_shapes)
    got = per_class_postprocess(heads, logits, regression, proposals, image_shapes)
    assert len(got[0][0]) == len(want[0][0]) == 100
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a[0], b[0])


def test_merge_levels_equals_torchvision():
    g = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 4, (50,), generator=g)
    per_level = [torch.randn(int((levels == lvl).sum()), 3, 2, 2, generator=g) for lvl in range(4)]
    torch.testing.assert_close(merge_levels(levels, per_level), poolers._onnx_merge_levels(levels, per_level))
    empty = torch.zeros(0, dtype=torch.long)
    assert merge_levels(empty, [torch.zeros(0, 3, 2, 2)] * 2).shape == (0, 3, 2, 2)


def test_scores_keep_their_order():
    """Detections come out best first, as torchvision returns them."""
    heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, 0.0, 0.5, 50)
    g = torch.Generator().manual_seed(1)
    boxes, scores, _ = per_class_postprocess(
        heads, torch.randn(80, 5, generator=g), torch.zeros(80, 20), [_overlapping(1, 80, 2)[0][0]], [(200, 200)]
    )
    assert np.all(np.diff(scores[0].numpy()) <= 0)
