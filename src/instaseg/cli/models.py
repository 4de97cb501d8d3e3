"""`instaseg models [NAME]`: the model zoo, measured from the built models."""

from __future__ import annotations

import argparse
import json
import sys

from instaseg.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model zoo, or show one recipe")
    p.add_argument("name", nargs="?", help="recipe name to show in full")
    p.add_argument("--task", default=None, help="filter by task (instance_segmentation)")
    p.add_argument("--json", action="store_true", help="print json instead of a table")
    p.add_argument(
        "--published",
        action="store_true",
        help="show the recipe beside the published config it follows (PaddleDetection, mmdetection), difference by "
        "difference, each with the recipe's reason",
    )
    p.set_defaults(func=_models)


def _models(args: argparse.Namespace) -> int:
    if args.name and args.published:
        print_published(args.name, as_json=args.json)
    elif args.published:
        raise UserError("--published needs a recipe name (instaseg models NAME --published)")
    elif args.name:
        print_recipe(args.name, as_json=args.json)
    else:
        print_zoo(task=args.task, as_json=args.json)
    return 0


def print_zoo(task: str | None = None, as_json: bool = False) -> list[dict]:
    """Every shipped recipe (optionally of one task) with its measured size and cost, as a table or json."""
    from rich.console import Console
    from rich.table import Table

    from instaseg.models.recipes import load_recipe
    from instaseg.models.weights.published import recipe_weights
    from instaseg.models.zoo import zoo_rows

    rows = [{**r, "starts_from": recipe_weights(load_recipe(r["name"]))} for r in zoo_rows(task)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return rows
    table = Table(title="instaseg model zoo (measured: random init, 80 classes, one image at the input size)")
    columns = ("name", "architecture", "backbone", "input", "params (M)", "GFLOPs", "weights (MB)", "COCO weights")
    for col in (*columns, "ImageNet"):
        table.add_column(col, justify="right" if col[0].isupper() or "(" in col else "left")
    for r in rows:
        kinds = {w["kind"] for w in r["starts_from"]}
        table.add_row(
            r["name"],
            r["architecture"],
            r["backbone"],
            f"{r['input'][0]}x{r['input'][1]}",
            f"{r['params_M']:.1f}",
            f"{r['gflops']:.1f}",
            f"{r['weights_MB']:.1f}",
            _coco_cell(r["starts_from"]),
            "yes" if "imagenet" in kinds else "",
        )
    Console(file=sys.stdout, width=180).print(table)
    print("GFLOPs: convolutions and matrix products of one eval forward, mask head on max_dets detections.")
    print("COCO weights: the published COCO val2017 mask AP of the weights --weights coco loads (the publisher's).")
    return rows


def _coco_cell(weights: list[dict]) -> str:
    coco = next((w for w in weights if w["kind"] == "coco"), None)
    if coco is None:
        return ""
    return f"{coco['mask_ap']} ({coco['publisher']})" if coco["mask_ap"] is not None else coco["publisher"]


def print_recipe(name: str, as_json: bool = False) -> dict:
    """One recipe in full (yaml) plus its measured numbers."""
    from instaseg.config import recipe_to_yaml
    from instaseg.models.recipes import load_recipe
    from instaseg.models.weights.published import recipe_weights
    from instaseg.models.zoo import measure_shipped_or_file

    recipe = load_recipe(name)
    measured = measure_shipped_or_file(name)
    weights = recipe_weights(recipe)
    if as_json:
        print(json.dumps({"recipe": recipe, "measured": measured, "starts_from": weights}, indent=2))
    else:
        print(recipe_to_yaml(recipe).rstrip())
        print("# measured (random init, 80 classes, one image at the input size):")
        for key in ("params_M", "gflops", "weights_MB"):
            print(f"#   {key}: {measured[key]}")
        print("# can start from (--weights coco, imagenet, or the name; published metrics):" if weights else "")
        for w in weights:
            print(f"#   {w['kind']}: {_weights_line(w)}")
    return measured


def _weights_line(w: dict) -> str:
    metrics = [f"{label} {w[key]}" for key, label in (("mask_ap", "mask AP"), ("box_ap", "box AP"), ("top1", "top-1"))
               if w[key] is not None]  # fmt: skip
    where = {True: "cached", False: "downloaded on first use", None: ""}[w["cached"]]
    parts = [", ".join(metrics), w["url"] or "", where, w["note"]]
    return f"{w['publisher']} {w['name']}" + "".join(f"; {p}" for p in parts if p)


def print_published(name: str, as_json: bool = False) -> dict:
    """A recipe beside its published config: every published training number and setting, ours, and why they
    differ where they do."""
    from rich.console import Console
    from rich.table import Table

    from instaseg.models.published import SAME, UNEXPLAINED, compare
    from instaseg.models.recipes import load_recipe

    result = compare(load_recipe(name))
    if as_json:
        print(json.dumps(result, indent=2))
        return result
    config = result["config"]
    title = f"{name} beside {config['repository']} {config['path']} @ {config['commit']} ({config['result']})"
    table = Table(title=title, show_lines=False)
    for col, width in (("key", 30), ("published", 36), ("recipe", 36), ("why it differs", 90)):
        table.add_column(col, overflow="fold", max_width=width)
    for row in result["rows"]:
        ours = "(no such key)" if row["recipe"] is None and row["status"] != SAME else _text(row["recipe"])
        why = "" if row["status"] == SAME else row["why"] or "UNEXPLAINED"
        style = "red" if row["status"] == UNEXPLAINED else None if row["status"] == SAME else "yellow"
        table.add_row(row["key"], _text(row["published"]), ours, why, style=style)
    Console(file=sys.stdout, width=200).print(table)
    counts = {s: sum(r["status"] == s for r in result["rows"]) for s in ("same", "differs", "unexplained")}
    same, differs, unexplained = (counts[s] for s in ("same", "differs", "unexplained"))
    print(f"{same} the same, {differs} different with a reason, {unexplained} unexplained")
    return result


def _text(value: object) -> str:
    return json.dumps(value) if not isinstance(value, str) else value
