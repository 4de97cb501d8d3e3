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

VOID = 255


def _voc_masks():
    """Two instances: a cat (class 8) with a hole and a void border, and a person (class 15)."""
    objects = np.zeros((H, W), np.uint8)
    classes = np.zeros((H, W), np.uint8)
    objects[5:25, 5:30], classes[5:25, 5:30] = 1, 8
    objects[12:16, 12:20], classes[12:16, 12:20] = 0, 0  # hole
    objects[30:45, 40:60], classes[30:45, 40:60] = 2, 15
    for arr in (objects, classes):
        arr[4, 5:30] = VOID
    return objects, classes


@pytest.fixture
def voc_src(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    objects, classes = _voc_masks()
    for k, stem in enumerate(["2007_000001", "2007_000002", "2007_000003"]):
        write_image(root / "JPEGImages" / f"{stem}.jpg", seed=k)
        write_label_map(root / "SegmentationObject" / f"{stem}.png", objects, palette=True)
        write_label_map(root / "SegmentationClass" / f"{stem}.png", classes, palette=True)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000001\n2007_000002\n")
    (sets / "val.txt").write_text("2007_000003\n")
    return tmp_path / "VOCdevkit", root


def test_voc_to_coco(voc_src, tmp_path, cli):
    src, root = voc_src
    before = tree_hash(src)
    code, _, err = convert(cli, src, "voc", tmp_path / "out")
    assert code == 0, err
    assert tree_hash(src) == before
    train, val = load_split(tmp_path / "out", "train"), load_split(tmp_path / "out", "val")
    assert len(train["images"]) == 2 and len(val["images"]) == 1
    assert len(train["categories"]) == 20 and train["categories"][7]["name"] == "cat"
    objects, _ = _voc_masks()
    image = val["images"][0]
    assert image["file_name"] == "2007_000003.jpg" and (tmp_path / "out" / "images" / image["file_name"]).is_file()
    anns = sorted(val["annotations"], key=lambda a: a["category_id"])
    assert [a["category_id"] for a in anns] == [8, 15]
    for ann, value in zip(anns, (1, 2), strict=True):
        assert isinstance(ann["segmentation"], dict)  # RLE: exact, holes kept
        assert np.array_equal(decoded(ann, image), objects == value)
    assert anns[0]["area"] == (objects == 1).sum() and anns[0]["bbox"] == [5, 5, 25, 20]


def test_voc_without_split_lists_is_train(voc_src, tmp_path, cli):
    src, root = voc_src
    for path in (root / "ImageSets" / "Segmentation").iterdir():
        path.unlink()
    assert convert(cli, root, "voc", tmp_path / "out")[0] == 0
    assert len(load_split(tmp_path / "out")["images"]) == 3
    assert not (tmp_path / "out" / "annotations" / "instances_val.json").exists()


def test_voc_bad_inputs(voc_src, tmp_path, cli):
    src, root = voc_src
    bad_classes = _voc_masks()[1]
    bad_classes[bad_classes == 15] = 40
    write_label_map(root / "SegmentationClass" / "2007_000002.png", bad_classes, palette=True)
    assert_user_error(convert(cli, src, "voc", tmp_path / "o"), "2007_000002.png", "40")
    write_image(root / "SegmentationObject" / "2007_000002.png")  # an RGB picture is not a label map
    assert_user_error(convert(cli, src, "voc", tmp_path / "o"), "2007_000002.png", "RGB")
    (root / "JPEGImages" / "2007_000001.jpg").unlink()
    assert_user_error(convert(cli, src, "voc", tmp_path / "o"), "2007_000001.jpg")
    assert not (tmp_path / "o").exists()


def test_voc_empty_folder(tmp_path, cli):
    (tmp_path / "voc" / "SegmentationObject").mkdir(parents=True)
    assert_user_error(convert(cli, tmp_path / "voc", "voc", tmp_path / "o"), "voc")
