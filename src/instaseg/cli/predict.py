"""`instaseg predict`: run a checkpoint on images, folders, globs or videos."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict instances on images and write json, overlays, COCO results")
    p.add_argument("--checkpoint", required=True, help="instaseg checkpoint (or exported model)")
    p.add_argument("--input", required=True, nargs="+", help="image, folder, glob or video")
    p.add_argument("--out", default="predictions")
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--save-json", action="store_true")
    p.add_argument("--save-img", action="store_true")
    p.add_argument("--coco-results", help="also write all detections as one COCO results json")
    # no --bgr: files are decoded as RGB; channel order only matters for arrays, given through the Python API
    p.set_defaults(func=_predict)


def _predict(args: argparse.Namespace) -> int:
    from instaseg.inference.cli_predict import run_predict

    run_predict(args)
    return 0
