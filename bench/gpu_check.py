"""What only a GPU can show, in one run of a few minutes (`bash bench/gpu_check.sh`).

1. AMP training: Mask R-CNN R50-FPN and RTMDet-Ins-tiny train a few steps through `instaseg.train` in 16-mixed
   precision on a generated shapes set (finite losses, seconds per step).
2. TensorRT: Mask R-CNN R50-FPN (800x1333) and RTMDet-Ins-tiny (640) exported to fp16 engines; parity with eager
   fp32 through the one predictor (boxes within 1 px, mask IoU >= 0.98 per matched instance).
3. Latency, end to end through the predictor, CUDA-synchronised: torchvision's eager Mask R-CNN fp32 (the
   baseline), instaseg torch fp32, torch AMP and TensorRT fp16; RTMDet-Ins-tiny at 640 on TensorRT fp16.

Models are random-init with busy outputs (every detection kept, masks partly filled: what a crowded picture costs
a trained model); no weights are downloaded. Each part reports its own failure and the rest go on.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from instaseg.deploy.benchmark import random_checkpoint, synthetic_pictures, time_predictor

GOALS = {"maskrcnn_vs_torchvision": 3.0, "rtmdet_tiny_trt_fp16_ms": 1.7}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def section(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def amp_training(folder: Path, steps: int, device: str) -> None:
    import instaseg
    from instaseg.data.synthetic import generate_synthetic

    data = generate_synthetic(folder / "shapes", num_images=24, img_size=320, seed=0)
    for recipe in ("maskrcnn_r50_fpn", "rtmdet_ins_tiny"):
        start = time.perf_counter()
        result = instaseg.train(
            recipe,
            data,
            img_size=320,
            batch_size=4,
            device=device,
            weights="none",
            out=folder / f"train_{recipe}",
            overrides=["train.precision=16-mixed", f"train.max_steps={steps}", "train.epochs=100"],
        )
        seconds = time.perf_counter() - start
        metrics = result.get("best_metrics") or {}
        print(f"{recipe}: {steps} AMP steps + validation in {seconds:.1f} s, done={result.get('done_flag')}, "
              f"mask AP {metrics.get('mask_AP', float('nan')):.3f}")


def torchvision_latency(pictures: list[np.ndarray], iters: int, device: str) -> float:
    """Median ms per image of torchvision's eager Mask R-CNN R50-FPN fp32, its own transform included."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, box_score_thresh=0.0).to(device).eval()
    tensors = [torch.from_numpy(p).permute(2, 0, 1).float().div(255) for p in pictures]
    times = []
    with torch.inference_mode():
        for i in range(iters + 3):
            sync(device)
            start = time.perf_counter()
            out = model([tensors[i % len(tensors)].to(device)])[0]
            _ = (out["masks"] > 0.5).cpu()  # pasted masks back on the host, as a user gets them
            sync(device)
            if i >= 3:
                times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def parity(checkpoint: Path, engine: Path, pictures: list[np.ndarray]) -> str:
    import instaseg
    from instaseg.evaluation.parity import compare_results

    eager = instaseg.create_model(checkpoint, device="cuda", threshold=0.3)
    fast = instaseg.create_model(engine, device="cuda", threshold=0.3)
    worst_gap, worst_iou, unmatched, matched = 0.0, 1.0, 0, 0
    for picture in pictures:
        agreement = compare_results(next(eager.predict(picture)), next(fast.predict(picture)), min_score=0.3)
        worst_gap = max(worst_gap, agreement.max_box_gap)
        worst_iou = min(worst_iou, agreement.min_mask_iou)
        unmatched += agreement.unmatched
        matched += agreement.matched
    ok = worst_gap <= 1.0 and worst_iou >= 0.98
    return (f"{'PASS' if ok else 'FAIL'}: {matched} matched instances, {unmatched} unmatched, "
            f"largest box gap {worst_gap:.2f} px, smallest mask IoU {worst_iou:.3f}")


def latency_rows(
    checkpoint: Path, engine: Path | None, pictures: list[np.ndarray], iters: int, device: str
) -> dict[str, dict]:
    import instaseg

    rows = {}
    variants = {"instaseg torch fp32": (checkpoint, False)}
    if device == "cuda":
        variants["instaseg torch amp"] = (checkpoint, True)
    if engine is not None:
        variants["instaseg tensorrt fp16"] = (engine, False)
    for label, (path, amp) in variants.items():
        predictor = instaseg.create_model(path, device=device, threshold=0.5, amp=amp)
        for batch in (1, 8):
            timing = time_predictor(predictor, pictures, batch_size=batch, warmup=3, iters=iters)
            rows[f"{label} (batch {batch})"] = timing
    return rows


def print_rows(rows: dict[str, dict], baseline_ms: float | None) -> None:
    print(f"{'':34s} {'pre ms':>8s} {'model ms':>9s} {'post ms':>8s} {'end ms':>8s} {'img/s':>8s} {'GPU MB':>8s}")
    for label, r in rows.items():
        s = r["stages"]
        print(f"{label:34s} {s['preprocess']['median_ms']:8.2f} {s['model']['median_ms']:9.2f} "
              f"{s['postprocess']['median_ms']:8.2f} {r['end_to_end']['median_ms']:8.2f} {r['images_per_s']:8.1f} "
              f"{r.get('peak_cuda_mb', float('nan')):8.0f}")
    if baseline_ms:
        best = min(r["images_per_s"] for k, r in rows.items() if "batch 1" in k)
        print(f"torchvision eager fp32: {baseline_ms:.2f} ms/image; best instaseg batch-1 speed-up "
              f"{best * baseline_ms / 1000:.2f}x (goal >= {GOALS['maskrcnn_vs_torchvision']}x)")


def run_part(name: str, fn, *args) -> object:
    section(name)
    try:
        return fn(*args)
    except Exception:  # a failed part is reported and the check goes on
        traceback.print_exc()
        print(f"{name}: FAILED")
        return None


def export_engine(checkpoint: Path, folder: Path, device: str) -> Path | None:
    if device != "cuda" or importlib.util.find_spec("tensorrt") is None:
        print("tensorrt is not installed: TensorRT parts skipped (pip install 'instaseg[tensorrt]')")
        return None
    from instaseg.export import export_model

    start = time.perf_counter()
    path = Path(export_model(checkpoint, format="tensorrt", precision="fp16", out=folder)["path"])
    print(f"built {path.name} in {time.perf_counter() - start:.0f} s")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="AMP training steps per model")
    parser.add_argument("--iters", type=int, default=30, help="timed batches per latency row")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script's own code, no GPU figures")
    args = parser.parse_args()
    device = args.device
    assert device == "cpu" or torch.cuda.is_available(), "this check needs a CUDA GPU"
    gpu = torch.cuda.get_device_name() if device == "cuda" else "none (dry run on the CPU)"
    print(f"GPU {gpu}, torch {torch.__version__}, "
          f"tensorrt {'installed' if importlib.util.find_spec('tensorrt') else 'missing'}")
    with tempfile.TemporaryDirectory(prefix="instaseg_gpu_") as tmp:
        folder = Path(tmp)
        run_part("AMP training", amp_training, folder, args.steps, device)
        big = synthetic_pictures(8, 800, 1333)
        mask_rcnn = random_checkpoint("maskrcnn_r50_fpn", folder)
        engine = run_part("TensorRT export: maskrcnn_r50_fpn fp16", export_engine, mask_rcnn, folder / "mrcnn", device)
        if engine:
            print(run_part("parity maskrcnn_r50_fpn", parity, mask_rcnn, engine, big[:4]))
        baseline = run_part("torchvision eager fp32", torchvision_latency, big, args.iters, device)
        rows = run_part("latency maskrcnn_r50_fpn 800x1333", latency_rows, mask_rcnn, engine, big, args.iters, device)
        if rows:
            print_rows(rows, baseline)
        small = synthetic_pictures(8, 640, 640)
        rtmdet = random_checkpoint("rtmdet_ins_tiny", folder, img_size=640)
        engine = run_part("TensorRT export: rtmdet_ins_tiny fp16", export_engine, rtmdet, folder / "rtm", device)
        if engine:
            print(run_part("parity rtmdet_ins_tiny", parity, rtmdet, engine, small[:4]))
        rows = run_part("latency rtmdet_ins_tiny 640", latency_rows, rtmdet, engine, small, args.iters, device)
        if rows:
            print_rows(rows, None)
            trt = rows.get("instaseg tensorrt fp16 (batch 1)")
            if trt:
                print(f"RTMDet-Ins-tiny TensorRT fp16 end to end {trt['end_to_end']['median_ms']:.2f} ms "
                      f"(goal <= {GOALS['rtmdet_tiny_trt_fp16_ms']} ms)")


if __name__ == "__main__":
    main()
