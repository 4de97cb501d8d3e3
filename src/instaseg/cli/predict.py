"""`instaseg predict`: run a checkpoint on images, folders, globs or videos."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict instances on images and write json, overlays, COCO results")
    p.add_argument("--checkpoint", required=True, help="instaseg checkpoint (or exported model)")
    p.add_argument(
        "--input", required=True, nargs="+", help="image, folder, glob or video; with --engine ray also list files "
        "(.txt, one path or URI per line) and object-store URIs (s3://...)"
    )
    p.add_argument("--out", default="predictions")
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument(
        "--backend",
        choices=("auto",),
        help="auto: export the checkpoint to every runtime here, keep those within 0.5 mask AP of fp32 on --val-data, "
        "run the fastest (the decision is cached per model and machine)",
    )
    p.add_argument("--val-data", help="dataset root whose val split --backend auto measures accuracy on")
    p.add_argument("--amp", action="store_true", help="a checkpoint on CUDA: fp16 autocast, channels-last weights")
    p.add_argument(
        "--tile",
        default="auto",
        type=_tile_choice,
        help="auto (what the model was trained with), off, or a tile size in pixels: large images are predicted "
        "on overlapping tiles plus the whole image, merged",
    )
    p.add_argument("--save-json", action="store_true")
    p.add_argument("--save-img", action="store_true")
    p.add_argument(
        "--coco-results",
        help="also write all detections as one COCO results json, for `instaseg eval --gt ... --pred FILE`",
    )
    p.add_argument(
        "--gt",
        help="the ground truth the COCO results will be scored against (annotations json or dataset folder): each "
        "image gets its id by file name; without it only files named by their id (000000397133.jpg) are accepted",
    )
    # no --bgr: files are decoded as RGB; channel order only matters for arrays, given through the Python API
    ray = p.add_argument_group("batch prediction on Ray Data (--engine ray; pip install 'instaseg[ray]')")
    ray.add_argument("--engine", choices=("local", "ray"), default="local")
    ray.add_argument("--concurrency", type=int, default=2, help="actors, each holding one model")
    ray.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPU share per actor (0: CPU actors)")
    ray.add_argument("--shard-size", type=int, default=256, help="images per results file (the unit of resuming)")
    ray.add_argument("--results-format", choices=("jsonl", "parquet"), default="jsonl")
    ray.add_argument("--ray-address", help="an existing Ray cluster (auto, ray://host:10001); default a local one")
    p.set_defaults(func=_predict)


def _tile_choice(value: str) -> str | int:
    if value in ("auto", "off"):
        return value
    if not value.isdigit() or int(value) < 32:
        raise argparse.ArgumentTypeError(f"expected auto, off or a tile size of at least 32 pixels, got {value!r}")
    return int(value)


def _predict(args: argparse.Namespace) -> int:
    if args.engine == "ray":
        from instaseg.cli.predict_run import run_predict_ray

        run_predict_ray(args)
        return 0
    from instaseg.cli.predict_run import run_predict

    run_predict(args)
    return 0
