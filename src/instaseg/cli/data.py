"""`instaseg data convert|check|split|synth`."""

from __future__ import annotations

import argparse
from typing import Any

FORMATS_FROM = ("coco", "labelme", "yolo", "voc", "cityscapes", "mask-png")
FORMATS_TO = ("coco", "yolo")


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="convert, check, split or synthesise datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="<data command>", parser_class=type(data))
    data.set_defaults(func=lambda a: data.print_help())

    p = data_sub.add_parser("convert", help="convert a dataset to COCO (or COCO to YOLO-seg)")
    p.add_argument("src", help="source dataset folder (never modified)")
    p.add_argument("--from", dest="src_format", required=True, choices=FORMATS_FROM)
    p.add_argument("--to", dest="dst_format", default="coco", choices=FORMATS_TO)
    p.add_argument("--out", required=True, help="new dataset folder to write")
    p.add_argument("--link", action="store_true", help="symlink images instead of copying them")
    p.add_argument("--labels", help="class names file (one per line) fixing class order")
    p.add_argument("--class-map", help="mask-png: json {pixel_value_or_folder: class_name}")
    p.add_argument("--val-fraction", type=float, default=None, help="also split into train/val")
    p.set_defaults(func=_convert)

    p = data_sub.add_parser("check", help="report statistics and problems of a COCO dataset")
    p.add_argument("data", help="dataset folder or annotation json")
    p.add_argument("--out", help="report folder (default DATA_check/ beside the dataset)")
    p.add_argument("--samples", type=int, default=4, help="images drawn per split")
    p.add_argument(
        "--model",
        default="maskrcnn_fast",
        help="recipe whose dataset-aware training configuration is shown (default maskrcnn_fast)",
    )
    p.set_defaults(func=_check)

    p = data_sub.add_parser("split", help="re-split a COCO dataset into new train/val files")
    p.add_argument("data")
    p.add_argument("--train", type=float, default=80, help="train share in percent")
    p.add_argument("--val", type=float, default=20, help="val share in percent")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--link", action="store_true", help="symlink images instead of copying them")
    p.set_defaults(func=_split)

    p = data_sub.add_parser("synth", help="generate the synthetic shapes dataset")
    p.add_argument("--out", required=True)
    p.add_argument("--images", type=int, default=400, help="number of images (split 80/20 train/val)")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", type=int, default=5, help="use the first N of circle, triangle, square, star, ring")
    p.add_argument("--background", default="textured", help="textured (default) or plain (flat grey, no clutter)")
    p.add_argument("--max-instances", type=int, default=None, help="shapes per image, at most (8; small-objects 300)")
    p.add_argument(
        "--style",
        choices=("shapes", "small-objects"),
        default="shapes",
        help="shapes: 16-38%% of a --img-size image; small-objects: many 6-20 px shapes on 1024-2048 px images",
    )
    p.set_defaults(func=_synth)


def _convert(args: argparse.Namespace) -> int:
    from instaseg.data.convert import convert_dataset

    out = convert_dataset(
        args.src,
        args.src_format,
        args.out,
        dst_format=args.dst_format,
        link_images=args.link,
        labels_file=args.labels,
        class_map_file=args.class_map,
        val_fraction=args.val_fraction,
    )
    print(f"wrote {out}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from instaseg.data.check import check_dataset

    report = check_dataset(args.data, out=args.out, num_samples=args.samples)
    print_summary(report)
    if "train_statistics" in report["attributes"]:
        _show_training_choices(args.data, args.model)
    return 0 if report["check_pass"] else 1


def _show_training_choices(data: str, model: str) -> None:
    """What `instaseg train --model MODEL` will choose for this dataset's training split."""
    from pathlib import Path

    from rich.console import Console

    from instaseg.data.coco import find_split_files, load_coco
    from instaseg.data.statistics import DatasetStatistics
    from instaseg.engine.auto_config import auto_configure
    from instaseg.models.recipes import load_recipe

    path = Path(data)
    train_file = path if path.is_file() else find_split_files(path)["train"]
    recipe = auto_configure(load_recipe(model), DatasetStatistics.of(load_coco(train_file)))
    Console(highlight=False).print(choices_table(recipe, f"what `instaseg train --model {model}` will choose"))


def print_summary(report: dict, console: Any = None, examples: int = 3) -> None:
    """Per-split statistics, problem counts with a few examples each, and the verdict of `data check`."""
    from rich.console import Console
    from rich.table import Table

    from instaseg.data.check_problems import ERROR, SEVERITY

    console = console or Console(highlight=False)
    attrs = report["attributes"]
    console.print(f"dataset: {report['dataset_path']}  ({attrs['num_classes']} classes)")
    table = Table("split", "images", "instances", "crowd", "no annotations", "small", "medium", "large")
    for split in attrs["splits"]:
        sizes = attrs[f"{split}_sizes"]
        row = [attrs[f"{split}_{k}"] for k in ("samples", "instances", "crowd_instances")]
        row += [attrs[f"{split}_images_without_annotations"], sizes["small"], sizes["medium"], sizes["large"]]
        table.add_row(split, *(str(v) for v in row))
    console.print(table)
    if "train_statistics" in attrs:
        console.print(statistics_table(attrs["train_statistics"]))
    by_kind: dict[str, list[dict]] = {}
    for p in report["problems"]:
        by_kind.setdefault(p["kind"], []).append(p)
    for kind, count in sorted(report["problem_counts"].items(), key=lambda kc: SEVERITY[kc[0]] != ERROR):
        severity, listed = SEVERITY[kind], by_kind.get(kind, [])
        console.print(f"[{'red' if severity == ERROR else 'yellow'}]{severity}[/] {kind}: {count}")
        for p in listed[:examples]:
            ids = ", ".join(f"{k} {p[k]}" for k in ("image_id", "annotation_id") if p[k] is not None)
            console.print(f"    {p['file'] or ''}{f' [{ids}]' if ids else ''}: {p['message']}", markup=False)
    verdict = "[green]PASS[/]" if report["check_pass"] else "[red]FAIL[/] (errors would break training)"
    console.print(f"check: {verdict}; report in {report['out_dir']}")


def statistics_table(summary: dict) -> Any:
    """The training split's object sizes (sqrt of box area, px), crowding and image sizes, per class too."""
    from rich.table import Table

    columns = ("train split", "p10", "median", "p90", "max")
    table = Table(*columns, title="object and image sizes (px)", title_justify="left")
    sizes, per_image, images = summary["object_size_px"], summary["instances_per_image"], summary["image_long_side_px"]
    p99 = f"{sizes['p99']} (p99)"
    table.add_row("object size, all", str(sizes["p10"]), str(sizes["median"]), str(sizes["p90"]), p99)
    for name, row in summary["per_class"].items():
        size = row["size_px"]
        table.add_row(f"  {name} ({row['instances']})", str(size["p10"]), str(size["median"]), str(size["p90"]), "")
    table.add_row("instances per image", "", str(per_image["median"]), "", str(per_image["max"]))
    table.add_row("image long side", str(images["min"]) + " (min)", str(images["median"]), "", str(images["max"]))
    return table


def choices_table(recipe: dict, title: str = "dataset-aware configuration") -> Any:
    """The recipe's dataset-aware choices as a rich table (recipe value, chosen value in bold if changed, why)."""
    from rich.table import Table

    from instaseg.engine.auto_config import choice_rows

    table = Table(title=title, title_justify="left")
    table.add_column("key", no_wrap=True)
    table.add_column("recipe")
    table.add_column("chosen")
    table.add_column("why", ratio=1)
    for row in choice_rows(recipe):
        chosen = f"[bold]{row['chosen']}[/]" if row["changed"] else row["chosen"]
        table.add_row(row["key"], row["recipe"], chosen, row["why"])
    return table


def _split(args: argparse.Namespace) -> int:
    from instaseg.data.split import split_dataset

    out = split_dataset(args.data, args.out, train=args.train, val=args.val, seed=args.seed, link_images=args.link)
    print(f"wrote {out}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from instaseg.data.synthetic import MAX_INSTANCES, SynthStyle, generate_synthetic, small_objects_style

    if args.style == "small-objects":
        style = small_objects_style(args.classes, args.background, args.max_instances or 300)
    else:
        style = SynthStyle(args.classes, args.background, args.max_instances or MAX_INSTANCES)
    out = generate_synthetic(args.out, num_images=args.images, img_size=args.img_size, seed=args.seed, style=style)
    print(f"wrote {out}")
    return 0
