"""`instaseg data convert`: any supported format -> a new COCO dataset folder (or COCO -> YOLO-seg).

The source is only read: everything is read into memory first (so a malformed source fails before anything is
written), then a new folder is written. Source splits are kept where the format has them; otherwise all
images are train, or a deterministic share goes to val with ``val_fraction``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from instaseg.data.coco import CocoData
from instaseg.data.formats import ImportedDataset, read_dataset
from instaseg.data.formats.common import log
from instaseg.data.writer import place_image, prepare_output_dir, staged_output, write_coco_dataset
from instaseg.errors import UserError
from instaseg.utils.io import atomic_write_bytes

DST_FORMATS = ("coco", "yolo")


def convert_dataset(
    src: str | Path,
    src_format: str,
    out: str | Path,
    dst_format: str = "coco",
    link_images: bool = False,
    labels_file: str | Path | None = None,
    class_map_file: str | Path | None = None,
    val_fraction: float | None = None,
) -> Path:
    """Convert the dataset at ``src`` (in ``src_format``) into a new ``dst_format`` dataset at ``out``."""
    if dst_format not in DST_FORMATS:
        raise UserError(f"unknown output format {dst_format!r} (choose from {', '.join(DST_FORMATS)})")
    if val_fraction is not None and not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    src = Path(src)
    dataset = read_dataset(src, src_format, labels_file, class_map_file)
    if val_fraction is not None:
        dataset = split_off_val(dataset, val_fraction)
    roots = [src if src.is_dir() else src.parent] + [data.image_root for data in dataset.splits.values()]
    out = prepare_output_dir(out, roots)
    with staged_output(out) as staging:
        if dst_format == "yolo":
            from instaseg.data.formats.yolo import write_yolo_dataset

            write_yolo_dataset(dataset, staging, lambda source, dst: place_file(source, dst, link_images))
        else:
            for split, data in dataset.splits.items():
                source = _image_source(dataset, split, staging)
                write_coco_dataset({split: data}, staging, link_images, image_source=source)
    return out


def place_file(source: Path | bytes, dst: Path, link: bool) -> None:
    """Copy or link an image file to ``dst``, or write embedded image bytes there."""
    if isinstance(source, bytes):
        if not dst.exists():
            atomic_write_bytes(dst, source)
    else:
        place_image(source, dst, link)


def _image_source(dataset: ImportedDataset, split: str, out: Path):
    """The file the COCO writer copies for an image; embedded images are first written into the new dataset."""

    def source(data: CocoData, image: dict) -> Path:
        found = dataset.image_file(split, image)
        if isinstance(found, bytes):
            dst = out / "images" / image["file_name"]
            place_file(found, dst, link=False)
            return dst  # already in place: the writer leaves an existing file alone
        return found

    return source


def split_off_val(dataset: ImportedDataset, fraction: float) -> ImportedDataset:
    """Move a deterministic ``fraction`` of train images (ordered by a hash of their file name) to val.

    Hashing the name rather than shuffling keeps an image's split stable when images are added or removed.
    A source with its own splits keeps them.
    """
    if set(dataset.splits) != {"train"}:
        log.warning("the source has its own splits (%s); --val-fraction is ignored", ", ".join(dataset.splits))
        return dataset
    train = dataset.splits["train"]
    if len(train.images) < 2:
        raise UserError("--val-fraction needs at least 2 images", train.source or train.image_root)
    ranked = sorted(train.images, key=lambda im: hashlib.sha256(im["file_name"].encode("utf-8")).hexdigest())
    n_val = min(max(round(len(ranked) * fraction), 1), len(ranked) - 1)
    val_ids = {im["id"] for im in ranked[:n_val]}
    splits = {"train": _subset(train, lambda i: i not in val_ids), "val": _subset(train, lambda i: i in val_ids)}
    sources = {(("val" if key[1] in val_ids else "train"), key[1]): v for key, v in dataset.sources.items()}
    return ImportedDataset(splits=splits, sources=sources)


def _subset(data: CocoData, keep) -> CocoData:
    return CocoData(
        images=[im for im in data.images if keep(im["id"])],
        annotations=[a for a in data.annotations if keep(a["image_id"])],
        categories=data.categories,
        image_root=data.image_root,
        source=data.source,
        info=data.info,
        licenses=data.licenses,
    )
