"""`instaseg train`: train a recipe on a COCO dataset."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a COCO dataset")
    p.add_argument("--model", required=True, help="recipe name (see `instaseg models`) or a recipe yaml")
    p.add_argument("--data", required=True, help="COCO dataset folder")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--img-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--devices", type=int, default=1, help="GPUs (or CPU processes) per node")
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument("--weights", default=None, help="none | imagenet | coco | PATH")
    p.add_argument("--out", default=None, help="run folder (default runs/<model>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")
    p.add_argument(
        "--auto",
        choices=("on", "off"),
        default=None,
        help="fit input size, tiling, anchors and detections per image to the training data (default: on); "
        "off keeps the recipe as written",
    )
    p.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted recipe override, e.g. -o train.ema=false (repeatable)",
    )
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from instaseg.engine.train import train

    result = train(
        model=args.model,
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        img_size=args.img_size,
        lr=args.lr,
        device=args.device,
        devices=args.devices,
        num_nodes=args.num_nodes,
        weights=args.weights,
        out=args.out,
        resume=args.resume,
        overrides=args.override,
        auto=None if args.auto is None else args.auto == "on",
        announce=print,
    )
    if result.get("is_global_zero", True):
        print(f"best mask AP {result['best_metrics'].get('mask_AP', float('nan')):.4f}  run folder: {result['out']}")
    return 0
