"""Writing a COCO dataset folder: ``OUT/images/`` + ``OUT/annotations/instances_{split}.json``.

Used by every conversion and by re-splitting, so each writes the same layout and never touches the source.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from instaseg.data.coco import CocoData, save_coco, split_file
from instaseg.errors import UserError, disk_full
from instaseg.utils.io import disk_full_error
from instaseg.utils.progress import track


def refuse_inside_sources(out: str | Path, sources: list[Path]) -> Path:
    """Resolved ``out``; a UserError when it equals or lies inside a source folder, so sources stay untouched."""
    out = Path(out).resolve()
    for src in sources:
        src = Path(src).resolve()
        if out == src or out.is_relative_to(src):
            raise UserError(f"output folder must not be inside the source dataset {src}", out)
    return out


def prepare_output_dir(out: str | Path, sources: list[Path]) -> Path:
    """Create ``out``; refuse an output inside or equal to a source folder so sources stay untouched."""
    out = refuse_inside_sources(out, sources)
    if out.exists() and any(out.iterdir()):
        raise UserError("output folder exists and is not empty", out)
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A hidden sibling folder to write a whole dataset into, renamed onto the (empty) ``out`` when the block
    ends without an error: a killed or failed run never leaves a folder that looks like a finished dataset."""
    staging = out.parent / f".{out.name}.partial"
    if staging.exists():  # left by a killed run: ours by its name, and never a finished dataset
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
        if out.exists():
            out.rmdir()  # prepare_output_dir made it and it is still empty (rmdir refuses otherwise)
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def place_image(src: Path, dst: Path, link: bool) -> None:
    """Copy (default) or symlink ``src`` to ``dst``; never moves or alters the source."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        if link:
            os.symlink(src.resolve(), dst)
        else:
            shutil.copy2(src, dst)
    except OSError as e:
        if disk_full(e):
            dst.unlink(missing_ok=True)  # a partial copy must not pass for the image
            raise disk_full_error(dst) from None
        raise


def write_coco_dataset(
    splits: dict[str, CocoData],
    out: str | Path,
    link_images: bool = False,
    image_source: Callable[[CocoData, dict], Path] | None = None,
) -> Path:
    """Write each split's annotations and place its images under ``out/images`` with the same file names.

    ``image_source(data, image)`` gives the file to copy for an image record (default: ``data.image_path``).
    Records' ``file_name`` values are kept as they are, relative to ``out/images``.
    """
    out = Path(out)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for split, data in splits.items():
        for image in track(data.images, f"writing {split} images", total=len(data.images)):
            src = image_source(data, image) if image_source else data.image_path(image)
            place_image(Path(src), images_dir / image["file_name"], link_images)
        written = CocoData(
            images=data.images,
            annotations=data.annotations,
            categories=data.categories,
            image_root=images_dir,
            info=data.info,
            licenses=data.licenses,
        )
        save_coco(written, split_file(out, split))
    return out
