"""`instaseg eval`: COCO box and mask AP of a checkpoint on a dataset, or of any COCO results file."""

from __future__ import annotations

import argparse
from typing import Any

from instaseg.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="COCO box/mask AP of a checkpoint, or of a results json")
    p.add_argument("--checkpoint", help="instaseg checkpoint to evaluate on --data")
    p.add_argument("--data", help="COCO dataset folder")
    p.add_argument("--split", default="val")
    p.add_argument("--gt", help="ground-truth COCO annotations json (with --pred)")
    p.add_argument("--pred", help="COCO results json (with --gt)")
    p.add_argument("--max-dets", type=int, default=100, help="detections per image considered")
    p.add_argument(
        "--area-from",
        choices=("mask", "box"),
        default="mask",
        help="what sizes a detection for mask APs/APm/APl: its mask area (detectron2, torchvision; default) or its "
        "box area (pycocotools' COCOeval on a results file with boxes)",
    )
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--out", help="folder for evaluate_result.json (and analysis/)")
    p.add_argument(
        "--analyze",
        action="store_true",
        help="also write OUT/analysis/: report.html with per-class and per-size tables, precision-recall curves, "
        "confusion matrices, error types (TIDE) and the worst images",
    )
    p.add_argument(
        "--score-threshold",
        type=float,
        help="with --analyze: the detections the confusion matrices and pictures show (default: where F1 peaks)",
    )
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from instaseg.engine.evaluate import evaluate
    from instaseg.evaluation.files import evaluate_files

    if args.score_threshold is not None and not args.analyze:
        raise UserError("--score-threshold goes with --analyze")
    scoring = {"max_dets": args.max_dets, "out": args.out, "area_from": args.area_from}
    scoring |= {"analyze": args.analyze, "score_threshold": args.score_threshold}
    if args.gt or args.pred:
        if not (args.gt and args.pred):
            raise UserError("--gt and --pred go together")
        result = evaluate_files(args.gt, args.pred, **scoring)
    elif args.checkpoint and args.data:
        result = evaluate(
            args.checkpoint, args.data, split=args.split, batch_size=args.batch_size, device=args.device, **scoring
        )
    else:
        raise UserError("give --checkpoint and --data, or --gt and --pred")
    print_metrics(result)
    print_per_class(result)
    if "analysis" in result:
        print_errors(result["analysis"])
    return 0


def _max_dets_of(metrics: dict) -> int:
    """The N of the ``AR{N}`` key (the recall at maxDets N) in a flat metrics dict."""
    for key in metrics:
        tail = key.split("_AR", 1)[1] if "_AR" in key else ""
        if tail.isdigit() and tail not in ("1", "10"):
            return int(tail)
    return 100


def _fmt(v: float | None) -> str:
    return "-" if v is None or v < 0 else f"{v:.3f}"


def print_metrics(result: dict, console: Any = None) -> None:
    """A compact table of the 12 COCO numbers for box and mask (-1, "no such objects", shows as "-"), and under
    it, with mask metrics, one line naming what sized detections for APs/APm/APl (``area_from``).

    ``result``: what `evaluate` / `evaluate_files` return, or `CocoEvaluator.compute`'s flat dict.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from instaseg.evaluation.coco import AREA_FROM, IOU_TYPES, PREFIX, stat_names

    console = console or Console()
    metrics = result.get("metrics", result)
    max_dets = result.get("max_dets") or _max_dets_of(metrics)
    prefixes = [PREFIX[t] for t in IOU_TYPES if f"{PREFIX[t]}_AP" in metrics]
    # one row per number: fits any terminal width, where 12 columns would not
    table = Table(title=f"COCO metrics (maxDets {max_dets})", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("metric")
    for prefix in prefixes:
        table.add_column(prefix, justify="right")
    for name in stat_names(max_dets):
        table.add_row(name, *(_fmt(metrics.get(f"{prefix}_{name}")) for prefix in prefixes))
    console.print(table)
    if "mask" in prefixes:
        area_from = result.get("area_from", "mask")
        convention = AREA_FROM.get(area_from, area_from)
        line = f"mask APs/APm/APl size detections by {convention}; box AP by box area (see --area-from)"
        console.print(line, soft_wrap=True)
    if result.get("output"):
        console.print(f"written to {result['output']}")


def print_per_class(result: dict, console: Any = None) -> None:
    """Per IoU type, one row per class: its objects, AP, AP50, AP75, AR and AP per size ("-": none to find)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    per_class = result.get("per_class") or {}
    stats = ("AP", "AP50", "AP75", "AR", "APs", "APm", "APl")
    for kind in ("mask", "box"):
        if not any(f"{kind}_AP50" in row for row in per_class.values()):
            continue
        table = Table(title=f"{kind} per class", title_justify="left", box=box.SIMPLE_HEAD)
        table.add_column("class", no_wrap=True)
        table.add_column("objects", justify="right")
        for stat in stats:
            table.add_column(stat, justify="right")
        for name, row in per_class.items():
            table.add_row(name, str(row.get("instances", "")), *(_fmt(row.get(f"{kind}_{s}")) for s in stats))
        console.print(table)


def print_errors(analysis: dict, console: Any = None) -> None:
    """The error types' counts and the AP50 fixing each would add, then where the report is."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from instaseg.evaluation.error_types import ERROR_TYPES

    console = console or Console()
    kinds = [k for k in ("mask", "box") if k in analysis]
    table = Table(title="errors (TIDE: foreground IoU 0.5, background 0.1)", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("error")
    for kind in kinds:
        table.add_column(f"{kind} count", justify="right")
        table.add_column(f"{kind} AP50 if fixed", justify="right")
    for error in ERROR_TYPES:
        cells = [(str(analysis[k]["counts"][error]), f"+{analysis[k]['delta_ap50'][error]:.3f}") for k in kinds]
        table.add_row(error, *(c for pair in cells for c in pair))
    console.print(table)
    console.print(f"analysis report: {analysis['report']}", soft_wrap=True)
