"""`instaseg demo`: synthetic data -> fast recipe -> evaluation, on any CPU, offline."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate data, train the fast recipe for a fixed number of steps, evaluate")
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--minutes", type=float, default=None, help="cap on training time (default 8; steps end it first)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from instaseg.engine.demo import run_demo

    result = run_demo(args.out, minutes=args.minutes, seed=args.seed)
    print(
        f"demo: mask AP {result['mask_AP']:.3f}, box AP {result['box_AP']:.3f} "
        f"after {result['train_seconds']:.0f} s of training ({result['total_seconds']:.0f} s in all); "
        f"run folder: {result['out']}"
    )
    print(f"where it fails: {result['report']}")
    return 0
