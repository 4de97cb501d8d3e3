"""Label-map PNG folders -> COCO.

Layout: ``SRC/images/<name>.<ext>`` with ``SRC/masks/<name>.png`` (same relative path, PNG; palette, 8- or
16-bit single channel). In a mask 0 is background and value k > 0 is instance k. Images under
``images/{train,val,test}/`` go to that split; an image without a mask has no instances.

Classes:
- default: one class, named by ``--labels`` (a file with one name) or ``object``;
- ``--class-map`` with pixel values as keys, ``{"1": "cat", "2": "cat", "3": "dog"}``: each value is an instance
  of the given class (a value missing from the map is an error);
- ``--class-map`` with folder names as keys, ``{"cats": "cat", "dogs": "dog"}``: per-class masks in
  ``masks/<folder>/<name>.png``, each numbering that class's instances 1, 2, ...

Masks are stored as compressed RLE: it is exact (polygons would lose holes).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from instaseg.data.formats.common import (
    DatasetBuilder,
    ImportedDataset,
    decoded_size,
    label_regions,
    read_label_map,
    read_labels_file,
    split_of,
    track,
)
from instaseg.errors import UserError
from instaseg.utils.images import list_images
from instaseg.utils.io import read_json

DEFAULT_CLASS = "object"
# (mask file, value -> category id) pairs that describe one image's instances
MaskSources = Callable[[str], list[tuple[Path, Callable[[int, Path], int]]]]


def read_mask_png(
    src: Path, labels_file: str | Path | None = None, class_map_file: str | Path | None = None
) -> ImportedDataset:
    """Read an images/ + masks/ folder of instance label maps into COCO splits."""
    images_dir, masks_dir = src / "images", src / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise UserError("expected images/ and masks/ folders", src)
    images = list_images(images_dir)
    if not images:
        raise UserError("no images found", images_dir)
    builder, sources = _classes(masks_dir, labels_file, class_map_file)
    for image in track(images, "reading label maps"):
        rel = image.relative_to(images_dir).as_posix()
        size = decoded_size(image)
        image_id = builder.add_image(split_of(rel)[0], rel, size, image, image)
        found = [(path, category_of) for path, category_of in sources(rel) if path.is_file()]
        if not found:
            builder.warn("images without a mask (taken as having no instances)")
        for path, category_of in found:
            for value, mask in label_regions(read_label_map(path, size)):
                builder.add_mask(image_id, category_of(value, path), mask)
    return builder.build(images_dir, "converted from label-map PNGs")


def _mask_name(rel: str) -> str:
    return str(Path(rel).with_suffix(".png"))


def _classes(masks_dir: Path, labels_file, class_map_file) -> tuple[DatasetBuilder, MaskSources]:
    """The builder with its fixed classes, and where each image's masks are, for the chosen class mode."""
    if class_map_file and labels_file:
        raise UserError("give either --labels or --class-map, not both", class_map_file)
    if not class_map_file:
        names = read_labels_file(labels_file)[0] if labels_file else [DEFAULT_CLASS]
        if len(names) != 1:
            raise UserError("without --class-map the labels file must name exactly one class", labels_file)
        return DatasetBuilder(names), lambda rel: [(masks_dir / _mask_name(rel), lambda value, path: 1)]
    class_map = _read_class_map(Path(class_map_file))
    builder = DatasetBuilder(list(dict.fromkeys(class_map.values())))
    ids = {key: builder.category_id(name, Path(class_map_file), key) for key, name in class_map.items()}
    if all(key.isdigit() for key in class_map):

        def category_of(value: int, path: Path) -> int:
            if str(value) not in ids:
                raise UserError(f"pixel value {value} is not in the class map {class_map_file}", path)
            return ids[str(value)]

        return builder, lambda rel: [(masks_dir / _mask_name(rel), category_of)]
    for folder in class_map:
        if not (masks_dir / folder).is_dir():
            raise UserError(f"class map folder masks/{folder} not found", class_map_file, folder)
    return builder, lambda rel: [
        (masks_dir / folder / _mask_name(rel), lambda value, path, cid=cid: cid) for folder, cid in ids.items()
    ]


def _read_class_map(path: Path) -> dict[str, str]:
    raw = read_json(path)
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, str) for v in raw.values()):
        raise UserError("class map must be a non-empty json object {pixel_value_or_folder: class_name}", path)
    digits = [key.isdigit() for key in raw]
    if any(digits) and not all(digits):
        raise UserError("class map keys must be all pixel values or all folder names", path)
    if "0" in raw:
        raise UserError("pixel value 0 is background and cannot map to a class", path, "0")
    return {str(int(k)) if k.isdigit() else k: v for k, v in raw.items()}
