"""Dataset formats, each read into the one in-memory COCO representation (`instaseg.data.coco.CocoData`).

One module per format; `common` holds what they share (the COCO builder, labels files, label maps, paths).
"""

from __future__ import annotations

from pathlib import Path

from instaseg.data.coco import load_dataset
from instaseg.data.formats.common import ImportedDataset, read_labels_file
from instaseg.errors import UserError

FORMATS = ("coco", "labelme", "yolo", "voc", "cityscapes", "mask-png")
_TAKES_LABELS = ("labelme", "yolo", "voc", "mask-png")

__all__ = ["FORMATS", "ImportedDataset", "read_dataset", "read_labels_file"]


def read_dataset(
    src: str | Path,
    src_format: str,
    labels_file: str | Path | None = None,
    class_map_file: str | Path | None = None,
) -> ImportedDataset:
    """Read the dataset at ``src`` in ``src_format`` into COCO splits; the source is only read."""
    src = Path(src)
    if src_format not in FORMATS:
        raise UserError(f"unknown format {src_format!r} (choose from {', '.join(FORMATS)})")
    if class_map_file and src_format != "mask-png":
        raise UserError("--class-map applies only to --from mask-png", class_map_file)
    if labels_file and src_format not in _TAKES_LABELS:
        raise UserError(f"--labels does not apply to --from {src_format}", labels_file)
    if src_format == "coco":
        return _read_coco(src)
    if not src.is_dir():
        raise UserError("dataset folder not found" if not src.exists() else "expected a dataset folder", src)
    if not any(src.iterdir()):
        raise UserError("dataset folder is empty", src)
    if src_format == "labelme":
        from instaseg.data.formats.labelme import read_labelme

        return read_labelme(src, labels_file)
    if src_format == "yolo":
        from instaseg.data.formats.yolo import read_yolo

        return read_yolo(src, labels_file)
    if src_format == "voc":
        from instaseg.data.formats.voc import read_voc

        return read_voc(src, labels_file)
    if src_format == "cityscapes":
        from instaseg.data.formats.cityscapes import read_cityscapes

        return read_cityscapes(src)
    from instaseg.data.formats.mask_png import read_mask_png

    return read_mask_png(src, labels_file, class_map_file)


def _read_coco(src: Path) -> ImportedDataset:
    splits = load_dataset(src)
    if not any(data.images for data in splits.values()):
        raise UserError("dataset has no images", src)
    return ImportedDataset(splits=splits)
