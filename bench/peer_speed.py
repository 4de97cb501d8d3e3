"""instaseg's one-stage models against Ultralytics YOLO-seg on a CPU, side by side in one run: OpenVINO at 640 x 640,
end to end through each tool's own predict (pre-processing, model, NMS, masks) and model-only, at 0, 10 and 100
instances, in fp32 and each tool's faster CPU precisions.

    python bench/peer_speed.py [--peer-python /work/ref/ultra/venv/bin/python] [--runs 3] [--pictures 8]
        [--pairs rtmdet_ins_tiny:yolo11n-seg ppyoloe_seg_s:yolo11s-seg] [--instances 0 10 100]
        [--precisions fp32 bf16 int8] [--threads 2]

Ultralytics (AGPL-3.0) lives in its own environment and is only ever called, in its own process
(`bench/peer_ultralytics.py`): make it with
``python3 -m venv --system-site-packages /work/ref/ultra/venv && /work/ref/ultra/venv/bin/pip install ultralytics``
(it reuses the installed torch and openvino; models are built from their yaml with random weights, nothing is
downloaded).

What is timed, the same way on both sides:
- pictures: tiny_coco's first ``--pictures``, centre-cropped to squares and resized to 640 x 640 (no padding on
  either side); decoded before timing; each tool gets a numpy array (RGB for instaseg, BGR for Ultralytics, as each
  documents). End to end is the wall time of one ``predict`` call per picture; model-only is what each tool's own
  timer reports for the network (instaseg: ``Predictor.timings["model"]``, Ultralytics: ``result.speed``).
- instance counts: random weights made to output exactly 0, 10 or 100 instances per picture
  (`fixed_instances`: class-predictor biases at -20 for 0; for N, class 0 confident on every stride-32 point
  only, boxes fixed 64 px squares that no NMS suppresses, and the cap on detections, ``eval.max_dets`` /
  ``max_det``, at N). Detections per picture are printed to show it held.
- precision: fp32 sets ``INFERENCE_PRECISION_HINT=f32`` on both; bf16 sets bf16 on both; int8 is instaseg's
  NNCF export calibrated on 20 other tiny_coco squares (Ultralytics' INT8 export needs a labelled dataset yaml: not
  run here). Note: Ultralytics compiles its OpenVINO models without a precision hint, so on CPUs with AMX or
  avx512_bf16 its "fp32" export computes in bf16: its out-of-the-box numbers are the bf16 rows.
- 2 OpenVINO threads each (and 2 torch threads for their pre/post-processing); each run times every picture once
  on one side then the other, the side going first alternating; the printed range is over the runs' medians.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixed_instances import export_fixed, square_pictures  # noqa: E402

DEFAULT_PEER_PYTHON = Path("/work/ref/ultra/venv/bin/python")
PEER_SCRIPT = Path(__file__).resolve().parent / "peer_ultralytics.py"
CALIBRATION = 20


class PeerProcess:
    """bench/peer_ultralytics.py in Ultralytics' environment, one json command per line."""

    def __init__(self, python: Path, work: Path, threads: int):
        self.proc = subprocess.Popen(
            [str(python), str(PEER_SCRIPT), "--work", str(work), "--threads", str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(work / "peer.log", "a"),  # noqa: SIM115 - lives as long as the process
            text=True,
        )

    def ask(self, **command) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the Ultralytics process ended; see peer.log in the work folder")
        answer = json.loads(line)
        if "error" in answer:
            raise SystemExit(f"Ultralytics side: {answer['error']}")
        return answer

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def our_predictor(xml: Path, threads: int):
    from instaseg.inference.backends.openvino import load
    from instaseg.inference.predictor import Predictor

    backend, info = load(xml, threads=threads)
    return Predictor(backend, info["class_names"], info.get("category_ids")), info


def time_ours(predictor, pictures: list[np.ndarray]) -> dict:
    end_to_end, model, counts = [], [], []
    for picture in pictures:
        predictor.reset_timings()
        start = time.perf_counter()
        results = list(predictor.predict(picture))
        end_to_end.append((time.perf_counter() - start) * 1000)
        model.append(predictor.timings["model"][0] * 1000)
        counts.append(len(results[0]))
    return {"end_to_end_ms": end_to_end, "model_ms": model, "detections": counts}


def measure(ours, peer: PeerProcess, key: str, pictures, paths, runs: int) -> dict:
    """``runs`` interleaved runs over every picture; per side the medians of each run."""
    time_ours(ours, pictures[:1])  # warm-up
    peer.ask(op="time", key=key, pictures=paths[:1], repeats=1)
    out = {"ours": [], "peer": [], "load": []}
    for run in range(runs):
        sides = [("ours", lambda: time_ours(ours, pictures)), ("peer", lambda: peer.ask(op="time", key=key,
                                                                                        pictures=paths, repeats=1))]
        for side, timed in sides if run % 2 == 0 else sides[::-1]:
            out[side].append(timed())
        out["load"].append(os.getloadavg()[0])
    return out


def summary(runs: list[dict], field: str) -> tuple[float, float]:
    medians = [float(np.median(r[field])) for r in runs]
    return min(medians), max(medians)


def fmt(lo: float, hi: float) -> str:
    return f"{lo:6.1f}-{hi:6.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", type=Path, default=DEFAULT_PEER_PYTHON)
    parser.add_argument("--pairs", nargs="+", default=["rtmdet_ins_tiny:yolo11n-seg", "ppyoloe_seg_s:yolo11s-seg"])
    parser.add_argument("--instances", nargs="+", type=int, default=[0, 10, 100])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "int8"], choices=["fp32", "bf16", "int8"])
    parser.add_argument("--pictures", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "instaseg_peer_speed")
    args = parser.parse_args()
    if not args.peer_python.is_file():
        raise SystemExit(
            f"no Python at {args.peer_python}: make Ultralytics' environment with\n"
            f"  python3 -m venv --system-site-packages {args.peer_python.parent.parent} && "
            f"{args.peer_python.parent}/pip install ultralytics\nor pass --peer-python"
        )
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    squares = square_pictures(args.pictures + CALIBRATION)
    pictures, calib = squares[: args.pictures], squares[args.pictures :]
    paths = []
    for i, picture in enumerate(pictures):
        paths.append(str(args.work / f"picture_{i:02d}.png"))
        cv2.imwrite(paths[-1], picture[..., ::-1])
    peer = PeerProcess(args.peer_python, args.work, args.threads)
    print(f"{args.pictures} tiny_coco pictures at 640x640, {args.threads} threads, {args.runs} runs; "
          f"ranges over the runs' medians (ms per picture)")
    header = (f"{'model':<18}{'GFLOPs':>7} {'prec':<5}{'inst':>5}  {'end to end':>13}  {'model only':>13}  "
              f"{'dets':>5} {'compiled':<9} {'load':>10}")
    print(header)
    try:
        for pair in args.pairs:
            ours_name, peer_name = pair.split(":")
            for precision in args.precisions:
                for instances in args.instances:
                    row(ours_name, peer_name, precision, instances, args, peer, pictures, calib, paths)
    finally:
        peer.close()


def row(ours_name, peer_name, precision, instances, args, peer, pictures, calib, paths) -> None:
    xml = export_fixed(ours_name, instances, precision, args.work / "ours", calib)
    ours, info = our_predictor(xml, args.threads)
    key = f"{peer_name}:{instances}:{precision}"
    peer_state = None
    if precision != "int8":
        peer_state = peer.ask(op="load", key=key, model=peer_name, instances=instances, precision=precision)
    if peer_state is None:  # no Ultralytics INT8: time ours alone
        runs = [time_ours(ours, pictures) for _ in range(args.runs)]
        result = {"ours": runs, "peer": [], "load": [os.getloadavg()[0]]}
    else:
        result = measure(ours, peer, key, pictures, paths, args.runs)
    load = f"{min(result['load']):.1f}-{max(result['load']):.1f}"
    ours_compiled = ours.backend.inference_precision
    line(ours_name, info.get("gflops"), precision, instances, result["ours"], ours_compiled, load)
    if result["peer"]:
        gflops = peer.ask(op="info", key=key)["gflops"]
        line(peer_name, gflops, precision, instances, result["peer"], peer_state["compiled_precision"], load)
        paired = zip(result["ours"], result["peer"], strict=True)  # run i of each side ran back to back
        ratios = [np.median(o["end_to_end_ms"]) / np.median(p["end_to_end_ms"]) for o, p in paired]
        print(f"{'  instaseg / Ultralytics, end to end':<38}{min(ratios):5.2f}-{max(ratios):.2f}")
    sys.stdout.flush()


def line(name, gflops, precision, instances, runs, compiled, load) -> None:
    dets = sorted({d for r in runs for d in r["detections"]})
    dets_text = str(dets[0]) if len(dets) == 1 else f"{dets[0]}-{dets[-1]}"
    compiled = str(compiled).replace("<Type: '", "").replace("'>", "").replace("float32", "f32").replace(
        "bfloat16", "bf16")
    gflops_text = f"{gflops:7.1f}" if gflops else " " * 7
    print(f"{name:<18}{gflops_text} {precision:<5}{instances:>5}  {fmt(*summary(runs, 'end_to_end_ms'))}  "
          f"{fmt(*summary(runs, 'model_ms'))}  {dets_text:>5} {compiled:<9} {load:>10}")


if __name__ == "__main__":
    main()
