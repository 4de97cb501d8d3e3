"""`instaseg benchmark`: per-stage latency, throughput, memory, size and GFLOPs of a model on each backend."""

from __future__ import annotations

import argparse
import json
from typing import Any


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
    from instaseg.deploy.benchmark import benchmark

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

    from instaseg.deploy.autobackend import choose_backend
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


def print_benchmark(result: dict, console: Any = None) -> None:
    """Per-stage latency, throughput, memory, size and GFLOPs of each backend, one column per backend."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    h, w = result["image_size"]
    title = (
        f"{result['model']} on {result['device']}, {h}x{w} input, batch {result['batch_size']}, "
        f"{result['iters']} timed batches (load average {result['load_average'][0]:.1f})"
    )
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("median / p90")
    rows = result["backends"]
    for name in rows:
        table.add_column(name, justify="right")

    def row(label: str, fn: Any) -> None:
        table.add_row(label, *(fn(r) for r in rows.values()))

    for stage, label in (
        ("preprocess", "pre-processing ms"),
        ("model", "inference ms"),
        ("postprocess", "post-processing ms"),
    ):
        row(label, lambda r, s=stage: f"{r['stages'][s]['median_ms']:.1f} / {r['stages'][s]['p90_ms']:.1f}")
    row("end to end ms", lambda r: f"{r['end_to_end']['median_ms']:.1f} / {r['end_to_end']['p90_ms']:.1f}")
    row("images / s", lambda r: f"{r['images_per_s']:.2f}")
    row("detections / image", lambda r: f"{r['detections_per_image']:.0f}")
    row("peak memory MB", lambda r: f"{r['peak_rss_mb']:.0f}")
    row("model size MB", lambda r: f"{r['model_mb']:.1f}")
    row("GFLOPs", lambda r: "-" if r.get("gflops") is None else f"{r['gflops']:.1f}")
    console.print(table)
    console.print("latencies per batch; peak memory: resident memory of the process while timed")


def print_choice(result: dict, console: Any = None) -> None:
    """The table the choice was made from, the winner marked."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    choice = result["choice"]
    source = "cached decision" if result["cached"] else "measured now"
    title = (
        f"backend choice ({source}): mask AP on {result['images']} validation images, latency end to end per image; "
        f"kept within {result['tolerance']} AP of {result['rows'][0].label}"
    )
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("backend", "mask AP", "box AP", "ms / image", "images / s", "kept", "note"):
        table.add_column(column, justify="left" if column in ("backend", "note") else "right")
    for row in result["rows"]:
        measured = row.mask_ap is not None
        table.add_row(
            ("-> " if row.label == choice.label else "   ") + row.label,
            f"{row.mask_ap:.1f}" if measured else "-",
            f"{row.box_ap:.1f}" if measured else "-",
            f"{row.median_ms:.1f}" if measured else "-",
            f"{row.images_per_s:.2f}" if measured else "-",
            "yes" if row.kept else "no",
            row.note,
        )
    console.print(table)
    console.print(f"chosen: {choice.label} ({choice.model})", soft_wrap=True)
