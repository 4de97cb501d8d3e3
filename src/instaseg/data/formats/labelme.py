"""LabelMe -> COCO: one json per image, with polygon / rectangle / circle shapes.

Conventions honoured (LabelMe's and labelme2coco's):
- ``imagePath`` is relative to the json file; when that file is missing, the embedded base64 ``imageData`` is
  written out as an image file of the new dataset.
- Shapes with the same ``label`` and ``group_id`` form one instance (its polygons are the instance's parts);
  shapes without a ``group_id`` are instances of their own.
- Shapes labelled ``__ignore__`` (and ``_background_``) are kept out of the instances. An optional labels file
  (one name per line) fixes the class order; without one, classes are numbered in sorted name order.
- Jsons under a ``train/``, ``val/`` or ``test/`` folder go to that split.
Shapes without area (point, line, linestrip) and others this reader does not know are skipped and counted.
"""

from __future__ import annotations

import base64
import binascii
import math
from pathlib import Path

from instaseg.data.formats.common import (
    BACKGROUND_LABEL,
    IGNORE_LABEL,
    DatasetBuilder,
    ImportedDataset,
    decoded_size,
    embedded_image,
    read_labels_file,
    relative_inside,
    split_of,
    track,
)
from instaseg.errors import UserError
from instaseg.utils.io import read_json

_NUMBER = (int, float)


def read_labelme(src: Path, labels_file: str | Path | None = None) -> ImportedDataset:
    """Read every LabelMe json under ``src`` (recursively) into COCO splits."""
    files = sorted(src.rglob("*.json"))
    if not files:
        raise UserError("no LabelMe .json files found", src)
    builder = DatasetBuilder(read_labels_file(labels_file)[0] if labels_file else None)
    for path in track(files, "reading LabelMe files"):
        _read_file(builder, src, path)
    return builder.build(src, "converted from LabelMe")


def _read_file(builder: DatasetBuilder, src: Path, path: Path) -> None:
    raw = read_json(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("shapes"), list):
        raise UserError("not a LabelMe file ('shapes' must be a list)", path)
    split, _ = split_of(relative_inside(src, path, path, "file"))
    image_id = _add_image(builder, src, path, raw, split)
    groups: dict[tuple, list] = {}
    for index, shape in enumerate(raw["shapes"]):
        label, group, polygon = _parse_shape(shape, path, f"shape {index}")
        if label in (IGNORE_LABEL, BACKGROUND_LABEL):
            continue
        if polygon is None:
            builder.warn(f"shapes of type {shape.get('shape_type')!r} skipped (no area)")
            continue
        category_id = builder.category_id(label, path, f"shape {index}")
        key = (label, group) if group is not None else (label, f"shape {index}")
        groups.setdefault(key, [category_id, []])[1].append(polygon)
    for category_id, polygons in groups.values():
        builder.add_polygons(image_id, category_id, polygons)


def _add_image(builder: DatasetBuilder, src: Path, path: Path, raw: dict, split: str) -> int:
    image_path, image_data = raw.get("imagePath"), raw.get("imageData")
    if not isinstance(image_path, (str, type(None))) or not isinstance(image_data, (str, type(None))):
        raise UserError("'imagePath' and 'imageData' must be strings", path, "imagePath")
    target = path.parent / image_path.replace("\\", "/") if image_path else None
    file_name = relative_inside(src, target, path, "imagePath") if target else None
    if target is not None and target.is_file():
        source, size = target, decoded_size(target)
    elif image_data:
        source = _decode_base64(image_data, path)
        size, ext = embedded_image(source, path, "imageData")
        file_name = file_name or Path(relative_inside(src, path, path, "file")).with_suffix(ext).as_posix()
    else:
        raise UserError(f"image {image_path!r} not found and no embedded imageData", path, "imagePath")
    declared = (raw.get("imageWidth"), raw.get("imageHeight"))
    if all(isinstance(v, int) for v in declared) and declared != size:
        raise UserError(
            f"imageWidth x imageHeight {declared[0]}x{declared[1]} differ from the image's {size[0]}x{size[1]}",
            path,
            "imageWidth",
        )
    return builder.add_image(split, file_name, size, source, path)


def _decode_base64(text: str, path: Path) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise UserError(f"imageData is not valid base64 ({e})", path, "imageData") from None


def _parse_shape(shape: object, path: Path, record: str) -> tuple[str, object, list[float] | None]:
    """(label, group_id, flat polygon or None for shapes without area) of one LabelMe shape."""
    if not isinstance(shape, dict):
        raise UserError("shape must be an object", path, record)
    label, shape_type, group = shape.get("label"), shape.get("shape_type") or "polygon", shape.get("group_id")
    if not isinstance(label, str) or not isinstance(shape_type, str):
        raise UserError("shape 'label' and 'shape_type' must be strings", path, record)
    if not isinstance(group, (int, str, type(None))):
        raise UserError("shape 'group_id' must be an integer or null", path, record)
    points = shape.get("points")
    if not isinstance(points, list) or not all(
        isinstance(p, list)
        and len(p) == 2
        and all(isinstance(v, _NUMBER) and not isinstance(v, bool) and math.isfinite(v) for v in p)
        for p in points
    ):
        raise UserError("shape 'points' must be a list of [x, y] numbers", path, record)
    return label, group, _shape_polygon(shape_type, points, path, record)


def _shape_polygon(shape_type: str, points: list[list[float]], path: Path, record: str) -> list[float] | None:
    if shape_type == "polygon":
        return [float(v) for p in points for v in p]
    if shape_type == "rectangle" and len(points) == 4:  # some LabelMe versions store all four corners
        return [float(v) for p in points for v in p]
    if shape_type in ("rectangle", "circle") and len(points) != 2:
        raise UserError(f"a {shape_type} needs 2 points, got {len(points)}", path, record)
    if shape_type == "rectangle":
        (x1, y1), (x2, y2) = points
        return [float(v) for v in (x1, y1, x2, y1, x2, y2, x1, y2)]
    if shape_type == "circle":
        return _circle_polygon(points[0], points[1])
    return None


def _circle_polygon(center: list[float], edge: list[float]) -> list[float]:
    """LabelMe circles (centre + a point on the rim) as a polygon; more vertices for larger circles."""
    cx, cy = center
    radius = math.hypot(edge[0] - cx, edge[1] - cy)
    n = max(12, min(72, int(2 * math.pi * radius / 3)))
    return [
        round(v, 2)
        for k in range(n)
        for v in (cx + radius * math.cos(2 * math.pi * k / n), cy + radius * math.sin(2 * math.pi * k / n))
    ]
