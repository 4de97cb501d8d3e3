"""Helpers shared by the format tests (tiny images, label maps, source-tree hashes) and tests of the common parts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instaseg.data.convert import split_off_val
from instaseg.data.formats.common import DatasetBuilder, read_labels_file, relative_inside, split_of
from instaseg.data.formats.yolo import join_parts
from instaseg.data.masks import segmentation_to_mask
from instaseg.errors import UserError

W, H = 64, 48


def tree_hash(root: Path) -> str:
    """Hash of every path and file content under ``root``: equal before and after means untouched."""
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        digest.update(path.relative_to(root).as_posix().encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def write_image(path: Path, width: int = W, height: int = H, mode: str = "RGB", seed: int = 0, **save) -> Path:
    """A small random image of the given PIL mode (RGB, L, RGBA, I;16)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).convert(mode)
    img.save(path, **save)
    return path


def write_label_map(path: Path, values: np.ndarray, palette: bool = False) -> Path:
    """A label-map PNG holding ``values`` exactly: 8-bit (palette when asked) or 16-bit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if values.max() > 255:
        img = Image.fromarray(values.astype(np.uint16))
    else:
        img = Image.fromarray(values.astype(np.uint8), mode="L")
        if palette:
            img.putpalette([v for k in range(256) for v in ((k * 37) % 256, (k * 91) % 256, (k * 13) % 256)])
    img.save(path)
    return path


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def load_split(out: Path, split: str = "train") -> dict:
    return json.loads((out / "annotations" / f"instances_{split}.json").read_text())


def decoded(ann: dict, image: dict) -> np.ndarray:
    return segmentation_to_mask(ann["segmentation"], image["height"], image["width"]).astype(bool)


def convert(cli, src: Path, fmt: str, out: Path, *extra) -> tuple[int, str, str]:
    """`instaseg data convert SRC --from FMT --out OUT [extra...]`."""
    return cli("data", "convert", src, "--from", fmt, "--out", out, *extra)


def assert_user_error(result: tuple[int, str, str], *names: str) -> None:
    """CLI exit 2 with a one-line message naming each of ``names``."""
    code, _, err = result
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], (name, lines[0])


# --- tests of the shared pieces ---


def test_labels_file_special_lines(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("__ignore__\n_background_\ncat\n\ndog\n")
    assert read_labels_file(path) == (["cat", "dog"], True)
    path.write_text("cat\ncat\n")
    with pytest.raises(UserError, match="line 2"):
        read_labels_file(path)


def test_relative_inside_refuses_escapes(tmp_path):
    assert relative_inside(tmp_path, tmp_path / "a" / ".." / "b.jpg", tmp_path, "x") == "b.jpg"
    for bad in (tmp_path / ".." / "b.jpg", Path("/etc/passwd"), tmp_path):
        with pytest.raises(UserError, match="escapes"):
            relative_inside(tmp_path, bad, tmp_path / "a.json", "imagePath")


def test_split_of():
    assert split_of("val/x/a.jpg") == ("val", "x/a.jpg")
    assert split_of("valid/a.jpg") == ("val", "a.jpg")
    assert split_of("a.jpg") == ("train", "a.jpg")
    assert split_of("other/a.jpg") == ("train", "other/a.jpg")


def test_join_parts_keeps_area():
    a = np.array([[2, 2], [10, 2], [10, 10], [2, 10]], dtype=float)
    b = a + [20, 5]
    ring = join_parts([a, b])
    h, w = 30, 40
    joined = segmentation_to_mask([ring.reshape(-1).tolist()], h, w).astype(bool)
    parts = segmentation_to_mask([a.reshape(-1).tolist(), b.reshape(-1).tolist()], h, w).astype(bool)
    assert (joined & parts).sum() == parts.sum()
    assert (joined & ~parts).sum() <= 12  # the zero-width bridge may touch a few pixels


def _builder_with_images(n: int) -> DatasetBuilder:
    builder = DatasetBuilder(["thing"])
    for k in range(n):
        image_id = builder.add_image("train", f"img{k}.png", (W, H), Path(f"/x/img{k}.png"), Path("src"))
        builder.add_polygons(image_id, 1, [[1, 1, 10, 1, 10, 10]])
    return builder


def test_split_off_val_is_deterministic_and_complete():
    data = _builder_with_images(10).build(Path("/x"), "test")
    first, second = split_off_val(data, 0.3), split_off_val(data, 0.3)
    val_names = [im["file_name"] for im in first.splits["val"].images]
    assert len(val_names) == 3 and val_names == [im["file_name"] for im in second.splits["val"].images]
    train_ids = {im["id"] for im in first.splits["train"].images}
    assert len(train_ids) == 7 and not train_ids & {im["id"] for im in first.splits["val"].images}
    for split, part in first.splits.items():
        assert {a["image_id"] for a in part.annotations} == {im["id"] for im in part.images}
        assert all((split, im["id"]) in first.sources for im in part.images)


def test_builder_numbers_open_vocabulary_in_sorted_order():
    builder = DatasetBuilder()
    image_id = builder.add_image("train", "a.png", (W, H), Path("/x/a.png"), Path("a.json"))
    for name in ("zebra", "ant"):
        builder.add_polygons(image_id, builder.category_id(name, Path("a.json"), "shape"), [[1, 1, 9, 1, 9, 9]])
    data = builder.build(Path("/x"), "test").splits["train"]
    assert data.class_names == ["ant", "zebra"]
    names = {c["id"]: c["name"] for c in data.categories}
    assert [names[a["category_id"]] for a in data.annotations] == ["zebra", "ant"]
    with pytest.raises(UserError, match="already used"):
        builder.add_image("train", "a.png", (W, H), Path("/x/a.png"), Path("b.json"))
