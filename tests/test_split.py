"""`instaseg data split`: determinism, percentages, annotations follow their image, ids, the source untouched."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from instaseg.data.coco import load_dataset
from instaseg.data.split import split_dataset
from test_formats_common import tree_hash


def make_dataset(root: Path, n_train: int = 12, n_val: int = 8, val_id_offset: int = 1000) -> Path:
    """n_train + n_val tiny images; image k has k % 3 + 1 annotations; val image ids are k + 1 + val_id_offset."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    for split, names, offset in (
        ("train", range(n_train), 0),
        ("val", range(n_train, n_train + n_val), val_id_offset),
    ):
        images, anns = [], []
        for k in names:
            Image.new("RGB", (16, 12), (k * 10 % 255, 0, 0)).save(root / "images" / f"im{k:03d}.png")
            image_id = k + 1 + offset
            images.append({"id": image_id, "file_name": f"im{k:03d}.png", "width": 16, "height": 12})
            for j in range(k % 3 + 1):
                box = [1 + j, 1, 4, 4]
                poly = [box[0], 1, box[0] + 4, 1, box[0] + 4, 5, box[0], 5]
                anns.append(
                    {"id": 100 * image_id + j, "image_id": image_id, "category_id": j % 2 + 1, "bbox": box,
                     "segmentation": [poly], "area": 16.0, "iscrowd": 0}
                )  # fmt: skip
        data = {"images": images, "annotations": anns, "categories": cats, "info": {"split_name": split}}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def files_of(out: Path, split: str) -> set[str]:
    data = json.loads((out / "annotations" / f"instances_{split}.json").read_text())
    return {im["file_name"] for im in data["images"]}


def annotations_by_file(root: Path) -> dict[str, list[tuple]]:
    """file -> sorted (category, bbox) of its annotations, over all splits: ids aside, what must be preserved."""
    result: dict[str, list[tuple]] = {}
    for data in load_dataset(root).values():
        names = {im["id"]: im["file_name"] for im in data.images}
        for im in data.images:
            result.setdefault(im["file_name"], [])
        for a in data.annotations:
            result[names[a["image_id"]]].append((a["category_id"], tuple(a["bbox"])))
    return {k: sorted(v) for k, v in result.items()}


def test_split_is_deterministic_and_follows_percentages(tmp_path: Path) -> None:
    src = make_dataset(tmp_path / "src")
    before = tree_hash(src)
    a = split_dataset(src, tmp_path / "a", train=75, val=25, seed=3)
    b = split_dataset(src, tmp_path / "b", train=75, val=25, seed=3)
    c = split_dataset(src, tmp_path / "c", train=75, val=25, seed=4)
    assert tree_hash(src) == before
    assert tree_hash(a) == tree_hash(b)
    assert files_of(a, "train") != files_of(c, "train")
    assert (len(files_of(a, "train")), len(files_of(a, "val"))) == (15, 5)
    assert files_of(a, "train").isdisjoint(files_of(a, "val"))
    assert files_of(a, "train") | files_of(a, "val") == {p.name for p in (src / "images").iterdir()}
    assert sorted(p.name for p in (a / "images").iterdir()) == sorted(p.name for p in (src / "images").iterdir())
    assert not any(p.is_symlink() for p in (a / "images").iterdir())


def test_annotations_and_ids_are_kept(tmp_path: Path) -> None:
    src = make_dataset(tmp_path / "src")
    out = split_dataset(src, tmp_path / "out", seed=0)
    assert annotations_by_file(out) == annotations_by_file(src)
    old = {(a["id"], a["image_id"]) for d in load_dataset(src).values() for a in d.annotations}
    new = {(a["id"], a["image_id"]) for d in load_dataset(out).values() for a in d.annotations}
    assert new == old  # no collision: nothing renumbered
    info = json.loads((out / "annotations" / "instances_val.json").read_text())["info"]
    assert info["split"] == {"seed": 0, "train": 80, "val": 20, "part": "val"} and info["split_name"] == "val"


def test_colliding_ids_are_renumbered_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = make_dataset(tmp_path / "src", val_id_offset=-12)  # val image ids 1..8 repeat train's
    with caplog.at_level(logging.WARNING, logger="instaseg.data.split"):
        out = split_dataset(src, tmp_path / "out", seed=1)
    assert "image ids repeat" in caplog.text and "annotation ids repeat" in caplog.text
    assert annotations_by_file(out) == annotations_by_file(src)
    splits = load_dataset(out)
    image_ids = [im["id"] for d in splits.values() for im in d.images]
    ann_ids = [a["id"] for d in splits.values() for a in d.annotations]
    assert sorted(image_ids) == list(range(1, 21)) and sorted(ann_ids) == list(range(1, len(ann_ids) + 1))


def test_linked_images_and_single_split(tmp_path: Path) -> None:
    src = make_dataset(tmp_path / "src")
    out = split_dataset(src / "annotations" / "instances_train.json", tmp_path / "out", 100, 0, link_images=True)
    assert sorted(p.name for p in (out / "annotations").iterdir()) == ["instances_train.json"]
    (train,) = load_dataset(out).values()
    assert len(train.images) == 12
    for im in train.images:
        path = train.image_path(im)  # the linked file must still load through the dataset's own root
        assert path.is_symlink() and path.resolve().parent == (src / "images").resolve()


def test_bad_input_exits_2(tmp_path: Path, cli) -> None:
    src = make_dataset(tmp_path / "src", n_train=3, n_val=2)
    before = tree_hash(src)
    code, _, err = cli("data", "split", tmp_path / "absent", "--out", tmp_path / "o1")
    assert code == 2 and "absent" in err
    code, _, err = cli("data", "split", src, "--train", "70", "--val", "20", "--out", tmp_path / "o2")
    assert code == 2 and "sum to 100" in err
    code, _, err = cli("data", "split", src, "--out", src / "resplit")
    assert code == 2 and "inside the source" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    code, _, err = cli("data", "split", src, "--out", tmp_path / "full")
    assert code == 2 and "not empty" in err
    code, out, _ = cli("data", "split", src, "--seed", "5", "--out", tmp_path / "ok")
    assert code == 0 and "ok" in out
    assert tree_hash(src) == before


def test_category_conflict_is_a_user_error(tmp_path: Path, cli) -> None:
    src = make_dataset(tmp_path / "src", n_train=3, n_val=2)
    path = src / "annotations" / "instances_val.json"
    data = json.loads(path.read_text())
    data["categories"][0]["name"] = "renamed"
    path.write_text(json.dumps(data))
    code, _, err = cli("data", "split", src, "--out", tmp_path / "o")
    assert code == 2 and "category id 1" in err


def test_tiny_coco_resplit(tiny_coco: Path, tmp_path: Path) -> None:
    out = split_dataset(tiny_coco, tmp_path / "out", train=70, val=30, seed=0, link_images=True)
    assert (len(files_of(out, "train")), len(files_of(out, "val"))) == (70, 30)
    assert annotations_by_file(out) == annotations_by_file(tiny_coco)
