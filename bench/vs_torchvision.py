"""instaseg's backends against torchvision's own Mask R-CNN in eager mode: same pictures, same threads, one run.

    python bench/vs_torchvision.py speed [--images 4] [--threads 2] [--calib 8] [--work DIR]
    python bench/vs_torchvision.py accuracy --checkpoint CKPT --data DATASET [--threads 2] [--calib 40]

speed: torchvision's `maskrcnn_resnet50_fpn` (random weights, no download) at min_size 800 / max_size 1333 on the
COCO pictures of ../shared/datasets/tiny_coco (or shapes pictures). To give post-processing a trained model's load
on a busy picture, the box score cut is 0 (100 detections per image) and mask logits are centred near 0 (partly
filled masks). The same weights are loaded into instaseg's `maskrcnn_r50_fpn` recipe and exported; every instaseg
backend is timed end to end through the predictor (pre-processing, model, box mapping, mask pasting, RLE), and
torchvision eager as a user runs it (`model([tensor])`, then masks > 0.5). OpenVINO runs its static graph per
picture size (`--static-shapes first`, what a stream of one size runs once it has run long enough, see
instaseg/inference/backends/openvino.py); `--static-shapes off` times the dynamic graph. Every contender runs each
picture once untimed first. Agreement with torchvision's own detections is reported per backend (random weights make AP
meaningless here).

accuracy: the same comparison of COCO box/mask AP on a trained checkpoint and its validation split: torchvision's
full forward of the checkpoint's model vs each instaseg backend and precision (fp32, bf16, fp16, INT8).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from instaseg.deploy.benchmark import exported_predictor, file_size, time_predictor
from instaseg.evaluation.parity import compare_results, predictor_metrics
from instaseg.export import export_model

TINY_COCO = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "tiny_coco" / "images"
VARIANTS = [  # (label, format, precision, int8)
    ("onnxruntime fp32", "onnx", "fp32", False),
    ("openvino fp32", "openvino", "fp32", False),
    ("openvino bf16", "openvino", "bf16", False),
    ("openvino fp16", "openvino", "fp16", False),
    ("openvino int8", "openvino", "fp32", True),
]


def pictures(count: int) -> list[np.ndarray]:
    from instaseg.deploy.benchmark import synthetic_pictures
    from instaseg.utils.images import read_image

    paths = sorted(TINY_COCO.glob("*.jpg"))[:count] if TINY_COCO.is_dir() else []
    found = [read_image(p) for p in paths]
    return found + synthetic_pictures(count - len(found), 480, 640)


def torchvision_r50(folder: Path) -> tuple[torch.nn.Module, Path]:
    """torchvision's Mask R-CNN R50-FPN (random init, 100 detections per image) and an instaseg checkpoint of the
    same weights in the `maskrcnn_r50_fpn` recipe."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    from instaseg.models.checkpoint import save_checkpoint
    from instaseg.models.factory import build_model
    from instaseg.models.recipes import apply_overrides, load_recipe
    from instaseg.models.weights.loading import load_matching

    torch.manual_seed(0)
    tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91, box_score_thresh=0.0).eval()
    with torch.no_grad():
        tv.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(0.1)
        tv.roi_heads.mask_predictor.mask_fcn_logits.bias.add_(0.8)
    recipe = apply_overrides(load_recipe("maskrcnn_r50_fpn"), ["eval.score_threshold=0.0", "eval.max_dets=100"])
    ours = build_model(recipe, 90, weights="none")
    report = load_matching(ours, tv.state_dict(), source="torchvision")
    # torchvision without weights uses plain BatchNorm (its num_batches_tracked counters have no use in eval)
    unexpected = [k for k in report["unexpected"] if not k.endswith("num_batches_tracked")]
    assert not report["reinitialised"] and not report["missing"] and not unexpected, report
    names = [f"class{i}" for i in range(1, 91)]
    return tv, save_checkpoint(folder / "r50_tv.pt", ours, recipe, names, list(range(1, 91)))


def time_torchvision(model: torch.nn.Module, images: list[np.ndarray], warmup: int) -> dict:
    times = []
    with torch.inference_mode():
        for k, image in enumerate([*images[:warmup], *images]):
            start = time.perf_counter()
            out = model([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
            _ = out["masks"][:, 0] > 0.5
            if k >= warmup:
                times.append(time.perf_counter() - start)
    return {"median_ms": float(np.median(times) * 1000), "images_per_s": len(times) / float(np.sum(times))}


def export_variants(
    ckpt: Path, out: Path, calib: list[np.ndarray], calib_dir: Path, only: list[str] | None = None, reuse: bool = False
) -> dict[str, Path]:
    import cv2

    from instaseg.export.exporter import output_name

    calib_dir.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(calib):
        cv2.imwrite(str(calib_dir / f"{i:04d}.png"), np.ascontiguousarray(image[..., ::-1]))
    paths = {}
    for label, fmt, precision, int8 in VARIANTS:
        if only and label not in only:
            continue
        if reuse and (out / output_name(fmt, precision, int8)).is_file():  # a rerun times the same files again
            paths[label] = out / output_name(fmt, precision, int8)
            continue
        start = time.perf_counter()
        kwargs = {"int8": True, "calib_data": calib_dir, "calib_size": len(calib)} if int8 else {}
        paths[label] = Path(
            export_model(ckpt, format=fmt, out=out, dynamic=True, precision=precision, **kwargs)["path"]
        )
        print(f"  exported {label} in {time.perf_counter() - start:.0f} s ({file_size(paths[label]) / 2**20:.0f} MB)")
    return paths


def speed(args: argparse.Namespace, work: Path) -> None:
    from instaseg.inference.result import Result

    images = pictures(args.images)
    tv, ckpt = torchvision_r50(work)
    print(f"{len(images)} pictures, e.g. {images[0].shape[1]}x{images[0].shape[0]}, resized to 800/1333")
    # every contender first sees each picture once: a picture size met for the first time costs runtimes with
    # dynamic shapes a one-off set-up, which a deployed model on a fixed camera pays once, not per image
    warmup = len(images)
    reference = time_torchvision(tv, images, warmup)
    with torch.inference_mode():
        tv_out = [tv([torch.from_numpy(i).permute(2, 0, 1).float() / 255])[0] for i in images]
    tv_results = [_tv_result(o, i, Result) for o, i in zip(tv_out, images, strict=True)]
    paths = export_variants(ckpt, work / "models", pictures(args.calib), work / "calib", args.only, args.reuse)
    rows = {"torchvision eager": {**reference, "gflops": None}}
    for label, path in [("instaseg torch", ckpt), *paths.items()]:
        if args.only and label not in args.only:
            continue
        predictor = _predictor(path, args.threads, args.static_shapes)
        stats = time_predictor(predictor, images, 1, warmup, len(images))
        ours = [next(predictor.predict(i)) for i in images]
        agree = [compare_results(a, b, 0.5, margin=0.0) for a, b in zip(tv_results, ours, strict=True)]
        rows[label] = {
            "median_ms": stats["end_to_end"]["median_ms"],
            "images_per_s": stats["images_per_s"],
            "match": sum(a.matched for a in agree) / max(sum(a.matched + a.unmatched for a in agree), 1),
            "min_iou": min(a.min_mask_iou for a in agree),
            "box_gap": max(a.max_box_gap for a in agree),
        }
        print(f"  timed {label}: {rows[label]['median_ms']:.0f} ms/image")
    # timed again after ours: the ratio uses the mean of both, so a load change on a shared machine shows and halves
    again = time_torchvision(tv, images, warmup)
    print(f"  torchvision eager: {reference['median_ms']:.0f} ms/image before, {again['median_ms']:.0f} after")
    reference = {k: (reference[k] + again[k]) / 2 for k in reference}
    rows["torchvision eager"] = {**reference, "gflops": None}
    _print_speed(rows, reference)


def _predictor(path: Path, threads: int, static_shapes: str = "first"):
    from instaseg.deploy.benchmark import torch_predictor

    if path.suffix in (".onnx", ".xml"):
        return exported_predictor(path, "cpu", threads, 0.0, static_shapes)[0]
    return torch_predictor(path, None, "cpu", 0.0)[0]


def _tv_result(output: dict, image: np.ndarray, result_type: type):
    from instaseg.data.masks import mask_to_rle

    masks = (output["masks"][:, 0] > 0.5).numpy()
    return result_type(
        boxes=output["boxes"].numpy(),
        scores=output["scores"].numpy(),
        labels=output["labels"].numpy(),
        rles=[mask_to_rle(m) for m in masks],
        image_size=image.shape[:2],
        class_names=[str(i) for i in range(91)],
    )


def _print_speed(rows: dict, reference: dict) -> None:
    print(f"\nend to end per image, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':<20}{'ms/img':>9}{'img/s':>8}{'speed-up':>10}{'matched':>9}{'min IoU':>9}{'box gap':>9}")
    for label, r in rows.items():
        extra = "" if "match" not in r else f"{r['match'] * 100:8.1f}%{r['min_iou']:9.3f}{r['box_gap']:9.2f}"
        ratio = reference["median_ms"] / r["median_ms"]
        print(f"{label:<20}{r['median_ms']:9.0f}{r['images_per_s']:8.2f}{ratio:9.1f}x{extra}")
    print("matched: torchvision's detections scoring >= 0.5 found again (same label, box IoU >= 0.5)")


def accuracy(args: argparse.Namespace, work: Path) -> None:
    from instaseg.data.coco import load_dataset
    from instaseg.evaluation.coco import CocoEvaluator
    from instaseg.export.quantize import calibration_images
    from instaseg.models.factory import model_from_checkpoint
    from instaseg.utils.images import read_image

    gt = load_dataset(args.data)["val"]
    model, info = model_from_checkpoint(args.checkpoint)
    evaluator = CocoEvaluator(gt, 100, category_ids=info["category_ids"])
    start = time.perf_counter()
    with torch.inference_mode():
        for record in gt.images:
            image = read_image(gt.image_path(record))
            out = model([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
            evaluator.add(record["id"], {k: v for k, v in out.items()})
    rows = {"torchvision eager": (evaluator.compute(), time.perf_counter() - start)}
    calib = calibration_images(args.data, args.calib)  # from the train split: val stays unseen
    paths = export_variants(Path(args.checkpoint), work / "models", calib, work / "calib")
    for label, path in [("instaseg torch", Path(args.checkpoint)), *paths.items()]:
        predictor = _predictor(path, args.threads)
        start = time.perf_counter()
        rows[label] = (predictor_metrics(predictor, gt), time.perf_counter() - start)
    base = rows["torchvision eager"][0]
    print(f"\nCOCO AP on {args.data} val ({len(gt.images)} images), load average {os.getloadavg()[0]:.1f}")
    print(f"{'':<20}{'mask AP':>9}{'d mask':>8}{'box AP':>9}{'d box':>8}{'seconds':>9}")
    for label, (m, seconds) in rows.items():
        d_mask, d_box = (m["mask_AP"] - base["mask_AP"]) * 100, (m["box_AP"] - base["box_AP"]) * 100
        print(f"{label:<20}{m['mask_AP'] * 100:9.2f}{d_mask:+8.2f}{m['box_AP'] * 100:9.2f}{d_box:+8.2f}{seconds:9.1f}")
    print("AP in points (x100); d = difference to torchvision eager")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("speed", "accuracy"))
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib", type=int, default=8, help="INT8 calibration pictures")
    parser.add_argument("--checkpoint", help="accuracy: a trained instaseg checkpoint")
    parser.add_argument("--data", help="accuracy: its dataset folder (val split)")
    parser.add_argument("--work", help="folder for exports (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="time the exports already in --work again")
    parser.add_argument("--only", nargs="+", help="time only these rows, e.g. 'openvino int8'")
    parser.add_argument(
        "--static-shapes",
        choices=("first", "auto", "off"),
        default="first",
        help="OpenVINO: first (default) times the static graph per picture size that a stream of one size runs "
        "once it has run long enough; off times the dynamic graph",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()}, cpus {os.cpu_count()}, threads {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        (speed if args.mode == "speed" else accuracy)(args, work)


if __name__ == "__main__":
    main()
