import os

import numpy as np
import pytest

from instaseg.data.convert import convert_dataset
from instaseg.errors import UserError
from test_formats_common import H, W, assert_user_error, convert, load_split, tree_hash, write_image, write_label_map


@pytest.fixture
def flat_src(tmp_path):
    """Ten images with one instance each, in a format without splits (label-map PNGs)."""
    src = tmp_path / "src"
    for k in range(10):
        write_image(src / "images" / f"img{k}.png", seed=k)
        lm = np.zeros((H, W), np.uint8)
        lm[k : k + 10, 5:20] = 1
        write_label_map(src / "masks" / f"img{k}.png", lm)
    return src


def _names(out, split):
    return sorted(im["file_name"] for im in load_split(out, split)["images"])


def test_val_fraction_is_deterministic(flat_src, tmp_path, cli):
    for name in ("a", "b"):
        code, _, err = convert(cli, flat_src, "mask-png", tmp_path / name, "--val-fraction", "0.3")
        assert code == 0, err
    assert _names(tmp_path / "a", "val") == _names(tmp_path / "b", "val") and len(_names(tmp_path / "a", "val")) == 3
    assert sorted(_names(tmp_path / "a", "train") + _names(tmp_path / "a", "val")) == [f"img{k}.png" for k in range(10)]
    for split in ("train", "val"):
        coco = load_split(tmp_path / "a", split)
        assert {a["image_id"] for a in coco["annotations"]} == {im["id"] for im in coco["images"]}


def test_val_fraction_keeps_source_splits(tmp_path, cli):
    src = tmp_path / "src"
    for split in ("train", "val"):
        write_image(src / "images" / split / "a.png")
        write_label_map(src / "masks" / split / "a.png", np.ones((H, W), np.uint8))
    assert convert(cli, src, "mask-png", tmp_path / "o", "--val-fraction", "0.5")[0] == 0
    assert _names(tmp_path / "o", "val") == ["val/a.png"] and _names(tmp_path / "o", "train") == ["train/a.png"]


def test_link_images(flat_src, tmp_path, cli):
    before = tree_hash(flat_src)
    assert convert(cli, flat_src, "mask-png", tmp_path / "o", "--link")[0] == 0
    linked = tmp_path / "o" / "images" / "img3.png"
    assert linked.is_symlink() and os.path.samefile(linked, flat_src / "images" / "img3.png")
    assert tree_hash(flat_src) == before


def test_coco_to_coco_copies(flat_src, tmp_path, cli):
    assert convert(cli, flat_src, "mask-png", tmp_path / "a")[0] == 0
    assert convert(cli, tmp_path / "a", "coco", tmp_path / "b")[0] == 0
    assert load_split(tmp_path / "a") == load_split(tmp_path / "b")
    assert (tmp_path / "b" / "images" / "img0.png").read_bytes() == (flat_src / "images" / "img0.png").read_bytes()


def test_coco_escaping_image_path_is_refused(flat_src, tmp_path, cli):
    assert convert(cli, flat_src, "mask-png", tmp_path / "a")[0] == 0
    ann = tmp_path / "a" / "annotations" / "instances_train.json"
    ann.write_text(ann.read_text().replace('"img0.png"', '"../../src/images/img0.png"'))
    before = tree_hash(tmp_path / "a")
    assert_user_error(
        cli("data", "convert", tmp_path / "a", "--from", "coco", "--to", "yolo", "--out", tmp_path / "y"), "escapes"
    )
    assert tree_hash(tmp_path / "a") == before


@pytest.mark.parametrize(
    "extra, names",
    [
        (["--from", "bogus"], ["bogus"]),
        (["--from", "mask-png", "--val-fraction", "1.5"], ["1.5"]),
        (["--from", "yolo", "--class-map", "m.json"], ["class-map"]),
        (["--from", "cityscapes", "--labels", "l.txt"], ["labels"]),
    ],
)
def test_bad_options(extra, names, flat_src, tmp_path, cli):
    assert_user_error(cli("data", "convert", flat_src, "--out", tmp_path / "o", *extra), *names)
    assert not (tmp_path / "o").exists()


def test_output_folder_rules(flat_src, tmp_path, cli):
    before = tree_hash(flat_src)
    assert_user_error(convert(cli, flat_src, "mask-png", flat_src / "out"), "inside")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert_user_error(convert(cli, flat_src, "mask-png", tmp_path / "full"), "not empty")
    assert_user_error(convert(cli, tmp_path / "nope", "voc", tmp_path / "o"), "nope")
    assert tree_hash(flat_src) == before


@pytest.mark.parametrize("fmt", ["labelme", "yolo", "voc", "cityscapes", "mask-png", "coco"])
def test_empty_folder_each_format(fmt, tmp_path, cli):
    (tmp_path / "empty").mkdir()
    assert_user_error(convert(cli, tmp_path / "empty", fmt, tmp_path / "o"), "empty")


def test_api_unknown_formats(flat_src, tmp_path):
    with pytest.raises(UserError, match="unknown format"):
        convert_dataset(flat_src, "bogus", tmp_path / "o")
    with pytest.raises(UserError, match="unknown output format"):
        convert_dataset(flat_src, "mask-png", tmp_path / "o", dst_format="voc")
