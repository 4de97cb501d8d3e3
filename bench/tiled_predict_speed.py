"""Tiled prediction of one large small-object picture on each backend, through the same predictor.

    python bench/tiled_predict_speed.py [--tile 128] [--threads 1] [--work DIR]

The picture is the largest of a few `instaseg data synth --style small-objects` images (about 2000 px, objects of
6-20 px). The model is a random-init `maskrcnn_fast` (256 px input): the time goes into the backend calls, one per
batch of tiles, and that does not depend on training. Each tile is resized to the model's input, so a 128 px tile
costs a full 256 px inference: a picture of N tiles costs about N small images. Printed per backend: seconds per
picture (best of 2 after one untimed run), backend calls, and seconds per stage.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from instaseg.data.synthetic import generate_synthetic, small_objects_style
from instaseg.deploy.benchmark import exported_predictor, random_checkpoint
from instaseg.export import export_model
from instaseg.inference.predictor import create_model
from instaseg.utils.images import read_image


def models(work: Path, data: Path) -> dict[str, Path]:
    ckpt = random_checkpoint("maskrcnn_fast", work)
    fp32 = export_model(ckpt, format="openvino", out=work / "openvino")["path"]
    int8 = export_model(ckpt, format="openvino", out=work / "openvino", int8=True, calib_data=data, calib_size=6)
    return {"torch": ckpt, "openvino fp32": Path(fp32), "openvino int8": Path(int8["path"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", help="folder for the data and exports (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        data = generate_synthetic(work / "data", 6, seed=3, style=small_objects_style(2, "plain"))
        picture = max((read_image(p) for p in (data / "images").glob("*")), key=lambda a: a.shape[0] * a.shape[1])
        print(f"picture {picture.shape[1]}x{picture.shape[0]}, tiles of {args.tile} px, {args.threads} thread(s)")
        for label, path in models(work, data).items():
            if path.suffix == ".xml":
                predictor = exported_predictor(path, "cpu", args.threads, 0.3)[0]
                predictor.tiling = predictor.tiling.choose(args.tile)
            else:
                predictor = create_model(path, tile=args.tile, threshold=0.3)
            next(predictor.predict(picture))
            seconds = []
            for _ in range(2):
                predictor.reset_timings()
                start = time.perf_counter()
                next(predictor.predict(picture))
                seconds.append(time.perf_counter() - start)
            stages = ", ".join(f"{k} {np.sum(v):.1f} s" for k, v in predictor.timings.items())
            calls = len(predictor.timings["model"])
            print(f"{label:<15}{min(seconds):8.1f} s per picture, {calls} backend calls ({stages})")


if __name__ == "__main__":
    main()
