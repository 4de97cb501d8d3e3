"""MMDetection's published weights in our models: every published checkpoint converts completely, and the
reference's random weights (a reduced-width configuration per architecture, tests/fixtures/mmdet, regenerated
by tools/mmdet_fixtures.py in MMDetection's own environment) give the reference's outputs: features and raw head
outputs within 1e-4 of their scale, the same instances (boxes within 0.5 px, scores within 1e-3, mask IoU >= 0.99)
and losses within 1e-3 relative."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from instaseg.inference.backends.torch import TorchBackend
from instaseg.inference.predictor import Predictor
from instaseg.inference.preprocess import preprocess
from instaseg.models.common.backbones import BACKBONES, BackboneSpec
from instaseg.models.factory import build_model
from instaseg.models.recipes import apply_overrides, load_recipe
from instaseg.models.registry import architecture
from published_helpers import convert_layout

pytestmark = pytest.mark.usefixtures("one_thread")
FIXTURES = Path(__file__).parent / "fixtures" / "mmdet"
with gzip.open(FIXTURES / "layouts.json.gz", "rt") as f:
    LAYOUTS = json.load(f)["layouts"]
# MMDetection's files (SOLOv2 also lists PaddleX's and PaddleDetection's: tests/test_paddle_weights.py)
PUBLISHED = [w for arch in ("rtmdet_ins", "solov2") for w in architecture(arch).published if w.format == "torch"]


def fixture(arch: str) -> tuple[dict, dict]:
    data = np.load(FIXTURES / f"{arch}.npz")
    return {k: data[k] for k in data.files}, json.loads(str(data["info"]))


@pytest.fixture
def reduced_backbone(monkeypatch):
    """The reduced SOLOv2's ResNet-18 at 8..64 channels (timm's, as resnet18_slim), registered for the test."""
    info = fixture("solov2")[1]["backbone"]
    kwargs = (("channels", tuple(info["channels"])), ("stem_width", info["stem_width"]))
    monkeypatch.setitem(BACKBONES, "resnet18_fixture", BackboneSpec("timm", info["timm"], "", timm_kwargs=kwargs))


def reduced_recipe(arch: str) -> dict:
    info = fixture(arch)[1]
    extra = ["model.backbone=resnet18_fixture"] if arch == "solov2" else []
    return apply_overrides(load_recipe(info["recipe"]), [*info["overrides"], *extra])


def rel_err(ref: np.ndarray, ours: torch.Tensor) -> float:
    ref, ours = torch.as_tensor(ref).double(), ours.detach().double()
    assert ref.shape == ours.shape
    return float((ref - ours).abs().max() / ref.abs().max().clamp(min=1e-12))


def decode(masks_json: np.ndarray) -> np.ndarray:
    rles = json.loads(str(masks_json))
    if not rles:
        return np.zeros((0, 1, 1), bool)
    return np.stack([mask_utils.decode({**r, "counts": r["counts"].encode()}) for r in rles]).astype(bool)


def assert_same_instances(ref: dict, ours: dict, boxes: bool = True) -> None:
    """Each reference instance (by descending score) paired with an unpaired one of ours of its label: the nearest
    box (or, without boxes, the nearest score then the best mask); the same set, every pair within tolerance."""
    n = len(ref["scores"])
    assert len(ours["scores"]) == n > 0
    rm, om = ref["masks"].reshape(n, -1).astype(np.float64), ours["masks"].reshape(n, -1).astype(np.float64)
    inter = rm @ om.T
    iou = inter / np.maximum(rm.sum(1)[:, None] + om.sum(1)[None] - inter, 1)
    free = set(range(n))
    for i in np.argsort(-ref["scores"], kind="stable"):
        same = [j for j in free if ours["labels"][j] == ref["labels"][i]]
        assert same, f"no instance of label {ref['labels'][i]} left for reference {i}"
        if boxes:
            j = min(same, key=lambda c: np.abs(ref["boxes"][i] - ours["boxes"][c]).max())
            assert np.abs(ref["boxes"][i] - ours["boxes"][j]).max() <= 0.5
        else:
            near = [c for c in same if abs(ref["scores"][i] - ours["scores"][c]) <= 1e-3] or same
            j = max(near, key=lambda c: iou[i, c])
        assert abs(ref["scores"][i] - ours["scores"][j]) <= 1e-3
        assert iou[i, j] >= 0.99 or rm[i].sum() == om[j].sum() == 0, (i, iou[i, j])
        free.remove(j)


def reference_instances(data: dict, stage: str, clip: tuple[int, int] | None = None) -> dict:
    boxes = data[f"{stage}.boxes"].copy()
    if clip is not None:  # ours are clipped to the picture, the reference's to its padded canvas
        boxes = boxes.clip(0, np.array([clip[1], clip[0], clip[1], clip[0]], np.float32))
    return {"boxes": boxes, "scores": data[f"{stage}.scores"], "labels": data[f"{stage}.labels"] + 1,
            "masks": decode(data[f"{stage}.masks"])}  # fmt: skip


def predicted(model, picture: np.ndarray) -> dict:
    result = next(iter(Predictor(TorchBackend(model), [str(i) for i in range(80)], threshold=0.0).predict(picture)))
    return {"boxes": result.boxes, "scores": result.scores, "labels": result.labels, "masks": result.masks}


def targets(data: dict) -> list[dict]:
    return [{"boxes": torch.from_numpy(data["target.boxes"]), "labels": torch.from_numpy(data["target.labels"]) + 1,
             "masks": torch.from_numpy(data["target.masks"])}]  # fmt: skip


# ---------------------------------------------------------------- every published checkpoint
@pytest.mark.parametrize("weights", PUBLISHED, ids=lambda w: w.name)
def test_every_published_checkpoint_converts_completely(weights):
    """The published tensor names and shapes (from MMDetection's configs) fill our model: each tensor placed, a
    checked copy, or no part of the model by the map, and none of ours in scope left unset."""
    conversion, ours, layout = convert_layout(weights, LAYOUTS)
    assert conversion.problem() is None
    assert len(conversion.state) + len(conversion.copies) + len(conversion.dropped) + len(conversion.counters) == len(
        layout
    )
    dropped = {n.rsplit(".", 1)[0] for n in conversion.dropped}
    assert dropped <= {"head.fc"}  # only the ImageNet classifier's linear layer is no part of a detector
    if weights.kind == "imagenet":
        assert set(conversion.state) == {k for k in ours if k.startswith("backbone.")}


# ---------------------------------------------------------------- the reference's outputs, reduced widths
def test_reduced_rtmdet_ins_equals_mmdetection():
    data, _ = fixture("rtmdet_ins")
    model = build_model(reduced_recipe("rtmdet_ins"), 80, weights=str(FIXTURES / "rtmdet_ins.pth")).eval()
    x, sizes = preprocess([data["picture"]], model.input_spec)  # RGB; the converted stem reads it as BGR was read
    with torch.no_grad():
        feats = model.backbone(x)
        neck = model.neck(feats)
        head = model.head(neck)
        outputs = {"backbone": feats, "neck": neck, "cls": head[0], "reg": head[1], "kernel": head[2]}
        for name, maps in outputs.items():
            assert max(rel_err(data[f"{name}.{i}"], m) for i, m in enumerate(maps)) <= 1e-4, name
        assert rel_err(data["protos"], head[3]) <= 1e-4
        boxes, scores, labels, logits = model.raw_outputs(x, [tuple(x.shape[-2:])])[0]  # NMS on the canvas
        masks = F.interpolate(logits[None], scale_factor=8, mode="bilinear", align_corners=False)[0] > 0
        ours = {"boxes": boxes.numpy(), "scores": scores.numpy(), "labels": labels.numpy(), "masks": masks.numpy()}
    assert_same_instances(reference_instances(data, "A"), ours)
    assert_same_instances(reference_instances(data, "B", clip=sizes[0]), predicted(model, data["picture"]))
    model.train()
    recorded = []
    assign = model.assigner

    def recording(*args, **kwargs):
        recorded.append(assign(*args, **kwargs))
        return recorded[-1]

    model.assigner = recording
    losses = model.losses(x, targets(data))
    for name in ("loss_cls", "loss_box", "loss_mask"):
        assert float(losses[name].detach()) == pytest.approx(float(data[f"loss.{name}"]), rel=1e-3), name
    assert torch.equal(recorded[0].gt_index, torch.from_numpy(data["assign.gt_index"]).long())


def test_reduced_solov2_equals_mmdetection(reduced_backbone):
    data, _ = fixture("solov2")
    model = build_model(reduced_recipe("solov2"), 80, weights=str(FIXTURES / "solov2.pth")).eval()
    x, sizes = preprocess([data["picture"]], model.input_spec)
    with torch.no_grad():
        body = model.backbone.body(x)  # timm's feature extractor gives a list, torchvision's a dict
        body = list(body.values()) if isinstance(body, dict) else body
        assert max(rel_err(data[f"backbone.{i}"], m) for i, m in enumerate(body)) <= 1e-4
        assert max(rel_err(data[f"neck.{i}"], m) for i, m in enumerate(model.backbone(x).values())) <= 1e-4
        cls, kernels, mask_feat = model._features(x)
        assert max(rel_err(data[f"cls.{i}"], m) for i, m in enumerate(cls)) <= 1e-4
        assert max(rel_err(data[f"kernel.{i}"], m) for i, m in enumerate(kernels)) <= 1e-4
        assert rel_err(data["mask_feat"], mask_feat) <= 1e-4
        out = model.raw_forward(x, sizes)[0]
        h, w = sizes[0]
        masks = F.interpolate(out.masks[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, :h, :w]
        ours = {"scores": out.scores.numpy(), "labels": out.labels.numpy(), "masks": (masks > 0.5).numpy()}
    assert_same_instances(reference_instances(data, "A"), ours, boxes=False)
    assert_same_instances(reference_instances(data, "B"), predicted(model, data["picture"]), boxes=False)
    model.train()
    losses = model.losses(x, targets(data))
    for name in ("loss_cls", "loss_mask"):
        assert float(losses[name].detach()) == pytest.approx(float(data[f"loss.{name}"]), rel=1e-3), name
