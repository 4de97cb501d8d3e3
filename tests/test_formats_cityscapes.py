import numpy as np

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


def _instance_ids():
    ids = np.full((H, W), 7, np.int64)  # road (stuff)
    ids[5:20, 5:25] = 26001  # car 1
    ids[10:15, 10:15] = 7  # a hole in it
    ids[5:20, 30:40] = 26002  # car 2
    ids[25:40, 5:15] = 24  # a group of people, not separated: crowd
    ids[25:40, 20:30] = 29001  # caravan: not an evaluated class
    ids[25:40, 40:50] = 33001  # bicycle
    return ids


def _cityscapes(root):
    for split, city, stem in [("train", "aachen", "aachen_000000_000019"), ("val", "lindau", "lindau_000001_000019")]:
        write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
        write_label_map(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png", _instance_ids())
    return root


def test_cityscapes_to_coco(tmp_path, cli):
    src = _cityscapes(tmp_path / "cityscapes")
    before = tree_hash(src)
    code, _, err = convert(cli, src, "cityscapes", tmp_path / "out")
    assert code == 0, err
    assert tree_hash(src) == before
    val = load_split(tmp_path / "out", "val")
    assert len(load_split(tmp_path / "out", "train")["images"]) == 1 and len(val["images"]) == 1
    cats = {c["id"]: c["name"] for c in val["categories"]}
    assert cats == {
        24: "person",
        25: "rider",
        26: "car",
        27: "truck",
        28: "bus",
        31: "train",
        32: "motorcycle",
        33: "bicycle",
    }
    image = val["images"][0]
    assert image["file_name"] == "val/lindau/lindau_000001_000019_leftImg8bit.png"
    assert (tmp_path / "out" / "images" / image["file_name"]).is_file()
    ids = _instance_ids()
    kinds = sorted((a["category_id"], a["iscrowd"]) for a in val["annotations"])
    assert kinds == [(24, 1), (26, 0), (26, 0), (33, 0)]
    for ann in val["annotations"]:
        mask = decoded(ann, image)
        value = {(24, 1): 24, (33, 0): 33001}.get((ann["category_id"], ann["iscrowd"]))
        if value is None:
            value = ids[mask][0]
        assert np.array_equal(mask, ids == value)


def test_cityscapes_missing_image_and_empty(tmp_path, cli):
    src = _cityscapes(tmp_path / "cityscapes")
    (src / "leftImg8bit" / "val" / "lindau" / "lindau_000001_000019_leftImg8bit.png").unlink()
    result = convert(cli, src, "cityscapes", tmp_path / "o")
    assert_user_error(result, "lindau_000001_000019_gtFine_instanceIds.png", "leftImg8bit")
    (tmp_path / "empty" / "gtFine").mkdir(parents=True)
    assert_user_error(convert(cli, tmp_path / "empty", "cityscapes", tmp_path / "o"), "empty")
