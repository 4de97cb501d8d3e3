"""`instaseg predict`: images, folders, globs and videos -> per-image json and overlays, optional COCO results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from instaseg.data.writer import refuse_inside_sources
from instaseg.errors import UserError
from instaseg.inference.predictor import Predictor, create_model
from instaseg.inference.result import Result
from instaseg.inference.sources import count_inputs
from instaseg.utils.io import atomic_write_json


def coco_image_id(result: Result, order: int) -> int:
    """COCO's convention names files by image id (000000397133.jpg): use that number, else the 1-based order."""
    stem = Path(result.name).name
    if result.frame_index is None and stem.isdigit():
        return int(stem)
    return order


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]predicting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}"),
        console=console,
    )


def _summary(predictor: Predictor, images: int, instances: int, skipped: int, out: Path | None) -> str:
    stages = ", ".join(f"{s} {v['mean_s'] * 1000:.0f} ms" for s, v in predictor.timing_summary().items())
    where = f" -> {out}" if out else ""
    skip = f", {skipped} skipped" if skipped else ""
    return f"{images} images, {instances} instances{skip}{where} (per batch: {stages})"


def run_predict(args: argparse.Namespace) -> dict:
    """Run the command; returns counts. Unreadable images are reported on stderr, one line each, and skipped."""
    save_json = args.save_json or not args.save_img
    save_img = args.save_img or not args.save_json
    out = Path(args.out)
    if save_json or save_img:  # outputs inside an input folder would alter it, and be read back on the next run
        refuse_inside_sources(out, [Path(p) for p in args.input if Path(p).is_dir()])
    predictor = create_model(args.checkpoint, device=getattr(args, "device", "cpu"), threshold=args.threshold)
    total = count_inputs(args.input)  # also fails early, in one line, on an input that does not exist
    skipped: list[UserError] = []
    coco: list[dict] = []
    images = instances = 0
    console = Console()
    with _progress(console) as progress:
        task = progress.add_task("predict", total=total, current="")

        def report(error: UserError) -> None:
            skipped.append(error)
            print(f"skipped {error}", file=sys.stderr)
            progress.advance(task)

        for result in predictor.predict(args.input, batch_size=args.batch_size, on_error=report):
            images += 1
            instances += len(result)
            if save_json:
                result.save_to_json(out)
            if save_img:
                result.save_to_img(out)
            if args.coco_results:
                coco.extend(result.to_coco(coco_image_id(result, images)))
            progress.update(task, advance=1, current=result.name)
    if args.coco_results:
        atomic_write_json(args.coco_results, coco, indent=None)
    console.print(
        _summary(predictor, images, instances, len(skipped), out if save_json or save_img else None), soft_wrap=True
    )
    return {"images": images, "instances": instances, "skipped": len(skipped)}
