"""`instaseg data split`: a deterministic re-split of a COCO dataset into a new dataset folder.

All splits' images are pooled, shuffled with the seed and cut by the percentages. An image keeps all its
annotations, and records that share one image file stay together, so no file ends up in two splits. Ids are
kept as they are unless the pooled splits reuse an id; then that kind of id is renumbered from 1 and a
warning says so. The source is never modified: images are copied (or linked) into the new folder.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np

from instaseg.data.coco import CocoData, dataset_root, load_dataset
from instaseg.data.writer import prepare_output_dir, staged_output, write_coco_dataset
from instaseg.errors import UserError

log = logging.getLogger(__name__)


def split_dataset(
    data: str | Path,
    out: str | Path,
    train: float = 80,
    val: float = 20,
    seed: int = 0,
    link_images: bool = False,
) -> Path:
    """Re-split ``data`` (dataset folder or annotation json) into ``out`` with ``train``/``val`` percentages.

    Returns ``out``. A split with 0 percent is not written. Same data and seed give the same split.
    """
    _check_percentages(train, val)
    source = load_dataset(data)
    out = prepare_output_dir(out, [dataset_root(data), *(c.image_root for c in source.values())])
    pooled, origin = _pool(source)
    in_train = _draw_train(_groups_by_file(pooled.images), _train_count(len(pooled.images), train, val), seed)
    parts = {}
    for name, share in (("train", train), ("val", val)):
        if share > 0:
            part = _subset(pooled, [im for im in pooled.images if (id(im) in in_train) == (name == "train")])
            part.info = {**part.info, "split": {"seed": seed, "train": train, "val": val, "part": name}}
            if "split_name" in part.info:  # a source's own split label would now be wrong
                part.info["split_name"] = name
            parts[name] = part
    # each record's own source split knows where its file lives
    with staged_output(out) as staging:
        write_coco_dataset(parts, staging, link_images, image_source=lambda _, im: origin[id(im)].image_path(im))
    return out


def _draw_train(groups: list[list[dict]], n_train: int, seed: int) -> set[int]:
    """``id()`` of the image records drawn for train: whole file groups in seeded order until n_train."""
    chosen: set[int] = set()
    taken = 0
    for g in np.random.default_rng(seed).permutation(len(groups)):
        if taken >= n_train:
            break
        chosen.update(id(im) for im in groups[g])
        taken += len(groups[g])
    return chosen


def _check_percentages(train: float, val: float) -> None:
    if train < 0 or val < 0 or abs(train + val - 100) > 1e-6:
        raise UserError(f"train and val percentages must be >= 0 and sum to 100 (got {train} + {val})")


def _train_count(n: int, train: float, val: float) -> int:
    """Images for train; a split asked for gets at least one image when there are two or more."""
    count = int(round(n * train / 100))
    if n >= 2 and val > 0:
        count = min(count, n - 1)
    if n >= 2 and train > 0:
        count = max(count, 1)
    return count


def _pool(splits: dict[str, CocoData]) -> tuple[CocoData, dict[int, CocoData]]:
    """One CocoData holding every split's records (deep copies: ids may be rewritten, the source must not),
    and the source split of each image record (keyed by the record's ``id()``)."""
    parts = list(splits.values())
    categories = _merged_categories(splits)
    images, annotations, origin = [], [], {}
    renumber_images = _ids_collide([c.images for c in parts])
    renumber_annotations = _ids_collide([c.annotations for c in parts])
    next_image = next_ann = 1
    for coco in parts:
        new_image_ids = {}
        for im in coco.images:
            im = copy.deepcopy(im)
            origin[id(im)] = coco
            if renumber_images:
                new_image_ids[im["id"]], im["id"] = next_image, next_image
                next_image += 1
            images.append(im)
        for ann in coco.annotations:
            ann = copy.deepcopy(ann)
            if renumber_images:
                ann["image_id"] = new_image_ids.get(ann["image_id"], ann["image_id"])
            if renumber_annotations:
                ann["id"], next_ann = next_ann, next_ann + 1
            annotations.append(ann)
    for kind, done in (("image", renumber_images), ("annotation", renumber_annotations)):
        if done:
            log.warning("%s ids repeat across the source splits %s: renumbered them from 1", kind, list(splits))
    first = parts[0]
    pooled = CocoData(images, annotations, categories, first.image_root, first.source, first.info, first.licenses)
    return pooled, origin


def _ids_collide(record_lists: list[list[dict]]) -> bool:
    """Does an id occur in more than one of the lists (a repeat inside one list is that list's own problem)."""
    seen: set = set()
    for records in record_lists:
        ids = {r["id"] for r in records}
        if seen & ids:
            return True
        seen |= ids
    return False


def _merged_categories(splits: dict[str, CocoData]) -> list[dict]:
    by_id: dict[int, dict] = {}
    for split, coco in splits.items():
        for cat in coco.categories:
            known = by_id.setdefault(cat["id"], cat)
            if known["name"] != cat["name"]:
                msg = f"category id {cat['id']} is {known['name']!r} in one split and {cat['name']!r} in another"
                raise UserError(msg, coco.source, split)
    return [copy.deepcopy(by_id[k]) for k in sorted(by_id)]


def _groups_by_file(images: list[dict]) -> list[list[dict]]:
    """Image records grouped by file, in file-name order so the shuffle depends on the seed alone."""
    groups: dict[str, list[dict]] = {}
    for im in images:
        groups.setdefault(im["file_name"], []).append(im)
    shared = sum(1 for g in groups.values() if len(g) > 1)
    if shared:
        log.warning("%d image files have several records; each file's records were kept in one split", shared)
    return [groups[k] for k in sorted(groups)]


def _subset(pooled: CocoData, images: list[dict]) -> CocoData:
    ids = {im["id"] for im in images}
    images = sorted(images, key=lambda im: im["id"])
    annotations = [a for a in pooled.annotations if a["image_id"] in ids]
    return CocoData(
        images, annotations, pooled.categories, pooled.image_root, pooled.source, dict(pooled.info), pooled.licenses
    )
