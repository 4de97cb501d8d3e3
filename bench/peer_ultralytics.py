"""The Ultralytics side of `bench/peer_speed.py`, run by that script in Ultralytics' own environment.

    /work/ref/ultra/venv/bin/python bench/peer_ultralytics.py --work DIR --threads 2

Ultralytics is AGPL-3.0: nothing of it is copied into instaseg; this process only calls its public API (``YOLO``,
``export``, ``predict``). It reads one json command per line on stdin and answers one json line on stdout:
- ``{"op": "load", "key": K, "model": "yolo11n-seg", "instances": N, "precision": "fp32" | "bf16" | "default"}``:
  builds the model from its yaml (random weights, nothing downloaded), makes it output exactly N instances the way
  `fixed_instances` does ours, exports it to OpenVINO at 640 x 640 (cached under ``--work``) and loads it with
  ``YOLO(folder)``. Precision: Ultralytics compiles with no INFERENCE_PRECISION_HINT, so on a CPU with AMX or
  avx512_bf16 OpenVINO computes its "fp32" export in bf16 ("default"); "fp32" and "bf16" recompile the same IR
  with that hint set explicitly.
- ``{"op": "time", "key": K, "pictures": [png paths], "repeats": R}``: per picture, the wall time of
  ``model.predict(picture, imgsz=640, max_det=N)`` (pre-processing, model, NMS, masks: its default
  ``retina_masks=False`` gives masks at the 640 x 640 network input, which is the picture's frame here) and the
  model-only time Ultralytics reports, in ms; detections per picture and mean mask fill inside the box.
- ``{"op": "info", "key": K}``: GFLOPs (Ultralytics' own count) and the compiled precision.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixed_instances import SCORE_OFF, SCORE_ON, normalise_activations, square_pictures  # noqa: E402

os.environ.setdefault("YOLO_OFFLINE", "1")
SIZE = 640


def fix_head(model, instances: int) -> None:
    """Class predictors zeroed (bias SCORE_OFF, SCORE_ON for class 0 on stride 32 when N > 0); box predictors zeroed
    with every side's distance distribution at one stride (64 px squares at stride 32); coefficients random."""
    head = model.model.model[-1]
    with torch.no_grad():
        for level, (box, cls, coef) in enumerate(zip(head.cv2, head.cv3, head.cv4, strict=True)):
            cls[-1].weight.zero_()
            cls[-1].bias.fill_(SCORE_OFF)
            if instances and level == len(head.cv3) - 1:
                cls[-1].bias[0] = SCORE_ON
            box[-1].weight.zero_()
            box[-1].bias.fill_(SCORE_OFF)
            box[-1].bias.view(4, head.reg_max)[:, 1] = -SCORE_OFF
            # its prototypes are SiLU outputs (mostly positive): a positive bias keeps every mask non-empty, which
            # Ultralytics needs to keep a detection at all; its mask cost does not depend on the fill
            coef[-1].weight.normal_(0.0, coef[-1].weight[0].numel() ** -0.5)
            coef[-1].bias.normal_(2.0, 0.5)


def export(name: str, instances: int, work: Path) -> Path:
    folder = work / f"{name}_{instances}_openvino_model"
    if folder.is_dir():
        return folder
    from ultralytics import YOLO

    torch.manual_seed(0)
    yolo = YOLO(f"{name}.yaml")
    net = yolo.model.eval()
    picture = torch.from_numpy(square_pictures(1, SIZE)[0]).permute(2, 0, 1).float()[None] / 255
    normalise_activations(net, lambda: net(picture))
    fix_head(yolo, instances)
    exported = Path(yolo.export(format="openvino", imgsz=SIZE, dynamic=False, verbose=False))
    exported.rename(folder)
    return folder


class Peer:
    def __init__(self, work: Path, threads: int):
        self.work, self.threads = work, threads
        self.models: dict[str, dict] = {}

    def load(self, key: str, model: str, instances: int, precision: str) -> dict:
        import openvino as ov
        from ultralytics import YOLO

        folder = export(model, instances, self.work)
        yolo = YOLO(str(folder), task="segment")
        first = square_pictures(1, SIZE)[0][..., ::-1]
        yolo.predict(first, imgsz=SIZE, max_det=max(instances, 1), verbose=False)  # builds the predictor
        backend = yolo.predictor.model.backend
        if precision != "default" or self.threads:
            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self.threads}
            if precision != "default":
                config["INFERENCE_PRECISION_HINT"] = {"fp32": "f32", "bf16": "bf16"}[precision]
            core = ov.Core()
            backend.ov_compiled_model = core.compile_model(str(next(folder.glob("*.xml"))), "CPU", config)
        compiled = str(backend.ov_compiled_model.get_property("INFERENCE_PRECISION_HINT"))
        self.models[key] = {"yolo": yolo, "instances": instances, "compiled": compiled, "name": model}
        return {"compiled_precision": compiled}

    def time(self, key: str, pictures: list[str], repeats: int) -> dict:
        entry = self.models[key]
        yolo, cap = entry["yolo"], entry["instances"] or 300  # 300: Ultralytics' default max_det
        images = [cv2.imread(p) for p in pictures]  # BGR, as Ultralytics takes numpy arrays
        end_to_end, model, counts, fills = [], [], [], []
        for _ in range(repeats):
            for image in images:
                start = time.perf_counter()
                result = yolo.predict(image, imgsz=SIZE, max_det=cap, verbose=False)[0]
                end_to_end.append((time.perf_counter() - start) * 1000)
                model.append(result.speed["inference"])
                counts.append(len(result))
                if len(result):
                    masks = result.masks.data.cpu().numpy() > 0.5
                    boxes = result.boxes.xyxy.cpu().numpy()
                    areas = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1)
                    fills.append(float(np.mean(masks.sum(axis=(1, 2)) / areas)))
        return {"end_to_end_ms": end_to_end, "model_ms": model, "detections": counts, "mask_fill": fills}

    def info(self, key: str) -> dict:
        from ultralytics import YOLO

        entry = self.models[key]
        gflops = YOLO(f"{entry['name']}.yaml").info()[3]  # (layers, parameters, gradients, GFLOPs)
        return {"gflops": float(gflops), "compiled_precision": entry["compiled"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    answers, sys.stdout = sys.stdout, sys.stderr  # Ultralytics logs to stdout: keep that for the answers alone
    args.work.mkdir(parents=True, exist_ok=True)
    os.chdir(args.work)  # Ultralytics writes its exports beside the working directory
    torch.set_num_threads(args.threads)
    peer = Peer(args.work, args.threads)
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        try:
            answer = getattr(peer, op)(**command)
        except Exception as e:  # noqa: BLE001 - reported to the driver, which stops with it
            answer = {"error": f"{type(e).__name__}: {e}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
