"""Images/s of `instaseg predict --engine ray` against the single-process predictor, on the same images and model.

    python bench/ray_vs_single.py --images 400 --size 256 --workers 1 2

The single process uses every core for torch's threads; each Ray run splits the same cores over N actors (one
model each). The Ray figure is the whole job (actors starting, images read, shards written) after `ray.init`, so
it is what a user waits for; the shards of each run go to a fresh folder. Results must be identical (checked).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import torch

from instaseg.data.synthetic import synth_image
from instaseg.deploy.benchmark import random_checkpoint
from instaseg.inference.predictor import create_model
from instaseg.inference.ray_engine import predict_ray, result_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--recipe", default="maskrcnn_fast")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--shard-size", type=int, default=50)
    args = parser.parse_args()
    import ray

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="instaseg_ray_") as tmp:
        root = Path(tmp)
        ckpt = random_checkpoint(args.recipe, root, img_size=args.size)
        images = root / "images"
        images.mkdir()
        for i in range(args.images):
            cv2.imwrite(str(images / f"{i:06d}.jpg"), synth_image(i, args.size, 0)[0][..., ::-1])
        paths = sorted(str(p) for p in images.iterdir())

        torch.set_num_threads(cores)
        predictor = create_model(ckpt, threshold=0.5)
        start = time.perf_counter()
        results = zip(paths, predictor.predict(paths), strict=True)
        single = {p: json.loads(json.dumps(result_record(r, p))) for p, r in results}
        single_s = time.perf_counter() - start
        print(f"single process ({cores} threads): {args.images / single_s:.2f} images/s ({single_s:.1f} s)")

        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        for workers in args.workers:
            out = root / f"ray_{workers}"
            start = time.perf_counter()
            predict_ray(ckpt, [str(images)], out, concurrency=workers, shard_size=args.shard_size, threshold=0.5)
            seconds = time.perf_counter() - start
            records = {}
            for shard in sorted(out.glob("shard-*.jsonl")):
                for line in shard.read_text().splitlines():
                    record = json.loads(line)
                    records[record["input_path"]] = record
            same = sum(records.get(p) == single[p] for p in paths)
            print(
                f"ray, {workers} actor(s) x {max(1, cores // workers)} thread(s): {args.images / seconds:.2f} images/s "
                f"({seconds:.1f} s, {seconds / single_s:.2f}x the single process's time); "
                f"{same}/{len(paths)} images with identical results"
            )
        ray.shutdown()


if __name__ == "__main__":
    main()
