"""RTMDet-Ins through the export command and the shared predictor: ONNX Runtime and OpenVINO agree with torch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from instaseg.models.checkpoint import save_checkpoint
from instaseg.models.factory import build_model
from instaseg.models.recipes import apply_overrides, load_recipe
from instaseg.utils.device import torch_threads

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")
RECIPE = ["input.min_size=96", "input.max_size=96", "eval.score_threshold=0.1", "eval.max_dets=20"]


def _scene(seed: int, h: int = 96, w: int = 96) -> tuple[np.ndarray, dict]:
    """Two coloured rectangles on noise; class 1 red, class 2 green."""
    rng = np.random.default_rng(seed)
    image = (rng.random((h, w, 3)) * 60).astype(np.uint8)
    masks = np.zeros((2, h, w), dtype=np.uint8)
    boxes = []
    for i in range(2):
        bw, bh = rng.integers(16, 36), rng.integers(16, 30)
        x0, y0 = rng.integers(0, w - bw), rng.integers(0, h - bh)
        image[y0 : y0 + bh, x0 : x0 + bw, i] = 230
        masks[i, y0 : y0 + bh, x0 : x0 + bw] = 1
        boxes.append([x0, y0, x0 + bw, y0 + bh])
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.tensor([1, 2]),
        "masks": torch.from_numpy(masks),
    }
    return image, target


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A briefly trained tiny RTMDet-Ins: distinct scores and real masks, so agreement means something."""
    with torch_threads(1):
        return _trained_checkpoint(tmp_path_factory.mktemp("rtmdet") / "model.pt")


def _trained_checkpoint(path):
    torch.manual_seed(0)
    recipe = apply_overrides(load_recipe("rtmdet_ins_tiny"), RECIPE)
    model = build_model(recipe, num_classes=2, weights="none").train()
    opt = torch.optim.AdamW(model.parameters(), lr=0.004, weight_decay=0.05)
    scenes = [_scene(s) for s in range(2)]  # learnt by heart: confident, distinct detections
    for step in range(40):
        batch = [scenes[(2 * step + k) % len(scenes)] for k in range(2)]
        images = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im, _ in batch]
        loss = sum(model(images, [t for _, t in batch]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    # BatchNorm's running statistics (momentum 0.03) lag 40 steps behind: recompute them on the training pictures
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # cumulative average
        model.transform.training = False  # no targets: only the batch statistics are wanted
        model.backbone.train(), model.neck.train(), model.head.train()
        images = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im, _ in scenes]
        model.head(model.neck(model.backbone(model.transform(images)[0].tensors)))
    save_checkpoint(path, model.eval(), recipe, ["red", "green"], [1, 2])
    return path


@pytest.mark.parametrize(("fmt", "dynamic"), [("onnx", True), ("onnx", False), ("openvino", True)])
def test_exported_rtmdet_agrees_with_torch(checkpoint, tmp_path, fmt, dynamic):
    if fmt == "openvino":
        pytest.importorskip("openvino")
    from instaseg.evaluation.parity import compare_results
    from instaseg.export import export_model
    from instaseg.inference.predictor import create_model

    exported = export_model(checkpoint, format=fmt, out=tmp_path, dynamic=dynamic)
    assert exported["metadata"]["graph"]["mask_stride"] == 8
    reference, other = create_model(checkpoint, threshold=0.1), create_model(exported["path"], threshold=0.1)
    pictures = [_scene(0)[0], _scene(1)[0]]
    if dynamic:  # a picture of another shape: a fixed square graph pads it more than torch does, a dynamic one not
        pictures.append(np.ascontiguousarray(_scene(0)[0][:, :64]))
    total = 0
    for picture in pictures:
        a, b = next(iter(reference.predict(picture))), next(iter(other.predict(picture)))
        agreement = compare_results(a, b, min_score=0.1)
        total += agreement.matched
        assert agreement.unmatched == 0
        assert agreement.max_box_gap < 0.5 and agreement.min_mask_iou > 0.95  # equal up to float rounding
    assert total > 0


def test_no_detections_stay_empty_after_export(checkpoint, tmp_path):
    from instaseg.export import export_model
    from instaseg.inference.predictor import create_model

    exported = export_model(checkpoint, format="onnx", out=tmp_path, dynamic=True)
    flat = np.full((96, 96, 3), 30, dtype=np.uint8)
    for path in (checkpoint, exported["path"]):
        result = next(iter(create_model(path, threshold=0.99).predict(flat)))
        assert len(result.scores) == 0 and len(result.rles) == 0


def test_exported_model_sizes_pictures_as_mmdetection(checkpoint, tmp_path):
    """A 71 x 127 picture at 96 px: 71 x 96 / 127 = 53.67 rows, 54 as MMDetection rounds (53 floored). The export's
    metadata carries the rule, its predictor resizes to 54 rows as the eager one does, and the two agree; with the
    rule taken out of the metadata (an older export) the same graph is fed 53 rows. The picture is a training scene
    enlarged by 127 / 96 and cut to 71 rows, so that the resize brings its top back to the scale the model learnt
    (the briefly trained model fires on little else)."""
    import cv2
    import onnx

    from instaseg.evaluation.parity import compare_results
    from instaseg.export import export_model
    from instaseg.inference.predictor import create_model

    exported = export_model(checkpoint, format="onnx", out=tmp_path, dynamic=True)
    assert exported["metadata"]["input"]["size_rounding"] == "round"
    picture = np.ascontiguousarray(cv2.resize(_scene(0)[0], (127, 127), interpolation=cv2.INTER_LINEAR)[:71])
    eager, onnx_model = create_model(checkpoint, threshold=0.1), create_model(exported["path"], threshold=0.1)
    for predictor in (eager, onnx_model):
        assert predictor.backend.spec.resized_size(71, 127) == (54, 96)
    a, b = next(iter(eager.predict(picture))), next(iter(onnx_model.predict(picture)))
    agreement = compare_results(a, b, min_score=0.1)
    assert agreement.matched > 0 and agreement.unmatched == 0
    assert agreement.max_box_gap < 0.5 and agreement.min_mask_iou > 0.95

    older = onnx.load(exported["path"])
    props = {p.key: p.value for p in older.metadata_props}
    section = json.loads(props["input"])
    del section["size_rounding"]
    for prop in older.metadata_props:
        if prop.key == "input":
            prop.value = json.dumps(section)
    onnx.save(older, tmp_path / "older.onnx")
    assert create_model(tmp_path / "older.onnx", threshold=0.1).backend.spec.resized_size(71, 127) == (53, 96)


def test_the_mask_resampling_travels_with_the_export(checkpoint, tmp_path):
    """The recipe's ``mask_resample: canvas_rescale`` (MMDetection's rescale) is in the graph's metadata and the
    exported predictor resamples as the eager one; an export from before the key reads as "direct", and an
    unknown value is refused, naming the file."""
    import cv2
    import onnx

    from instaseg.errors import UserError
    from instaseg.evaluation.parity import compare_results
    from instaseg.export import export_model
    from instaseg.inference.predictor import create_model

    exported = export_model(checkpoint, format="onnx", out=tmp_path, dynamic=True)
    assert exported["metadata"]["graph"]["mask_resample"] == "canvas_rescale"
    eager, onnx_model = create_model(checkpoint, threshold=0.1), create_model(exported["path"], threshold=0.1)
    assert eager.backend.model.mask_resample == onnx_model.backend.graph["mask_resample"] == "canvas_rescale"
    # resized x96/127 (the size-rounding test's picture: a training scene the briefly trained model fires on)
    picture = np.ascontiguousarray(cv2.resize(_scene(0)[0], (127, 127), interpolation=cv2.INTER_LINEAR)[:71])
    agreement = compare_results(next(iter(eager.predict(picture))), next(iter(onnx_model.predict(picture))), 0.1)
    # the same masks up to float rounding (1.0 when measured); the graph pasted "direct" gives 0.988 here
    assert agreement.matched > 0 and agreement.unmatched == 0 and agreement.min_mask_iou > 0.995

    def doctored(value: str | None):
        model = onnx.load(exported["path"])
        for prop in model.metadata_props:
            if prop.key == "graph":
                graph = json.loads(prop.value)
                graph.pop("mask_resample")
                prop.value = json.dumps(graph if value is None else {**graph, "mask_resample": value})
        path = tmp_path / f"{value}.onnx"
        onnx.save(model, path)
        return path

    assert create_model(doctored(None), threshold=0.1).backend.graph["mask_resample"] == "direct"
    with pytest.raises(UserError, match=r"bicubic\.onnx.*mask_resample 'bicubic'"):
        create_model(doctored("bicubic"), threshold=0.1)
