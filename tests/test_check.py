"""`instaseg data check`: every problem kind, check_pass, exact statistics, pictures, the real tiny_coco sample."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instaseg.data.check import check_dataset
from instaseg.data.check_problems import ERROR, SEVERITY, Problems
from test_formats_common import tree_hash

W, H = 128, 96  # every image of the hand-made dataset


def _square(x: float, y: float, w: float, h: float) -> list[float]:
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def _ann(aid: int, image_id: int, cat: int, x: float, y: float, w: float, h: float) -> dict:
    return {
        "id": aid,
        "image_id": image_id,
        "category_id": cat,
        "segmentation": [_square(x, y, w, h)],
        "bbox": [x, y, w, h],
        "area": w * h,
        "iscrowd": 0,
    }


def clean_dataset() -> dict[str, dict]:
    """Two splits, no problem at all. Areas: small < 32^2 <= medium < 96^2 <= large.

    train: image 1 has 3 instances (small cat, medium dog, large cat), image 2 one crowd cat (whole image,
    RLE, area 128*96 = 12288: large), image 3 none. val: image 11 has 2 (small dog, small cat), image 12 one
    medium dog.
    """
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    crowd_rle = {"size": [H, W], "counts": [0, W * H]}
    train = {
        "images": [{"id": i, "file_name": f"t{i}.png", "width": W, "height": H} for i in (1, 2, 3)],
        "annotations": [
            _ann(1, 1, 1, 2, 2, 10, 10),
            _ann(2, 1, 2, 20, 5, 40, 40),
            _ann(3, 1, 1, 10, 2, 110, 90),
            {**_ann(4, 2, 1, 0, 0, W, H), "segmentation": crowd_rle, "iscrowd": 1},
        ],
        "categories": cats,
    }
    val = {
        "images": [{"id": i, "file_name": f"v{i}.png", "width": W, "height": H} for i in (11, 12)],
        "annotations": [_ann(21, 11, 2, 5, 5, 8, 8), _ann(22, 11, 1, 30, 30, 20, 20), _ann(23, 12, 2, 0, 0, 50, 50)],
        "categories": [dict(c) for c in cats],
    }
    return {"train": train, "val": val}


def write_dataset(root: Path, splits: dict[str, dict]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for split, data in splits.items():
        for im in data["images"]:
            path = root / "images" / im["file_name"]
            if path.resolve().is_relative_to(root.resolve()) and not path.exists():
                Image.new("RGB", (W, H), (90, 120, 150)).save(path)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def test_clean_dataset_statistics_are_exact(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", clean_dataset())
    before = tree_hash(data)
    report = check_dataset(data)
    out = tmp_path / "ds_check"  # the default: beside the dataset, never inside it
    assert report["out_dir"] == str(out.resolve())
    assert tree_hash(data) == before
    assert report["check_pass"] and report["done_flag"]
    assert report["problems"] == [] and report["problem_counts"] == {}
    a = report["attributes"]
    assert a["class_names"] == ["cat", "dog"] and a["num_classes"] == 2
    assert (a["train_samples"], a["train_instances"], a["train_crowd_instances"]) == (3, 4, 1)
    assert (a["val_samples"], a["val_instances"], a["val_crowd_instances"]) == (2, 3, 0)
    assert a["instances_per_class"] == {"cat": {"train": 3, "val": 1}, "dog": {"train": 1, "val": 2}}
    assert a["train_images_without_annotations"] == 1 and a["val_images_without_annotations"] == 0
    assert a["train_sizes"] == {"small": 1, "medium": 1, "large": 2, "unknown": 0}
    assert a["val_sizes"] == {"small": 2, "medium": 1, "large": 0, "unknown": 0}
    per_image = a["train_instances_per_image"]
    assert (per_image["min"], per_image["max"], per_image["median"]) == (0, 3, 1.0)
    assert per_image["histogram"]["0"] == 1 and per_image["histogram"]["1"] == 1 and per_image["histogram"]["3"] == 1
    assert json.loads((out / "check_result.json").read_text()) == json.loads(json.dumps(report))
    assert Image.open(out / "histogram.png").size[0] > 100
    # images with annotations: train 1 and 2, val 11 and 12; num_samples=4 draws each of them once
    assert len(a["train_sample_paths"]) == 2 and len(a["val_sample_paths"]) == 2
    for rel in a["train_sample_paths"] + a["val_sample_paths"]:
        assert Image.open(out / rel).size == (W, H)


def test_samples_show_masks(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", clean_dataset())
    report = check_dataset(data, out=tmp_path / "report", num_samples=1)
    (rel,) = report["attributes"]["val_sample_paths"]
    picture = np.asarray(Image.open(tmp_path / "report" / rel).convert("RGB"), dtype=int)
    background = np.array([90, 120, 150])
    # val image 11 is drawn; its cat covers (30..50, 30..50): those pixels must be tinted
    assert np.abs(picture[40, 40] - background).sum() > 30
    assert np.abs(picture[90, 120] - background).sum() < 30  # outside every mask: untouched


def _set(split: str, key: str, index: int, **fields) -> Callable[[dict, Path], None]:
    def mutate(d: dict, root: Path) -> None:
        d[split][key][index].update(fields)

    return mutate


def _add(split: str, key: str, record: dict) -> Callable[[dict, Path], None]:
    return lambda d, root: d[split][key].append(record)


def _seg(index: int, seg) -> Callable[[dict, Path], None]:
    return _set("train", "annotations", index, segmentation=seg)


def _write_file(name: str, data: bytes) -> Callable[[dict, Path], None]:
    return lambda d, root: (root / "images" / name).write_bytes(data)


def _delete_bbox(d: dict, root: Path) -> None:
    del d["train"]["annotations"][0]["bbox"]


def _delete_file(d: dict, root: Path) -> None:
    (root / "images" / "t2.png").unlink()


def _empty_val(d: dict, root: Path) -> None:
    d["val"]["images"], d["val"]["annotations"] = [], []


# (case, mutation of the clean dataset, the exact problem kinds expected, (split, image id, annotation id, file))
CASES = [
    ("missing", _delete_file, {"missing_image"}, ("train", 2, None, "t2.png")),
    ("corrupt", _write_file("t2.png", b"not an image"), {"unreadable_image"}, ("train", 2, None, "t2.png")),
    ("size", _set("train", "images", 2, width=100), {"image_size_mismatch"}, ("train", 3, None, "t3.png")),
    ("few", _seg(0, [_square(2, 2, 10, 10), [1, 1, 2, 2]]), {"polygon_too_few_points"}, ("train", 1, 1, "t1.png")),
    ("odd", _seg(0, [_square(2, 2, 10, 10) + [5]]), {"polygon_odd_coordinates"}, ("train", 1, 1, "t1.png")),
    ("flat", _seg(1, [[20, 5, 40, 5, 60, 5]]), {"zero_area_polygon"}, ("train", 1, 2, "t1.png")),
    ("poly_out", _seg(1, [[20, 5, 200, 5, 60, 45]]), {"polygon_outside_image"}, ("train", 1, 2, "t1.png")),
    ("empty_seg", _seg(1, []), {"empty_segmentation"}, ("train", 1, 2, "t1.png")),
    ("few_only", _seg(1, [[1, 1, 2, 2]]), {"polygon_too_few_points", "empty_segmentation"}, ("train", 1, 2, None)),
    ("no_box", _delete_bbox, {"missing_bbox"}, ("train", 1, 1, "t1.png")),
    ("flat_box", _set("train", "annotations", 1, bbox=[20, 5, 0, 40]), {"zero_area_box"}, ("train", 1, 2, None)),
    ("box_out", _set("train", "annotations", 1, bbox=[100, 5, 40, 40]), {"box_outside_image"}, ("train", 1, 2, None)),
    ("unknown_img", _set("val", "annotations", 2, image_id=99), {"unknown_image"}, ("val", 99, 23, None)),
    ("unknown_cat", _set("val", "annotations", 2, category_id=7), {"unknown_category"}, ("val", 12, 23, "v12.png")),
    ("dup_img", _set("train", "images", 2, id=2), {"duplicate_image_id"}, ("train", 2, None, None)),
    ("dup_ann", _set("train", "annotations", 1, id=1), {"duplicate_annotation_id"}, ("train", None, 1, None)),
    (
        "dup_cat",
        _add("train", "categories", {"id": 2, "name": "wolf"}),
        {"duplicate_category_id"},
        ("train", None, None, None),
    ),
    (
        "dup_name",
        _add("train", "categories", {"id": 3, "name": "cat"}),
        {"duplicate_category_name", "class_without_train_instances"},
        ("train", None, None, None),
    ),
    (
        "unused",
        _add("train", "categories", {"id": 3, "name": "bird"}),
        {"class_without_train_instances"},
        ("train", None, None, None),
    ),
    ("dup_file", _set("train", "images", 2, file_name="t1.png"), {"duplicate_image_file"}, ("train", None, None, None)),
    ("leak", _set("val", "images", 1, file_name="t2.png"), {"image_in_several_splits"}, (None, None, None, "t2.png")),
    (
        "rle",
        _set("train", "annotations", 3, segmentation={"size": [10, 10], "counts": [0, 100]}),
        {"rle_size_mismatch"},
        ("train", 2, 4, "t2.png"),
    ),
    (
        "escape",
        _set("train", "images", 2, file_name="../outside.png"),
        {"image_path_escapes_root"},
        ("train", 3, None, None),
    ),
    (
        "zero_size",
        _set("train", "images", 2, width=0),
        {"invalid_image_size", "image_size_mismatch"},
        ("train", 3, None, None),
    ),
    ("no_images", _empty_val, {"no_images"}, ("val", None, None, None)),
]


@pytest.mark.parametrize("case,mutate,kinds,where", CASES, ids=[c[0] for c in CASES])
def test_every_problem_kind_is_found_and_located(tmp_path: Path, case, mutate, kinds, where) -> None:
    splits = clean_dataset()
    root = tmp_path / "ds"
    write_dataset(root, splits)  # files first: a mutation may break one of them
    mutate(splits, root)
    for split, d in splits.items():
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(d))
    report = check_dataset(root, out=tmp_path / "report", num_samples=1)
    assert set(report["problem_counts"]) == kinds
    assert report["check_pass"] == all(SEVERITY[k] != ERROR for k in kinds)
    (main,) = sorted(kinds - {"empty_segmentation", "class_without_train_instances", "image_size_mismatch"}) or kinds
    found = [p for p in report["problems"] if p["kind"] == main]
    assert len(found) == 1 and found[0]["severity"] == SEVERITY[main] and found[0]["message"]
    split, image_id, ann_id, file = where
    assert (found[0]["split"], found[0]["image_id"], found[0]["annotation_id"]) == (split, image_id, ann_id)
    if file:
        assert Path(found[0]["file"]).name == file


def test_no_categories_is_an_error(tmp_path: Path) -> None:
    splits = clean_dataset()
    splits["val"]["categories"] = []
    report = check_dataset(write_dataset(tmp_path / "ds", splits), out=tmp_path / "r", num_samples=0)
    assert report["problem_counts"] == {"no_categories": 1, "unknown_category": 3}
    assert not report["check_pass"]


def test_every_kind_has_a_case() -> None:
    covered = set().union(*(c[2] for c in CASES)) | {"no_categories"}
    assert covered == set(SEVERITY)


def test_listed_problems_are_capped_but_counted() -> None:
    problems = Problems(max_listed=10)
    for k in range(30):
        problems.add("zero_area_box", "box has zero area", "train", "a.png", 1, k)
    problems.add("missing_bbox", "annotation has no 'bbox'", "train", "a.png", 1, 99)
    assert problems.counts == {"zero_area_box": 30, "missing_bbox": 1}
    assert len(problems.items) == 11 and not problems.has_errors
    problems.add("unknown_image", "image id 5 is not in 'images'", "train", "x.json", 5, 100)
    assert problems.has_errors


def test_annotation_json_input_and_its_default_out(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", clean_dataset())
    report = check_dataset(data / "annotations" / "instances_val.json", num_samples=0)
    assert report["out_dir"] == str((tmp_path / "ds_instances_val_check").resolve())
    assert report["attributes"]["splits"] == ["val"] and report["attributes"]["val_instances"] == 3


def test_cli_exit_codes(tmp_path: Path, cli) -> None:
    clean = write_dataset(tmp_path / "clean", clean_dataset())
    code, out, _ = cli("data", "check", clean, "--out", tmp_path / "r1", "--samples", "1")
    assert code == 0 and "PASS" in out
    broken = clean_dataset()
    broken["val"]["annotations"][0]["category_id"] = 9
    code, out, _ = cli("data", "check", write_dataset(tmp_path / "broken", broken), "--out", tmp_path / "r2")
    assert code == 1 and "unknown_category" in out and "FAIL" in out
    code, _, err = cli("data", "check", tmp_path / "absent")
    assert code == 2 and "absent" in err and "Traceback" not in err
    (clean / "annotations" / "instances_val.json").write_text("{bad json")
    code, _, err = cli("data", "check", clean)
    assert code == 2 and "instances_val.json" in err
    code, _, err = cli("data", "check", tmp_path / "broken", "--out", tmp_path / "broken" / "report")
    assert code == 2 and "inside the source" in err
    assert not (tmp_path / "broken" / "report").exists()


def test_many_classes_histogram_is_drawn(tmp_path: Path) -> None:
    splits = clean_dataset()
    cats = [{"id": i, "name": f"class_{i}"} for i in range(1, 301)]
    for d in splits.values():
        d["categories"] = cats
    report = check_dataset(write_dataset(tmp_path / "ds", splits), out=tmp_path / "r", num_samples=0)
    assert report["problem_counts"] == {"class_without_train_instances": 298}
    width, height = Image.open(tmp_path / "r" / "histogram.png").size
    assert height > 2000 and width >= 800  # one readable row per shown class, not a squeezed axis


def test_tiny_coco(tiny_coco: Path, tmp_path: Path) -> None:
    """The real sample: counts as its json says, crowd RLE, unannotated images, official areas not flagged."""
    before = tree_hash(tiny_coco)
    report = check_dataset(tiny_coco, out=tmp_path / "r")
    assert tree_hash(tiny_coco) == before
    a = report["attributes"]
    assert report["check_pass"] and a["num_classes"] == 80
    for split in ("train", "val"):
        raw = json.loads((tiny_coco / "annotations" / f"instances_{split}.json").read_text())
        used = {x["image_id"] for x in raw["annotations"]}
        assert a[f"{split}_samples"] == len(raw["images"]) == 50
        assert a[f"{split}_instances"] == len(raw["annotations"])
        assert a[f"{split}_crowd_instances"] == sum(x["iscrowd"] for x in raw["annotations"]) > 0
        assert a[f"{split}_images_without_annotations"] == len({i["id"] for i in raw["images"]} - used) > 0
        areas = np.array([x["area"] for x in raw["annotations"]])
        sizes = a[f"{split}_sizes"]
        assert sizes["small"] == (areas < 32**2).sum() and sizes["large"] == (areas >= 96**2).sum()
        assert sum(c[split] for c in a["instances_per_class"].values()) == len(raw["annotations"])
        assert len(a[f"{split}_sample_paths"]) == 4
    # README: 49 of the 80 classes are used in train; the other 31 are the only (warning) problems
    assert report["problem_counts"] == {"class_without_train_instances": 31}
