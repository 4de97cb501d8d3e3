"""`instaseg demo`: synthetic data -> fast recipe -> evaluation, on any CPU, offline."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate data, train the fast recipe for a few minutes, evaluate")
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--minutes", type=float, default=None, help="training time budget (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from instaseg.engine.demo import run_demo

    result = run_demo(args.out, minutes=args.minutes, seed=args.seed)
    print(
        f"demo: mask AP {result['mask_AP']:.3f}, box AP {result['box_AP']:.3f} "
        f"after {result['train_seconds']:.0f} s of training; run folder: {result['out']}"
    )
    return 0
