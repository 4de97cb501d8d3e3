"""`instaseg models [NAME]`: the model zoo, measured from the built models."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model zoo, or show one recipe")
    p.add_argument("name", nargs="?", help="recipe name to show in full")
    p.add_argument("--task", default=None, help="filter by task (instance_segmentation)")
    p.add_argument("--json", action="store_true", help="print json instead of a table")
    p.set_defaults(func=_models)


def _models(args: argparse.Namespace) -> int:
    from instaseg.models.zoo import print_recipe, print_zoo

    if args.name:
        print_recipe(args.name, as_json=args.json)
    else:
        print_zoo(task=args.task, as_json=args.json)
    return 0
