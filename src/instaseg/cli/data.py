"""`instaseg data convert|check|split|synth`."""

from __future__ import annotations

import argparse

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
    from instaseg.data.check import check_dataset, print_summary

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
    from instaseg.engine.auto_config import auto_configure, choices_table
    from instaseg.models.recipes import load_recipe

    path = Path(data)
    train_file = path if path.is_file() else find_split_files(path)["train"]
    recipe = auto_configure(load_recipe(model), DatasetStatistics.of(load_coco(train_file)))
    Console(highlight=False).print(choices_table(recipe, f"what `instaseg train --model {model}` will choose"))


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
