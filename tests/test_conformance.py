"""The detector contract, proven for every registered architecture (`instaseg.models.registry.ARCHITECTURES`).

Each architecture runs, at a tiny size (its ``small_recipe`` shrunk by ``tiny_overrides`` to 96 px), through:
build from its recipe; a training step with finite losses and gradients; predict -> Results with masks; ONNX
and OpenVINO export whose predictions agree with eager; `instaseg benchmark` of the checkpoint, of its exports and
of the recipe name on every backend; its `instaseg models` row; and (slow) overfitting two pictures to mask
AP >= 0.5, which its INT8 export keeps (marked ``int8`` too: beyond CI's time, run with ``--runslow -m int8``).
Registering an architecture puts it under every test here, with no edit to this file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from instaseg.data.synthetic import SynthStyle, synth_image
from instaseg.models.detector import Detector
from instaseg.models.factory import build_model
from instaseg.models.recipes import apply_overrides, load_recipe
from instaseg.models.registry import ARCHITECTURES, architecture
from instaseg.utils.device import torch_threads

SIZE = 96
STYLE = SynthStyle(num_classes=2, background="plain", max_instances=3)
CLASSES = ["circle", "triangle"]
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_recipe(name: str, *more: str) -> dict:
    arch = architecture(name)
    sized = [f"input.min_size={SIZE}", f"input.max_size={SIZE}"]
    return apply_overrides(load_recipe(arch.small_recipe), [*sized, *arch.tiny_overrides, *more])


def pictures(count: int = 2, seed: int = 3) -> list[tuple[np.ndarray, dict]]:
    """Synthetic shapes with their training targets (labels 1..2)."""
    out = []
    for i in range(count):
        image, instances = synth_image(i, SIZE, seed, STYLE)
        masks = torch.from_numpy(np.stack([m for _, m in instances]))
        boxes = torch.tensor(
            [[float(x[0]), float(y[0]), float(x[-1] + 1), float(y[-1] + 1)] for x, y in (_extent(m) for m in masks)]
        )
        labels = torch.tensor([c + 1 for c, _ in instances])
        out.append((image, {"boxes": boxes, "labels": labels, "masks": masks}))
    return out


def _extent(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The columns and the rows a mask occupies."""
    return torch.nonzero(mask.any(dim=0)).squeeze(1), torch.nonzero(mask.any(dim=1)).squeeze(1)


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255


def fit(model: Detector, scenes: list, steps: int, lr: float = 4e-3) -> list[float]:
    """AdamW on the scenes, a batch of all of them per step, the learning rate falling to 0 on a cosine (so the
    weights settle, as a recipe's schedule and EMA make them); returns the summed losses."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    history = []
    for _ in range(steps):
        losses = model([as_tensor(im) for im, _ in scenes], [t for _, t in scenes])
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        schedule.step()
        history.append(loss.item())
    return history


def train_tiny(name: str, folder: Path) -> dict:
    """The architecture's tiny recipe, a checkpoint of it briefly trained on two pictures (distinct scores and real
    masks, so agreement between backends means something), the pictures and the checkpoint's folder."""
    from instaseg.models.checkpoint import save_checkpoint

    with torch_threads(1):
        torch.manual_seed(0)
        recipe = tiny_recipe(name, "eval.score_threshold=0.05", "eval.max_dets=20")
        model = build_model(recipe, len(CLASSES), weights="none")
        scenes = pictures()
        fit(model, scenes, steps=150)
        ckpt = save_checkpoint(folder / "model.pt", model.eval(), recipe, CLASSES, [1, 2])
    return {"name": name, "recipe": recipe, "checkpoint": ckpt, "scenes": scenes, "folder": folder}


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def trained(request, trained_tiny) -> dict:
    """Per architecture: `train_tiny`'s model (trained once a session, `trained_tiny` in conftest)."""
    return trained_tiny(request.param)


@pytest.fixture(scope="module")
def exports(trained: dict) -> dict[str, Path]:
    """The trained checkpoint exported once to ONNX and OpenVINO (fp32, dynamic size), as users export it."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from instaseg.export import export_model

    folder = trained["folder"]
    return {
        fmt: Path(export_model(trained["checkpoint"], format=fmt, out=folder / fmt, dynamic=True)["path"])
        for fmt in ("onnx", "openvino")
    }


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_builds_from_its_recipe(name: str) -> None:
    recipe = tiny_recipe(name)
    model = build_model(recipe, 3, weights="none")
    assert isinstance(model, Detector)
    spec = model.input_spec
    assert (spec.min_size, spec.max_size) == (SIZE, SIZE) and len(spec.mean) == len(spec.std) == 3
    assert model.mask_stride is None or (isinstance(model.mask_stride, int) and model.mask_stride > 0)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_training_step_gives_finite_losses_and_gradients(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_recipe(name), 2, weights="none").train()
    scenes = pictures()
    images = [as_tensor(im) for im, _ in scenes]
    # one picture without objects: segmentation heads must still train (and keep every branch in the graph)
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, SIZE, SIZE, dtype=torch.uint8),
    }
    losses = model([*images, torch.rand(3, SIZE, SIZE)], [t for _, t in scenes] + [empty])
    assert losses and all(v.ndim == 0 and math.isfinite(v.item()) for v in losses.values()), losses
    sum(losses.values()).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    with_grad = [p for p in trainable if p.grad is not None and torch.isfinite(p.grad).all()]
    assert len(with_grad) == len(trainable)


def test_raw_outputs_follow_the_contract(trained: dict) -> None:
    from instaseg.inference.backends.torch import load
    from instaseg.inference.preprocess import preprocess

    backend, _ = load(trained["checkpoint"])
    model = backend.model
    batch, sizes = preprocess([im for im, _ in trained["scenes"]], backend.spec)
    with torch.inference_mode():
        outputs = model.raw_forward(batch, sizes)
        graph = model.export_forward(batch[:1], torch.tensor(sizes[0]))
    assert len(outputs) == len(sizes)
    for out, (h, w) in zip(outputs, sizes, strict=True):
        n = len(out.scores)
        assert out.boxes.shape == (n, 4) and out.labels.shape == (n,) and out.labels.dtype == torch.int64
        assert n == 0 or (out.boxes[:, 0::2].max() <= w and out.boxes[:, 1::2].max() <= h and out.boxes.min() >= 0)
        assert n == 0 or (int(out.labels.min()) >= 1 and int(out.labels.max()) <= len(CLASSES))
        assert out.masks.shape[0] == n and out.masks.is_floating_point()
        if not model.mask_logits:  # probabilities
            assert n == 0 or 0 <= float(out.masks.min()) <= float(out.masks.max()) <= 1
        if model.mask_stride:
            s = model.mask_stride
            assert tuple(out.masks.shape[1:]) == (batch.shape[-2] // s, batch.shape[-1] // s)
        else:
            assert out.masks.shape[1] == out.masks.shape[2]
    for got, want in zip(graph, outputs[0], strict=True):  # the exported path is the eager path (batch of 1)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_predict_gives_results_with_masks(trained: dict) -> None:
    import instaseg

    predictor = instaseg.create_model(trained["checkpoint"], threshold=0.05)
    results = list(predictor.predict([im for im, _ in trained["scenes"]]))
    assert len(results) == 2 and all(len(r) > 0 for r in results)
    for result in results:
        assert result.masks.shape == (len(result), SIZE, SIZE) and len(result.json["masks"]) == len(result)
        assert {b["label"] for b in result.json["boxes"]} <= set(CLASSES)
    assert any(r.masks.any() for r in results)  # outlines, not only boxes (their quality: the overfit test)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_export_agrees_with_eager(trained: dict, exports: dict[str, Path], fmt: str) -> None:
    import instaseg
    from instaseg.evaluation.parity import compare_results

    threshold = 0.2
    eager = instaseg.create_model(trained["checkpoint"], threshold=threshold)
    other = instaseg.create_model(exports[fmt], threshold=threshold)
    images = [im for im, _ in trained["scenes"]]
    for a, b in zip(eager.predict(images), other.predict(images), strict=True):
        assert len(a) > 0
        agreement = compare_results(a, b, min_score=threshold)
        assert agreement.unmatched == 0 and agreement.max_box_gap < 1.0 and agreement.min_mask_iou > 0.95, agreement


def test_benchmark_on_every_backend(trained: dict, exports: dict[str, Path], cli) -> None:
    """The checkpoint on torch and its exports on their runtimes; the recipe name on every backend (random weights
    made busy, exported inside the benchmark: the path a checkpoint takes to ONNX Runtime and OpenVINO there)."""
    backends = ["torch", "onnxruntime", "openvino"]
    common = ["--iters", "1", "--warmup", "0", "--threads", "1", "--json"]
    runs = [(trained["checkpoint"], ["torch"]), (exports["onnx"], ["onnxruntime"]), (exports["openvino"], ["openvino"])]
    for model, names in [*runs, (trained["recipe"]["name"], backends)]:
        extra = ["--img-size", "64"] if model == trained["recipe"]["name"] else []
        code, out, err = cli("benchmark", "--model", model, *extra, *common, "--backend", *names)
        assert code == 0, err
        result = json.loads(out)
        assert list(result["backends"]) == names
        for row in result["backends"].values():
            assert row["end_to_end"]["median_ms"] > 0 and row["gflops"] > 0 and row["model_mb"] > 0
        if model == trained["recipe"]["name"]:  # random weights made busy: every detection the recipe allows
            allowed = load_recipe(trained["recipe"]["name"])["eval"]["max_dets"]
            assert {row["detections_per_image"] for row in result["backends"].values()} == {allowed}


def test_models_row(trained: dict, cli) -> None:
    code, out, err = cli("models", architecture(trained["name"]).small_recipe, "--json")
    assert code == 0, err
    measured = json.loads(out)["measured"]
    assert measured["architecture"] == trained["name"]
    assert measured["params_M"] > 0 and measured["gflops"] > 0 and measured["weights_MB"] > 0


def scenes_gt(scenes: list) -> object:
    """The scenes as COCO ground truth (image ids 1.., file names ``<i>.png``)."""
    import instaseg.data.coco as coco
    from instaseg.data.masks import mask_to_rle, rle_area, rle_bbox

    images, annotations = [], []
    for i, (_, target) in enumerate(scenes):
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": SIZE, "width": SIZE})
        for mask, label in zip(target["masks"].numpy(), target["labels"].tolist(), strict=True):
            rle = mask_to_rle(mask)
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i + 1, "category_id": label, "segmentation": rle,
                 "area": rle_area(rle), "bbox": rle_bbox(rle), "iscrowd": 0}
            )  # fmt: skip
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)]
    return coco.CocoData(images, annotations, categories, image_root=Path("."))


def scenes_metrics(predictor, scenes: list) -> dict:
    """COCO metrics of ``predictor`` (any backend) on the scenes it is given."""
    from instaseg.evaluation.coco import CocoEvaluator

    gt = scenes_gt(scenes)
    evaluator = CocoEvaluator(gt, 100, category_ids=[1, 2])
    for record, det in zip(gt.images, predictor.detect([im for im, _ in scenes]), strict=True):
        evaluator.add(record["id"], {"boxes": det.boxes, "labels": det.labels, "scores": det.scores, "masks": det.rles})
    return evaluator.compute()


def overfit(name: str) -> tuple[Detector, dict, list, dict]:
    """(the tiny model trained 300 steps on two pictures, its recipe, the pictures, its eager COCO metrics on
    them through the predictor users call)."""
    from instaseg.inference.backends.torch import TorchBackend
    from instaseg.inference.predictor import Predictor

    torch.manual_seed(0)
    recipe = tiny_recipe(name, "eval.score_threshold=0.05")
    model = build_model(recipe, len(CLASSES), weights="none")
    scenes = pictures()
    history = fit(model, scenes, steps=300)
    assert history[-1] < history[0]
    eager = scenes_metrics(Predictor(TorchBackend(model.eval()), CLASSES, [1, 2], threshold=0.0), scenes)
    return model, recipe, scenes, eager


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_overfits_two_pictures(name: str) -> None:
    """Trained on two pictures, the model finds their objects again: mask AP >= 0.5 on them, through the
    predictor users call."""
    eager = overfit(name)[3]
    assert eager["mask_AP"] >= 0.5, eager


@pytest.mark.slow
@pytest.mark.int8
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_int8_keeps_the_overfitted_masks(name: str, tmp_path: Path) -> None:
    """The overfitted model's INT8 export as users make it (OpenVINO, the architecture's own quantization
    settings, calibrated on the two pictures and under accuracy control on them with the default 1-point bar)
    keeps its mask AP within 1 point through the INT8 predictor. 1-7 minutes an architecture on 2 cores, beyond
    CI's time: run with ``--runslow -m int8``."""
    import cv2

    import instaseg
    from instaseg.data.coco import save_coco, split_file
    from instaseg.export import export_model
    from instaseg.models.checkpoint import save_checkpoint

    pytest.importorskip("nncf")
    model, recipe, scenes, eager = overfit(name)
    assert eager["mask_AP"] >= 0.5, eager  # a model with masks worth keeping
    data = tmp_path / "data"  # the two pictures as the train (calibration) and val (accuracy) split
    (data / "images").mkdir(parents=True)
    for i, (image, _) in enumerate(scenes):
        cv2.imwrite(str(data / "images" / f"{i}.png"), image[:, :, ::-1])
    for split in ("train", "val"):
        save_coco(scenes_gt(scenes), split_file(data, split))
    ckpt = save_checkpoint(tmp_path / "model.pt", model, recipe, CLASSES, [1, 2])
    int8 = export_model(ckpt, format="openvino", int8=True, calib_data=data, out=tmp_path / "int8")
    report = int8["report"]
    assert report["accuracy"] is not None  # measured under accuracy control
    metrics = scenes_metrics(instaseg.create_model(int8["path"], threshold=0.0), scenes)
    print(f"\n{name}: mask AP eager {eager['mask_AP']:.3f}, INT8 {metrics['mask_AP']:.3f}, "
          f"{len(report['float_layers'])} of {report['quantizable_layers']} layers left in float")
    assert eager["mask_AP"] - metrics["mask_AP"] <= 0.01, (eager, metrics)
