"""`instaseg weights convert FILE --model RECIPE --out CKPT`: a publisher's COCO model as an instaseg checkpoint."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    weights = sub.add_parser("weights", help="published weights: convert a publisher's file into a checkpoint")
    weights_sub = weights.add_subparsers(dest="weights_command", metavar="<command>", parser_class=type(weights))
    weights.set_defaults(func=lambda a: weights.print_help())

    p = weights_sub.add_parser(
        "convert",
        help="convert a publisher's COCO model (a file, or its name: downloaded once) into an instaseg checkpoint",
    )
    p.add_argument("source", help="the publisher's file (e.g. an MMDetection .pth), or its published name")
    p.add_argument("--model", required=True, help="the recipe it fits (instaseg models RECIPE lists its weights)")
    p.add_argument("--out", required=True, help="the instaseg checkpoint to write")
    p.set_defaults(func=_convert)


def _convert(args: argparse.Namespace) -> int:
    from instaseg.models.factory import checkpoint_from_weights

    done = checkpoint_from_weights(args.source, args.model, args.out)
    print(f"{done['path']}: {done['published']}, {done['conversion']}; {done['classes']} classes, recipe {args.model}")
    if done["reinitialised"]:
        print(f"re-initialised (shape differs): {', '.join(done['reinitialised'])}")
    return 0
