import json

import numpy as np
import pytest

from test_formats_common import (
    H,
    W,
    assert_user_error,
    convert,
    decoded,
    load_split,
    tree_hash,
    write_image,
    write_label_map,
)


def _label_map(values=(1, 2)):
    lm = np.zeros((H, W), np.int64)
    lm[5:20, 5:25] = values[0]
    lm[10:14, 10:14] = 0  # hole
    lm[25:40, 30:50] = values[1]
    return lm


def _mask_src(root, values=(1, 2), sixteen_bit=False):
    write_image(root / "images" / "train" / "a.jpg")
    write_image(root / "images" / "val" / "b.png", mode="RGBA")
    write_image(root / "images" / "train" / "no_mask.png", mode="L")
    lm = _label_map(values)
    for rel in ("train/a.png", "val/b.png"):
        write_label_map(root / "masks" / rel, lm + (1000 * (lm > 0) if sixteen_bit else 0))
    return root


def _masks_equal(coco, lm):
    image = next(im for im in coco["images"] if "no_mask" not in im["file_name"])
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    got = sorted(decoded(a, image).sum() for a in anns)
    assert got == sorted((lm == v).sum() for v in np.unique(lm) if v)
    for ann in anns:
        mask = decoded(ann, image)
        assert np.array_equal(mask, lm == lm[mask][0])
    return anns


@pytest.mark.parametrize("sixteen_bit", [False, True])
def test_mask_png_single_class(sixteen_bit, tmp_path, cli):
    src = _mask_src(tmp_path / "src", sixteen_bit=sixteen_bit)
    before = tree_hash(src)
    code, _, err = convert(cli, src, "mask-png", tmp_path / "out")
    assert code == 0, err
    assert tree_hash(src) == before
    train = load_split(tmp_path / "out", "train")
    assert train["categories"] == [{"id": 1, "name": "object", "supercategory": ""}]
    assert len(train["images"]) == 2 and len(load_split(tmp_path / "out", "val")["images"]) == 1
    lm = _label_map()
    anns = _masks_equal(train, lm if not sixteen_bit else lm + 1000 * (lm > 0))
    assert len(anns) == 2 and all(a["category_id"] == 1 for a in anns)


def test_mask_png_labels_name(tmp_path, cli):
    src = _mask_src(tmp_path / "src")
    (tmp_path / "labels.txt").write_text("cell\n")
    assert convert(cli, src, "mask-png", tmp_path / "o", "--labels", tmp_path / "labels.txt")[0] == 0
    assert [c["name"] for c in load_split(tmp_path / "o")["categories"]] == ["cell"]


def test_mask_png_class_map_values(tmp_path, cli):
    src = _mask_src(tmp_path / "src", values=(3, 5))
    (tmp_path / "map.json").write_text(json.dumps({"5": "dog", "3": "cat", "4": "cat"}))
    assert convert(cli, src, "mask-png", tmp_path / "o", "--class-map", tmp_path / "map.json")[0] == 0
    train = load_split(tmp_path / "o")
    names = {c["id"]: c["name"] for c in train["categories"]}
    assert list(names.values()) == ["dog", "cat"]
    anns = _masks_equal(train, _label_map((3, 5)))
    assert sorted(names[a["category_id"]] for a in anns) == ["cat", "dog"]
    (tmp_path / "map.json").write_text(json.dumps({"3": "cat"}))
    result = convert(cli, src, "mask-png", tmp_path / "o2", "--class-map", tmp_path / "map.json")
    assert_user_error(result, "a.png", "pixel value 5")


def test_mask_png_class_map_folders(tmp_path, cli):
    src = tmp_path / "src"
    write_image(src / "images" / "a.png")
    write_label_map(src / "masks" / "cats" / "a.png", _label_map((1, 2)))
    dogs = np.zeros((H, W), np.int64)
    dogs[40:46, 2:10] = 1
    write_label_map(src / "masks" / "dogs" / "a.png", dogs)
    (tmp_path / "map.json").write_text(json.dumps({"cats": "cat", "dogs": "dog"}))
    assert convert(cli, src, "mask-png", tmp_path / "o", "--class-map", tmp_path / "map.json")[0] == 0
    train = load_split(tmp_path / "o")
    names = {c["id"]: c["name"] for c in train["categories"]}
    assert sorted(names[a["category_id"]] for a in train["annotations"]) == ["cat", "cat", "dog"]


def test_mask_png_bad_inputs(tmp_path, cli):
    src = _mask_src(tmp_path / "src")
    write_label_map(src / "masks" / "val" / "b.png", np.zeros((H + 1, W), np.int64))
    assert_user_error(convert(cli, src, "mask-png", tmp_path / "o"), "b.png", "64x49")
    write_image(src / "masks" / "val" / "b.png")
    assert_user_error(convert(cli, src, "mask-png", tmp_path / "o"), "b.png", "RGB")
    (src / "masks" / "val" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert_user_error(convert(cli, src, "mask-png", tmp_path / "o"), "b.png", "corrupt")
    (tmp_path / "map.json").write_text('{"1": "cat", "x": "dog"}')
    result = convert(cli, src, "mask-png", tmp_path / "o", "--class-map", tmp_path / "map.json")
    assert_user_error(result, "map.json")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    assert_user_error(convert(cli, tmp_path / "empty", "mask-png", tmp_path / "o"), "images")
    assert not (tmp_path / "o").exists()
