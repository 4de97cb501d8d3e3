"""Cityscapes -> COCO.

Reads ``gtFine/{split}/{city}/*_gtFine_instanceIds.png`` (16-bit: id = label_id * 1000 + instance) with the
images ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` matched by name. Ids below 1000 are stuff, or a group
of an instance class whose objects were not separated: such groups become ``iscrowd`` regions (as Detectron2
reads them), ignored by evaluation. Classes are the 8 evaluated instance classes, keeping their label ids as
category ids; caravan and trailer (not evaluated) are left out.

Masks are stored as compressed RLE: it is exact (polygons would lose holes and thin parts).
"""

from __future__ import annotations

from pathlib import Path

from instaseg.data.formats.common import (
    DatasetBuilder,
    ImportedDataset,
    decoded_size,
    label_regions,
    read_label_map,
    split_of,
    track,
)
from instaseg.errors import UserError

INSTANCE_CLASSES = {
    24: "person",
    25: "rider",
    26: "car",
    27: "truck",
    28: "bus",
    31: "train",
    32: "motorcycle",
    33: "bicycle",
}
_SUFFIX = "_gtFine_instanceIds.png"


def read_cityscapes(src: Path) -> ImportedDataset:
    """Read a Cityscapes folder (``gtFine/`` + ``leftImg8bit/``), keeping its train/val/test splits."""
    files = sorted((src / "gtFine").rglob(f"*{_SUFFIX}"))
    if not files:
        raise UserError(f"no gtFine/**/*{_SUFFIX} files found", src)
    builder = DatasetBuilder(list(INSTANCE_CLASSES.values()), list(INSTANCE_CLASSES))
    images_dir = src / "leftImg8bit"
    for path in track(files, "reading Cityscapes masks"):
        rel = path.relative_to(src / "gtFine").as_posix()
        file_name = rel[: -len(_SUFFIX)] + "_leftImg8bit.png"
        image = images_dir / file_name
        if not image.is_file():
            raise UserError(f"no matching image leftImg8bit/{file_name}", path)
        size = decoded_size(image)
        image_id = builder.add_image(split_of(rel)[0], file_name, size, image, image)
        for value, mask in label_regions(read_label_map(path, size)):
            label_id = value // 1000 if value >= 1000 else value
            if label_id in INSTANCE_CLASSES:
                builder.add_mask(image_id, label_id, mask, iscrowd=int(value < 1000))
    return builder.build(images_dir, "converted from Cityscapes")
