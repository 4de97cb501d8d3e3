"""`instaseg data check`: statistics and every problem of a COCO dataset, written beside it (never inside it).

The report folder holds ``check_result.json`` (done_flag, check_pass, attributes, problems), ``histogram.png``
(instances per class per split) and ``samples/`` (a few images per split with their masks drawn).
``check_pass`` is false only when an error would break training; warnings are reported and do not fail it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.data.check_plots import draw_histogram, draw_samples
from instaseg.data.check_problems import (
    AnnotationTable,
    ImageTable,
    Problems,
    check_annotations,
    check_categories,
    check_images,
)
from instaseg.data.coco import CocoData, dataset_root, find_split_files, load_coco
from instaseg.data.statistics import DatasetStatistics
from instaseg.data.writer import refuse_inside_sources
from instaseg.utils.io import atomic_write_json
from instaseg.utils.progress import progress_bar

# COCO's object size ranges (area in pixels), as COCOeval uses them
SMALL_AREA, LARGE_AREA = 32**2, 96**2
# Instances-per-image histogram bins: [low, high] inclusive
_PER_IMAGE_BINS = ((0, 0), (1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, None))
_PROGRESS_MIN_IMAGES = 2000


def check_dataset(data: str | Path, out: str | Path | None = None, num_samples: int = 4) -> dict:
    """Check a dataset folder (``annotations/instances_{split}.json`` + ``images/``) or one annotation json.

    Writes the report to ``out`` (default: ``<dataset>_check`` beside the dataset folder; for a json the
    dataset folder is the one holding ``annotations/``, or the json's own folder) and returns it as a dict.
    """
    path = Path(data)
    splits = _load_splits(path)
    root = dataset_root(path)
    out_dir = Path(out) if out is not None else _default_out(path, root)
    out_dir = refuse_inside_sources(out_dir, [root, *(c.image_root for c in splits.values())])
    problems = Problems()
    tables: dict[str, tuple[ImageTable, AnnotationTable]] = {}
    with _progress(sum(len(c.images) for c in splits.values())) as advance:
        for split, coco in splits.items():
            check_categories(coco, split, problems)
            images = check_images(coco, split, problems, advance)
            tables[split] = (images, check_annotations(coco, split, images, problems))
    _check_across_splits(splits, tables, problems)
    attributes = _attributes(splits, tables)
    if "train" in splits:  # what training's dataset-aware configuration reads (instaseg.engine.auto_config)
        attributes["train_statistics"] = DatasetStatistics.of(splits["train"]).summary()
    out_dir.mkdir(parents=True, exist_ok=True)
    histogram = draw_histogram(attributes["instances_per_class"], out_dir / "histogram.png")
    samples = draw_samples(splits, tables, out_dir / "samples", num_samples)
    for split in splits:
        attributes[f"{split}_sample_paths"] = [str(p.relative_to(out_dir)) for p in samples.get(split, [])]
    report = {
        "done_flag": True,
        "check_pass": not problems.has_errors,
        "dataset_path": str(path.resolve()),
        "dataset_type": "COCOInstSegDataset",
        "out_dir": str(out_dir),
        "attributes": attributes,
        "analysis": {"histogram": str(histogram.relative_to(out_dir))},
        "problem_counts": dict(sorted(problems.counts.items())),
        "problems": problems.items,
    }
    atomic_write_json(out_dir / "check_result.json", report)
    return report


def _load_splits(path: Path) -> dict[str, CocoData]:
    files = find_split_files(path)
    if path.is_file():
        files = {_split_of_file(path): path}
    return {split: load_coco(p) for split, p in files.items()}


def _split_of_file(path: Path) -> str:
    """A lone json is named after its split when its name says which (``instances_val.json``), else 'train'."""
    m = re.search(r"(?:^|[^a-z])(train|val|test)", path.stem.lower())
    return m.group(1) if m else "train"


def _default_out(path: Path, root: Path) -> Path:
    suffix = "_check" if path.is_dir() else f"_{path.stem}_check"
    return root.parent / f"{root.name}{suffix}"


@contextmanager
def _progress(total: int) -> Iterator[Callable[[], None]]:
    """A progress bar over image files, shown only where the dataset is large enough to wait on."""
    if total < _PROGRESS_MIN_IMAGES:
        yield lambda: None
        return
    with progress_bar("checking images", total, ("bar", "count", "elapsed"), stderr=False) as bar:
        yield bar.advance


def _check_across_splits(
    splits: dict[str, CocoData], tables: dict[str, tuple[ImageTable, AnnotationTable]], problems: Problems
) -> None:
    """Leaks (one file in several splits) and classes the model could never learn (no train instances)."""
    owners: dict[str, list[str]] = {}
    for split, (images, _) in tables.items():
        for p in set(images.paths) - {None}:
            owners.setdefault(p, []).append(split)
    for p, where in owners.items():
        if len(where) > 1:
            problems.add("image_in_several_splits", f"the same image file is in {', '.join(where)}", None, p)
    if "train" not in tables:
        return
    train_cats = set(np.unique(tables["train"][1].category_ids).tolist())
    for c in sorted(splits["train"].categories, key=lambda c: c["id"]):
        if c["id"] not in train_cats:
            msg = f"class {c['name']!r} (id {c['id']}) has no training instances"
            problems.add("class_without_train_instances", msg, "train", str(splits["train"].source))


def _attributes(splits: dict[str, CocoData], tables: dict[str, tuple[ImageTable, AnnotationTable]]) -> dict:
    by_id: dict[int, dict] = {}
    for coco in splits.values():
        for c in coco.categories:
            by_id.setdefault(c["id"], c)
    cats = [by_id[k] for k in sorted(by_id)]
    attrs: dict[str, Any] = {
        "class_names": [c["name"] for c in cats],
        "num_classes": len(cats),
        "splits": list(splits),
    }
    # a repeated class name (itself warned about) gets its id appended so its counts are not merged away
    names = [c["name"] for c in cats]
    labels = {c["id"]: c["name"] if names.count(c["name"]) == 1 else f"{c['name']} (id {c['id']})" for c in cats}
    per_class: dict[str, dict[str, int]] = {labels[c["id"]]: {} for c in cats}
    for split, (images, anns) in tables.items():
        attrs[f"{split}_samples"] = len(images.ids)
        attrs[f"{split}_instances"] = len(anns.ids)
        attrs[f"{split}_crowd_instances"] = int(anns.crowd.sum())
        cat_ids, counts = np.unique(anns.category_ids, return_counts=True)
        found = dict(zip(cat_ids.tolist(), counts.tolist(), strict=True))
        for c in cats:
            per_class[labels[c["id"]]][split] = int(found.get(c["id"], 0))
        per_image = _instances_per_image(images, anns)
        attrs[f"{split}_images_without_annotations"] = int((per_image == 0).sum())
        attrs[f"{split}_instances_per_image"] = _distribution(per_image)
        attrs[f"{split}_sizes"] = _size_counts(anns.areas)
    attrs["instances_per_class"] = per_class
    return attrs


def _instances_per_image(images: ImageTable, anns: AnnotationTable) -> np.ndarray:
    rows = anns.image_rows[anns.image_rows >= 0]
    return np.bincount(rows, minlength=len(images.ids))


def _distribution(per_image: np.ndarray) -> dict:
    if not len(per_image):
        return {"min": 0, "max": 0, "mean": 0.0, "median": 0.0, "histogram": {}}
    hist = {}
    for lo, hi in _PER_IMAGE_BINS:
        sel = per_image >= lo if hi is None else (per_image >= lo) & (per_image <= hi)
        label = f">{lo - 1}" if hi is None else (str(lo) if lo == hi else f"{lo}-{hi}")
        hist[label] = int(sel.sum())
    return {
        "min": int(per_image.min()),
        "max": int(per_image.max()),
        "mean": round(float(per_image.mean()), 3),
        "median": float(np.median(per_image)),
        "histogram": hist,
    }


def _size_counts(areas: np.ndarray) -> dict[str, int]:
    """COCO size ranges over all instances (crowd included) by the json 'area' (or the geometry's when absent)."""
    known = areas[~np.isnan(areas)]
    return {
        "small": int((known < SMALL_AREA).sum()),
        "medium": int(((known >= SMALL_AREA) & (known < LARGE_AREA)).sum()),
        "large": int((known >= LARGE_AREA).sum()),
        "unknown": int(np.isnan(areas).sum()),
    }
