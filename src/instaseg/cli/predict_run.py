"""`instaseg predict`: images, folders, globs and videos -> per-image json and overlays, optional COCO results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from instaseg.data.writer import refuse_inside_sources
from instaseg.errors import UserError
from instaseg.evaluation.image_ids import ResultImageIds
from instaseg.inference.predictor import Predictor, create_model
from instaseg.inference.sources import count_inputs, expand_paths
from instaseg.utils.io import atomic_write_json
from instaseg.utils.progress import progress_bar


def _summary(predictor: Predictor, images: int, instances: int, skipped: int, out: Path | None) -> str:
    stages = ", ".join(f"{s} {v['mean_s'] * 1000:.0f} ms" for s, v in predictor.timing_summary().items())
    where = f" -> {out}" if out else ""
    skip = f", {skipped} skipped" if skipped else ""
    return f"{images} images, {instances} instances{skip}{where} (per batch: {stages})"


def _load_predictor(args: argparse.Namespace) -> Predictor:
    device = getattr(args, "device", "cpu")
    if getattr(args, "backend", None) != "auto":
        amp, tile = getattr(args, "amp", False), getattr(args, "tile", "auto")
        return create_model(args.checkpoint, device=device, threshold=args.threshold, amp=amp, tile=tile)
    if not args.val_data:
        raise UserError("--backend auto needs --val-data: a dataset root whose val split measures accuracy")
    from instaseg.cli.benchmark import print_choice
    from instaseg.deploy.autobackend import create_auto_model

    predictor, decision = create_auto_model(args.checkpoint, args.val_data, device=device, threshold=args.threshold)
    predictor.tiling = predictor.tiling.choose(getattr(args, "tile", "auto"))
    print_choice(decision, Console(stderr=True))
    return predictor


def run_predict(args: argparse.Namespace) -> dict:
    """Run the command; returns counts. Unreadable images are reported on stderr, one line each, and skipped."""
    save_json = args.save_json or not args.save_img
    save_img = args.save_img or not args.save_json
    out = Path(args.out)
    if save_json or save_img:  # outputs inside an input folder would alter it, and be read back on the next run
        refuse_inside_sources(out, [Path(p) for p in args.input if Path(p).is_dir()])
    image_ids = _result_image_ids(args)  # before the model loads: a results file that cannot map fails at once
    predictor = _load_predictor(args)
    total = count_inputs(args.input)  # also fails early, in one line, on an input that does not exist
    skipped: list[UserError] = []
    coco: list[dict] = []
    images = instances = 0
    columns = ("bar", "count", "elapsed", "remaining", "current")
    # kept when done: the finished bar (count, elapsed time) heads the command's output
    with progress_bar("[bold]predicting", total, columns, stderr=False, transient=False) as bar:

        def report(error: UserError) -> None:
            skipped.append(error)
            print(f"skipped {error}", file=sys.stderr)
            bar.advance()

        for result in predictor.predict(args.input, batch_size=args.batch_size, on_error=report):
            images += 1
            instances += len(result)
            if save_json:
                result.save_to_json(out)
            if save_img:
                result.save_to_img(out)
            if image_ids is not None:
                image_id, file_name = image_ids.of(result.input_path, result.frame_index)
                coco.extend({**record, "file_name": file_name} for record in result.to_coco(image_id))
            bar.advance(current=result.name)
    if args.coco_results:
        atomic_write_json(args.coco_results, coco, indent=None)
    console = Console()
    console.print(
        _summary(predictor, images, instances, len(skipped), out if save_json or save_img else None), soft_wrap=True
    )
    reasons = skip_reasons(skipped)
    if reasons:
        # beside the summary (stdout): stderr holds one line per skipped file, which scripts read
        console.print("skipped " + ", ".join(f"{n} {why}" for why, n in reasons.items()), soft_wrap=True)
    return {"images": images, "instances": instances, "skipped": len(skipped), "skip_reasons": reasons}


def _result_image_ids(args: argparse.Namespace) -> ResultImageIds | None:
    """The ground truth's image id of every input, checked now (`instaseg.evaluation.image_ids`); None without
    --coco-results."""
    gt = getattr(args, "gt", None)
    if not args.coco_results:
        if gt:
            raise UserError("--gt gives --coco-results the ground truth's image ids: add --coco-results FILE")
        return None
    ids = ResultImageIds(gt)
    ids.check([path for spec in args.input for path in expand_paths(spec)])
    return ids


def skip_reasons(errors: list[UserError]) -> dict[str, int]:
    """How many inputs were skipped for each reason (the error's text without its particulars), most first."""
    counts: dict[str, int] = {}
    for error in errors:
        reason = error.detail.split(" (", 1)[0]
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def run_predict_ray(args: argparse.Namespace) -> dict:
    """`--engine ray`: sharded, resumable results files under ``--out``, with images/s as shards finish."""
    from instaseg.inference.ray_engine import predict_ray

    options = {
        "--save-img": args.save_img,
        "--coco-results": args.coco_results,
        "--gt": getattr(args, "gt", None),
        "--backend auto": args.backend == "auto",
        "--amp": args.amp,
    }
    unsupported = [flag for flag, given in options.items() if given]
    if unsupported:
        raise UserError(f"{unsupported[0]} is not available with --engine ray (it writes sharded results files)")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError("--engine ray needs Ray Data: pip install 'instaseg[ray]'") from None
    out = Path(args.out)
    refuse_inside_sources(out, [Path(p) for p in args.input if Path(p).is_dir()])
    columns = ("bar", "count", "elapsed", "rate")
    with progress_bar("[bold]predicting on ray", None, columns, stderr=False, transient=False) as bar:
        seen = 0

        def advance(images: int, seconds: float) -> None:
            nonlocal seen
            seen += images
            bar.advance(images, rate=f"{seen / max(seconds, 1e-9):.1f} images/s")

        summary = predict_ray(
            args.checkpoint,
            args.input,
            out,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            gpus_per_actor=args.gpus_per_worker,
            threshold=args.threshold,
            fmt=args.results_format,
            shard_size=args.shard_size,
            address=args.ray_address,
            progress=advance,
            tile=getattr(args, "tile", "auto"),
        )
    skipped = f", {summary['skipped']} unreadable (their records name the reason)" if summary["skipped"] else ""
    Console().print(
        f"{summary['images']} images in {summary['shards']} shards ({summary['shards_run']} run now, the rest "
        f"already written){skipped} -> {out}",
        soft_wrap=True,
    )
    return summary
