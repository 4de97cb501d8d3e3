"""The errors behind tests/test_paddle_weights.py, as the tables of docs/equivalence.md: our models with the
reference's random weights of tests/fixtures/paddle (reduced widths) against PaddleDetection's outputs.

    PYTHONPATH=src python3 tools/paddle_equivalence.py

It uses the test module's helpers (the same comparisons the tests assert) and prints, per architecture, each
stage's max abs and max relative error (relative to the reference's largest value), the instances matched with
their worst box, score and mask IoU, and each loss's relative error.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_paddle_weights as T  # noqa: E402
from instaseg.models.common.points import flatten_levels  # noqa: E402


def row(name: str, ref, ours) -> str:
    ref, ours = np.asarray(ref, np.float64), np.asarray(torch.as_tensor(ours).detach(), np.float64)
    err = float(np.abs(ref - ours).max())
    return f"| {name} | {err:.3g} | {err / max(float(np.abs(ref).max()), 1e-12):.3g} |"


def instances(name: str, ref: dict, ours: dict) -> str:
    """Pairs as the test makes them; the worst pair's box corner distance, score difference and mask IoU."""
    free, box, score, iou, empty = set(range(len(ours["scores"]))), 0.0, 0.0, 1.0, 0
    for i in np.argsort(-ref["scores"], kind="stable"):
        same = [j for j in free if ours["labels"][j] == ref["labels"][i]]
        gaps = {c: np.abs(ref["boxes"][i] - ours["boxes"][c]).max() for c in same}
        gaps = {c: g + abs(ref["scores"][i] - ours["scores"][c]) for c, g in gaps.items()}
        j = min(gaps, key=gaps.get)
        box = max(box, float(np.abs(ref["boxes"][i] - ours["boxes"][j]).max()))
        score = max(score, float(abs(ref["scores"][i] - ours["scores"][j])))
        if "masks" in ours:
            a, b = ref["masks"][i], ours["masks"][j]
            union = (a | b).sum()
            iou, empty = (min(iou, float((a & b).sum() / union)), empty) if union else (iou, empty + 1)
        free.remove(j)
    masks = f", mask IoU min {iou:.4f} ({empty} both empty)" if "masks" in ours else ""
    return f"| {name} | {box:.3g} px | {score:.2g} | {len(ref['scores'])} of {len(ref['scores'])} matched{masks} |"


def loss(name: str, ours: float, ref: float) -> str:
    return f"| {name} | {ours:.6g} | {ref:.6g} | {abs(ours - ref) / abs(ref):.2g} |"


def ppyoloe() -> list[str]:
    data, _ = T.fixture("ppyoloe_seg")
    model = T.reduced_model("ppyoloe_seg")
    x = torch.from_numpy(data["input"])
    out = ["| stage | max abs error | max relative error |", "| --- | --- | --- |"]
    with torch.no_grad():
        out += [row(f"backbone stride {8 * 2**i}", data[f"backbone.{i}"], f) for i, f in enumerate(model.backbone(x))]
        neck = model.neck([torch.from_numpy(data[f"backbone.{i}"]) for i in range(3)])
        out += [row(f"neck stride {8 * 2**i}", data[f"neck.{2 - i}"], f) for i, f in enumerate(neck)]
        cls, reg, coef, protos = model.head([torch.from_numpy(data[f"neck.{2 - i}"]) for i in range(3)])
        out.append(row("class scores", data["cls"], torch.cat([c.flatten(2) for c in cls][::-1], 2).sigmoid()))
        out.append(row("box distances", data["dist"], model.head.distances(flatten_levels(reg[::-1]))))
        out.append(row("mask coefficients", data["coef"], torch.cat([c.flatten(2) for c in coef][::-1], 2)))
        out.append(row("prototypes", data["proto"], protos))
        ref = T.reference_instances(data)
        out += ["", "| instances | worst box | worst score | |", "| --- | --- | --- | --- |"]
        ours = T.predicted(model, data["picture"])
        out.append(instances("predictor (boxes, scores, labels)", ref, {k: v for k, v in ours.items() if k != "masks"}))
        out.append(instances("predictor, masks pasted in the clipped box", ref, ours))
        out.append(instances("masks made the reference's way", ref, T.reference_style_ppyoloe(model, x)))
    model.train()
    losses = {k: float(v.detach()) for k, v in model.losses(x, T.targets(data)).items()}
    out += ["", "| loss | ours | reference x its weight | relative error |", "| --- | --- | --- | --- |"]
    for name, weight in (("cls", 1.0), ("iou", 2.5), ("dfl", 0.5), ("mask", 2.5)):
        out.append(loss(f"loss_{name}", losses[f"loss_{name}"], weight * float(data[f"loss.loss_{name}"])))
    published = 2.5 * float(data["loss_as_published.loss_mask"])
    out.append(loss("loss_mask, reference's box scale fixed at 640 px", losses["loss_mask"], published))
    return out


def mask_rtdetr() -> list[str]:
    data, _ = T.fixture("mask_rtdetr")
    model = T.reduced_model("mask_rtdetr")
    x = torch.from_numpy(data["input"])
    out = ["| stage | max abs error | max relative error |", "| --- | --- | --- |"]
    with torch.no_grad():
        out += [row(f"backbone stride {4 * 2**i}", data[f"backbone.{i}"], f) for i, f in enumerate(model.backbone(x))]
        fused, mask_feat = model.encoder([torch.from_numpy(data[f"backbone.{i}"]) for i in range(4)])
        out += [row(f"encoder stride {8 * 2**i}", data[f"encoder.{i}"], f) for i, f in enumerate(fused)]
        out.append(row("mask features (stride 4)", data["mask_feat"], mask_feat))
        layers, enc, _ = model.transformer([torch.from_numpy(data[f"encoder.{i}"]) for i in range(3)],
                                           torch.from_numpy(data["mask_feat"]))  # fmt: skip
        order = (enc.boxes[0][None] - torch.from_numpy(data["enc_boxes"][0])[:, None]).abs().sum(-1).argmin(1)
        out.append(row("query selection: logits", data["enc_logits"][0], enc.logits[0, order]))
        out.append(row("query selection: boxes", data["enc_boxes"][0], enc.boxes[0, order]))
        for name in ("logits", "boxes", "masks"):
            out.append(row(f"decoder {name}", data[name][0], getattr(layers[-1], name)[0, order]))
        ref = T.reference_instances(data)
        out += ["", "| instances | worst box | worst score | |", "| --- | --- | --- | --- |"]
        ours = T.predicted(model, data["picture"])
        out.append(instances("predictor (boxes, scores, labels)", ref, {k: v for k, v in ours.items() if k != "masks"}))
        out.append(instances("predictor (masks resampled whole, as logits)", ref, ours))
        reference_way = T.reference_style_mask_rtdetr(model, layers[-1], len(ref["scores"]), tuple(x.shape[-2:]))
        out.append(instances("masks made the reference's way", ref, reference_way))
    model.train()
    with pytest.MonkeyPatch.context() as m, T.shared_draws(m):
        losses = {k: float(v.detach()) for k, v in model.losses(x, T.targets(data)).items()}
    out += ["", "| loss | ours | reference | relative error |", "| --- | --- | --- | --- |"]
    for key in ("class", "bbox", "giou", "mask", "dice"):
        for suffix, parts in (("", [""]), ("_aux", ["_aux"]), ("_dn", ["_dn", "_aux_dn"])):
            ref_value = sum(float(data[f"loss.loss_{key}{p}"]) for p in parts)
            out.append(loss(f"loss_{key}{suffix}", losses[f"loss_{key}{suffix}"], ref_value))
    return out


def main() -> None:
    torch.set_num_threads(1)
    for title, table in (("Mask-RT-DETR (reduced)", mask_rtdetr), ("PP-YOLOE-seg (reduced)", ppyoloe)):
        print(f"\n#### {title}\n")
        with contextlib.redirect_stderr(sys.stdout):
            print("\n".join(table()))


if __name__ == "__main__":
    main()
