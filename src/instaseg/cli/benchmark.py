"""`instaseg benchmark`: per-stage latency, throughput, memory, size and GFLOPs of a model on each backend."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="time a model stage by stage on torch, onnxruntime and openvino")
    p.add_argument("--model", required=True, help="recipe NAME (random weights), checkpoint, or exported .onnx/.xml")
    p.add_argument(
        "--backend",
        nargs="+",
        choices=("torch", "onnxruntime", "openvino", "tensorrt", "auto"),
        help="one or more (default: torch, or the exported file's runtime); auto: every runtime and precision "
        "available here, measured for mask AP on --val-data and latency, the fastest accurate one chosen",
    )
    p.add_argument("--val-data", help="dataset root (val split: accuracy; train split: INT8 calibration) for auto")
    p.add_argument("--tolerance", type=float, default=0.5, help="mask AP points auto may lose against fp32 eager")
    p.add_argument("--refresh", action="store_true", help="auto: measure again instead of reading the cached decision")
    p.add_argument("--img-size", type=int, help="input size (default: the model's)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    p.add_argument("--iters", type=int, default=20, help="timed batches")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, help="CPU threads for every backend (default: each runtime's choice)")
    p.add_argument("--threshold", type=float, help="score threshold (default: the model's; 0 for a recipe name)")
    p.add_argument("--json", action="store_true", help="print the result as json")
    p.set_defaults(func=_benchmark)


def _benchmark(args: argparse.Namespace) -> int:
    from instaseg.deploy.benchmark import benchmark, print_benchmark

    if args.backend and "auto" in args.backend:
        return _auto(args)
    result = benchmark(
        args.model,
        backends=args.backend,
        img_size=args.img_size,
        batch_size=args.batch_size,
        warmup=args.warmup,
        iters=args.iters,
        device=args.device,
        threads=args.threads,
        threshold=args.threshold,
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_benchmark(result)
    return 0


def _auto(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from instaseg.deploy.autobackend import choose_backend, print_choice
    from instaseg.errors import UserError

    if args.backend != ["auto"]:
        raise UserError("--backend auto measures every backend itself: give it alone")
    if not args.val_data:
        raise UserError("--backend auto needs --val-data: a dataset root whose val split measures accuracy")
    result = choose_backend(
        args.model, args.val_data, device=args.device, tolerance=args.tolerance, iters=args.iters, refresh=args.refresh
    )
    if args.json:
        print(json.dumps({**result, "choice": asdict(result["choice"]), "rows": [asdict(r) for r in result["rows"]]}))
    else:
        print_choice(result)
    return 0
