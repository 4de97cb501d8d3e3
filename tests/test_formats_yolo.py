import json

import numpy as np
import pytest
from PIL import Image

from instaseg.data.masks import mask_to_rle
from test_formats_common import H, W, assert_user_error, convert, decoded, load_split, tree_hash, write_image


def _yolo_src(root, layout="splits", names_file="yaml-list"):
    """A YOLO-seg dataset: a triangle of class 1 and a box line of class 0 per image."""
    lines = "1 0.1 0.1 0.5 0.1 0.5 0.5\n0 0.75 0.5 0.25 0.5\n"
    if layout == "splits":
        rels = {"images/train/a.jpg": "labels/train/a.txt", "images/val/b.png": "labels/val/b.txt"}
    elif layout == "flat":
        rels = {"images/a.jpg": "labels/a.txt", "images/sub/b.png": "labels/sub/b.txt"}
    else:  # roboflow
        rels = {"train/images/a.jpg": "train/labels/a.txt", "valid/images/b.png": "valid/labels/b.txt"}
    for image, label in rels.items():
        write_image(root / image)
        (root / label).parent.mkdir(parents=True, exist_ok=True)
        (root / label).write_text(lines)
    write_image(root / list(rels)[0].replace("a.jpg", "unlabelled.jpg"))
    if names_file == "yaml-list":
        (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [box, tri]\n")
    elif names_file == "yaml-dict":
        (root / "data.yaml").write_text("names:\n  0: box\n  1: tri\n")
    else:
        (root / "classes.txt").write_text("box\ntri\n")
    return root


@pytest.mark.parametrize(
    "layout, names_file, splits",
    [
        ("splits", "yaml-list", {"train": 2, "val": 1}),
        ("flat", "yaml-dict", {"train": 3}),
        ("roboflow", "classes.txt", {"train": 2, "val": 1}),
    ],
)
def test_yolo_to_coco(layout, names_file, splits, tmp_path, cli):
    src = _yolo_src(tmp_path / "src", layout, names_file)
    before = tree_hash(src)
    code, _, err = convert(cli, src, "yolo", tmp_path / "out")
    assert code == 0, err
    assert tree_hash(src) == before
    for split, n_images in splits.items():
        coco = load_split(tmp_path / "out", split)
        assert len(coco["images"]) == n_images
        assert {c["id"]: c["name"] for c in coco["categories"]} == {1: "box", 2: "tri"}
        for image in coco["images"]:
            assert (tmp_path / "out" / "images" / image["file_name"]).is_file()
            anns = {a["category_id"]: a for a in coco["annotations"] if a["image_id"] == image["id"]}
            if "unlabelled" in image["file_name"]:
                assert not anns
                continue
            assert anns[2]["segmentation"] == [[6.4, 4.8, 32.0, 4.8, 32.0, 24.0]]
            assert anns[1]["bbox"] == [40.0, 12.0, 16.0, 24.0]


def test_yolo_unknown_class_names_file_and_line(tmp_path, cli):
    src = _yolo_src(tmp_path / "src")
    (src / "labels" / "val" / "b.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5\n\n7 0.1 0.1 0.5 0.1 0.5 0.5\n")
    before = tree_hash(src)
    assert_user_error(convert(cli, src, "yolo", tmp_path / "o"), "b.txt", "line 3", "7")
    assert tree_hash(src) == before and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 0.1 abc 0.5\n", "numbers"),
        ("0 0.1 nan 0.5 0.1 0.5 0.5\n", "numbers"),
        ("1 0.1 0.1 0.5 0.1 0.5\n", "pairs"),
        ("0 3 3 9 3 9 9\n", "[0, 1]"),
    ],
)
def test_yolo_malformed_lines(text, message, tmp_path, cli):
    src = _yolo_src(tmp_path / "src")
    (src / "labels" / "train" / "a.txt").write_text(text)
    assert_user_error(convert(cli, src, "yolo", tmp_path / "o"), "a.txt", "line 1", message)


def test_yolo_missing_names_and_bad_yaml(tmp_path, cli):
    src = _yolo_src(tmp_path / "src")
    (src / "data.yaml").write_text("names: [box, tri\n")
    assert_user_error(convert(cli, src, "yolo", tmp_path / "o"), "data.yaml")
    (src / "data.yaml").unlink()
    assert_user_error(convert(cli, src, "yolo", tmp_path / "o"), "classes.txt")


def _write_coco(root):
    """A COCO dataset with a two-part polygon instance, a crowd RLE with a hole and a plain polygon."""
    write_image(root / "images" / "a.png")
    ring = np.zeros((H, W), np.uint8)
    ring[20:40, 30:60] = 1
    ring[26:34, 38:50] = 0
    anns = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 3,
            "iscrowd": 0,
            "segmentation": [[2, 2, 12, 2, 12, 12], [2, 20, 12, 20, 12, 30, 2, 30]],
        },
        {"id": 2, "image_id": 1, "category_id": 7, "iscrowd": 1, "segmentation": mask_to_rle(ring)},
        {"id": 3, "image_id": 1, "category_id": 7, "iscrowd": 0, "segmentation": [[15.5, 2.5, 25.5, 2.5, 20.5, 15.5]]},
    ]
    for ann in anns:
        ann["bbox"], ann["area"] = [0, 0, 1, 1], 1.0
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}],
        "annotations": anns,
        "categories": [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}],
    }
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train.json").write_text(json.dumps(coco))
    return coco


def test_coco_yolo_coco_round_trip(tmp_path, cli):
    original = _write_coco(tmp_path / "coco")
    before = tree_hash(tmp_path / "coco")
    assert cli("data", "convert", tmp_path / "coco", "--from", "coco", "--to", "yolo", "--out", tmp_path / "y")[0] == 0
    assert tree_hash(tmp_path / "coco") == before
    lines = (tmp_path / "y" / "labels" / "train" / "a.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1", "1"]
    assert "names" in (tmp_path / "y" / "data.yaml").read_text()
    with Image.open(tmp_path / "y" / "images" / "train" / "a.png") as img:
        assert img.size == (W, H)
    code, _, err = convert(cli, tmp_path / "y", "yolo", tmp_path / "back")
    assert code == 0, err
    back = load_split(tmp_path / "back")
    assert [c["name"] for c in back["categories"]] == ["three", "seven"]
    image = back["images"][0]
    assert len(back["annotations"]) == len(original["annotations"])
    for before_ann, after_ann in zip(original["annotations"], back["annotations"], strict=True):
        a, b = decoded(before_ann, image), decoded(after_ann, image)
        assert (a & b).sum() / (a | b).sum() > 0.8, before_ann["id"]


def test_tiny_coco_round_trip_keeps_instances(tiny_coco, tmp_path, cli):
    assert cli("data", "convert", tiny_coco, "--from", "coco", "--to", "yolo", "--out", tmp_path / "y")[0] == 0
    code, _, err = convert(cli, tmp_path / "y", "yolo", tmp_path / "c")
    assert code == 0, err
    for split in ("train", "val"):
        original = json.loads((tiny_coco / "annotations" / f"instances_{split}.json").read_text())
        back = load_split(tmp_path / "c", split)
        assert len(back["images"]) == len(original["images"])
        assert len(back["annotations"]) == len(original["annotations"])
        count = {}
        for ann in original["annotations"]:
            name = next(c["name"] for c in original["categories"] if c["id"] == ann["category_id"])
            count[name] = count.get(name, 0) + 1
        names = {c["id"]: c["name"] for c in back["categories"]}
        back_count = {}
        for ann in back["annotations"]:
            back_count[names[ann["category_id"]]] = back_count.get(names[ann["category_id"]], 0) + 1
        assert back_count == count
