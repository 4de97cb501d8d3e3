"""The errors behind tests/test_paddle_rcnn.py, as the tables of docs/equivalence.md: our Mask R-CNN, Cascade Mask
R-CNN and SOLOv2 with the reference's random weights of tests/fixtures/paddle (reduced widths) against
PaddleDetection's outputs.

    PYTHONPATH=src python3 tools/paddle_rcnn_equivalence.py

Each stage runs from the reference's output of the stage before (its FPN maps, its proposals, its boxes), with the
test module's helpers; it prints each stage's max abs and max relative error (relative to the reference's largest
value) and, for the R-CNNs, the reference's detections on its proposals found among ours (worst box corner, score)
and the reference's masks pasted by the recipe's rule and by torchvision's against PaddleDetection's own paste.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from paddle_equivalence import row  # noqa: E402

import test_paddle_rcnn as T  # noqa: E402
from instaseg.models.common.backbones import stage_features  # noqa: E402
from instaseg.models.factory import build_model  # noqa: E402


def model_of(arch: str, monkeypatch):
    path = T.FIXTURES / f"{arch}.pdparams"
    return build_model(T.reduced_recipe(arch, monkeypatch), 80, weights=str(path)).eval()


def features(model, data: dict, x: torch.Tensor) -> tuple[list[str], list[torch.Tensor]]:
    body = stage_features(model.backbone.body, x, model.backbone.nhwc)
    out = [row(f"backbone C{i + 2}", data[f"backbone.{i}"], f) for i, f in enumerate(body.values())]
    fpn = model.backbone.fpn({str(i): torch.from_numpy(data[f"backbone.{i}"]) for i in range(4)})
    out += [row(f"FPN P{i + 2}", data[f"fpn.{i}"], f) for i, f in enumerate(fpn.values())]
    return out, [torch.from_numpy(data[f"fpn.{i}"]) for i in range(len(fpn))]


def detections(ref: np.ndarray, ours) -> str:
    """The reference's detections (on its proposals), each paired with ours of its label and nearest box."""
    box = score = 0.0
    for label, s, *b in ref.astype(np.float64):
        same = torch.nonzero(ours.labels == int(label) + 1)[:, 0]
        gaps = (ours.boxes[same] - torch.tensor(b)).abs().amax(1)
        j = same[gaps.argmin()]
        box, score = max(box, float(gaps.min())), max(score, abs(float(ours.scores[j]) - s))
    n = len(ref)
    return f"| detections on the reference's proposals | {box:.3g} px | score {score:.2g}; {n} of {n} found |"


def rcnn(arch: str, monkeypatch) -> list[str]:
    data, _ = T.fixture(arch)
    model = model_of(arch, monkeypatch)
    with torch.no_grad():
        x = T.network_input(model, data)
        size = [tuple(x.shape[-2:])]
        out, fpn = features(model, data, x)
        feats = dict(zip(["0", "1", "2", "3", "pool"], fpn, strict=True))
        logits, deltas = model.rpn.head(list(feats.values()))
        out += [row(f"RPN logits P{i + 2}", data[f"rpn_logits.{i}"], t) for i, t in enumerate(logits)]
        out += [row(f"RPN deltas P{i + 2}", data[f"rpn_deltas.{i}"], t) for i, t in enumerate(deltas)]
        heads, proposals = model.roi_heads, [torch.from_numpy(data["proposals"])]
        ref = data["det_input"]
        boxes, labels = [torch.from_numpy(ref[:, 2:].copy())], torch.from_numpy(ref[:, 0]).long() + 1
        if arch == "cascade_maskrcnn":
            probs = heads.cascade(feats, proposals, size)[1][0]
            masks = heads._mask_logits(feats, boxes, size)
        else:
            scores, box_deltas = heads.box_predictor(heads.box_head(heads.box_roi_pool(feats, proposals, size)))
            probs = F.softmax(scores, -1)
            masks = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(feats, boxes, size)))
        what = "class probabilities (stages' mean)" if arch == "cascade_maskrcnn" else "class probabilities"
        out.append(row(f"box head {what}", data["box_probs"], torch.cat([probs[:, 1:], probs[:, :1]], 1)))
        if arch == "maskrcnn":
            out.append(row("box head deltas", data["box_deltas"], box_deltas[:, 4:]))
        out.append(row("mask head probabilities (reference boxes)", data["mask_probs"],
                       masks[torch.arange(len(labels)), labels].sigmoid()))  # fmt: skip
        out.append(detections(ref, model.detect(feats, proposals, size)[0]))
    for rule in (model.mask_paste, "torchvision"):
        ours, theirs = T.pasted_masks(arch, model, rule)
        iou = min((o & t).sum() / max((o | t).sum(), 1) for o, t in zip(ours, theirs, strict=True))
        out.append(f"| masks pasted into {theirs.shape[1]}x{theirs.shape[2]} ({rule}) vs PaddleDetection's paste | "
                   f"{int((ours != theirs).sum())} of {int(theirs.sum())} foreground px differ | min IoU {iou:.4f} |")
    return out


def solov2(monkeypatch) -> list[str]:
    from instaseg.models.solov2.decode import point_nms

    data, _ = T.fixture("solov2")
    model = model_of("solov2", monkeypatch)
    with torch.no_grad():
        out, feats = features(model, data, T.network_input(model, data))
        out.append(row("mask feature (stride 4)", data["mask_feat"], model.mask_head(feats[:4])))
        cls, kernels = model.head(feats)
        for i, (c, k) in enumerate(zip(cls, kernels, strict=True)):
            out.append(row(f"class scores after point NMS, grid {i}", data[f"cate.{i}"],
                           point_nms(c.sigmoid()).permute(0, 2, 3, 1)))  # fmt: skip
            out.append(row(f"dynamic kernels, grid {i}", data[f"kernel.{i}"], k))
    return out


def main() -> None:
    torch.set_num_threads(1)
    header = ["| stage | max abs error | max relative error |", "| --- | --- | --- |"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        for title, lines in (("Mask R-CNN (reduced)", rcnn("maskrcnn", monkeypatch)),
                             ("Cascade Mask R-CNN (reduced)", rcnn("cascade_maskrcnn", monkeypatch)),
                             ("SOLOv2 (reduced)", solov2(monkeypatch))):  # fmt: skip
            print(f"\n#### {title}\n", *header, *lines, sep="\n")


if __name__ == "__main__":
    main()
