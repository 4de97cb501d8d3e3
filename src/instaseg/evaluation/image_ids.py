"""Which ground-truth image a predicted file is: COCO results are scored by image id, so they must carry the
ground truth's ids, found by file name, never the order the files happened to be read in.

`ResultImageIds` gives `instaseg predict --coco-results` the id of each input: with a ground truth (an annotation
json, or a dataset folder whose splits are all searched) by matching file names; without one only COCO's own
convention is safe, a file named by its id (``000000397133.jpg``). Both are checked before any prediction runs.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from instaseg.data.coco import CocoData, find_split_files, load_coco
from instaseg.errors import UserError

_NEEDS_GT = "give --gt (the annotations json or dataset folder) so results carry the ground truth's image ids"


def _parts(name: str | PurePath) -> tuple[str, ...]:
    return PurePath(str(name).replace("\\", "/")).parts


class GroundTruthImages:
    """The images of one or more COCO files, found by path: the same file on disk, else the record whose
    ``file_name`` the path ends with, else the only record with that base name."""

    def __init__(self, datasets: list[CocoData], source: str | Path):
        self.source = str(source)
        self.by_path: dict[str, list[dict]] = {}
        self.by_base: dict[str, list[dict]] = {}
        for data in datasets:
            for record in data.images:
                self.by_path.setdefault(os.path.realpath(data.image_path(record)), []).append(record)
                self.by_base.setdefault(PurePath(record["file_name"]).name, []).append(record)

    @classmethod
    def load(cls, spec: str | Path) -> GroundTruthImages:
        """An annotation json, or a dataset folder (every split's json in the default layout)."""
        if Path(spec).is_file():
            return cls([load_coco(spec)], spec)
        return cls([load_coco(p) for p in find_split_files(spec).values()], spec)

    def record_of(self, path: str | Path) -> dict:
        """The image record of the file at ``path``; a UserError when none or several could be it."""
        chosen = self.by_path.get(os.path.realpath(path))
        if not chosen:
            candidates = self.by_base.get(Path(path).name, [])
            parts = _parts(os.path.abspath(path))
            ending = [r for r in candidates if parts[-len(_parts(r["file_name"])) :] == _parts(r["file_name"])]
            chosen = ending or candidates
        if len({r["id"] for r in chosen}) == 1:
            return chosen[0]
        if not chosen:
            raise UserError(f"not an image of the ground truth {self.source}", path)
        ids = ", ".join(str(r["id"]) for r in chosen[:4])
        raise UserError(f"several ground-truth images could be this file (ids {ids}): give --gt one split", path)


class ResultImageIds:
    """The COCO image id (and file name) of each predicted file: from ``gt`` when given, else the file's name."""

    def __init__(self, gt: str | Path | None = None):
        self.images = GroundTruthImages.load(gt) if gt is not None else None

    def check(self, paths: list[Path]) -> None:
        """Fail in one line, before predicting, on the first input that would get no id."""
        for path in paths:
            self.of(path)

    def of(self, path: str | Path | None, frame_index: int | None = None) -> tuple[int, str]:
        """(image id, file name) for a predicted file: the ground truth's record, or COCO's numbered names."""
        if path is None or frame_index is not None:
            raise UserError("COCO results need image files; video frames and arrays have no image id", path)
        if self.images is not None:
            record = self.images.record_of(path)
            return int(record["id"]), str(record["file_name"])
        stem = Path(path).stem
        if not stem.isdigit():
            raise UserError(f"the file name is not an image id: {_NEEDS_GT}", path)
        return int(stem), Path(path).name
