import base64
import json

import numpy as np
import pytest
from PIL import Image

from test_formats_common import (
    H,
    W,
    assert_user_error,
    convert,
    decoded,
    load_split,
    tree_hash,
    write_image,
    write_json,
)


def _shape(label, points, shape_type="polygon", group_id=None):
    return {"label": label, "points": points, "shape_type": shape_type, "group_id": group_id, "flags": {}}


def _labelme(image_path, shapes, image_data=None, size=(W, H)):
    return {
        "version": "5.4.1",
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": image_data,
        "imageWidth": size[0],
        "imageHeight": size[1],
    }


@pytest.fixture
def labelme_src(tmp_path):
    """Two annotated images (one embedded only), all shape kinds, a group and an __ignore__ region."""
    src = tmp_path / "src"
    write_image(src / "images" / "a.jpg")
    shapes = [
        _shape("dog", [[5, 5], [30, 5], [30, 20], [5, 20]]),
        _shape("cat", [[35, 10], [50, 30]], "rectangle"),
        _shape("cat", [[20, 30], [26, 30]], "circle"),
        _shape("person", [[2, 30], [10, 30], [10, 40]], group_id=1),  # two parts, one instance
        _shape("person", [[12, 30], [18, 30], [18, 40]], group_id=1),
        _shape("__ignore__", [[40, 40], [60, 40], [60, 46]]),
        _shape("dog", [[1, 1]], "point"),  # no area: skipped
    ]
    write_json(src / "ann" / "a.json", _labelme("../images/a.jpg", shapes))
    buf = write_image(tmp_path / "embedded.png", seed=3).read_bytes()
    embedded = _labelme("missing/b.png", [_shape("dog", [[1, 1], [20, 1], [20, 20]])], base64.b64encode(buf).decode())
    write_json(src / "ann" / "b.json", embedded)
    return src


def test_labelme_to_coco(labelme_src, tmp_path, cli):
    (tmp_path / "labels.txt").write_text("__ignore__\n_background_\nperson\ncat\ndog\n")
    before = tree_hash(labelme_src)
    out = tmp_path / "out"
    labels = tmp_path / "labels.txt"
    code, _, err = convert(cli, labelme_src, "labelme", out, "--labels", labels)
    assert code == 0, err
    assert tree_hash(labelme_src) == before
    coco = load_split(out)
    assert [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])] == ["person", "cat", "dog"]
    images = {im["file_name"]: im for im in coco["images"]}
    assert set(images) == {"images/a.jpg", "ann/missing/b.png"}
    assert (out / "images" / "ann" / "missing" / "b.png").read_bytes() == (tmp_path / "embedded.png").read_bytes()
    by_image = {name: [a for a in coco["annotations"] if a["image_id"] == im["id"]] for name, im in images.items()}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    anns_a = by_image["images/a.jpg"]
    assert sorted(names[a["category_id"]] for a in anns_a) == ["cat", "cat", "dog", "person"]
    person = next(a for a in anns_a if names[a["category_id"]] == "person")
    assert len(person["segmentation"]) == 2 and person["bbox"] == [2, 30, 16, 10]
    rect = next(a for a in anns_a if a["bbox"] == [35, 10, 15, 20])
    assert abs(rect["area"] - 15 * 20) <= 20
    circle = next(a for a in anns_a if names[a["category_id"]] == "cat" and a is not rect)
    assert abs(circle["area"] - np.pi * 36) < 12
    ignored = np.zeros((H, W), bool)
    ignored[41:46, 45:60] = True
    for ann in anns_a:
        assert not (decoded(ann, images["images/a.jpg"]) & ignored).any()
    assert len(by_image["ann/missing/b.png"]) == 1


def test_labelme_classes_sorted_without_labels_file(labelme_src, tmp_path, cli):
    code, _, err = convert(cli, labelme_src, "labelme", tmp_path / "out")
    assert code == 0, err
    assert [c["name"] for c in load_split(tmp_path / "out")["categories"]] == ["cat", "dog", "person"]


def test_labelme_unknown_label_with_labels_file(labelme_src, tmp_path, cli):
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    labels = tmp_path / "labels.txt"
    result = convert(cli, labelme_src, "labelme", tmp_path / "o", "--labels", labels)
    assert_user_error(result, "a.json", "shape 3", "person")


def _single(src, image_name="a.png", **image_kwargs):
    write_image(src / image_name, **image_kwargs)
    with Image.open(src / image_name) as img:
        size = img.size
    write_json(src / "a.json", _labelme(image_name, [_shape("x", [[1, 1], [20, 1], [20, 20]])], size=size))
    return src


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_labelme_accepts_gray_rgba_16bit(mode, tmp_path, cli):
    src = _single(tmp_path / "src", mode=mode)
    code, _, err = convert(cli, src, "labelme", tmp_path / "out")
    assert code == 0, err
    assert load_split(tmp_path / "out")["images"][0]["width"] == W


def test_labelme_exif_rotated_jpeg_is_upright(tmp_path, cli):
    src = tmp_path / "src"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: the upright image is H wide and W high
    write_image(src / "a.jpg", exif=exif)
    write_json(src / "a.json", _labelme("a.jpg", [_shape("x", [[1, 1], [20, 1], [20, 20]])], size=(H, W)))
    code, _, err = convert(cli, src, "labelme", tmp_path / "out")
    assert code == 0, err
    image = load_split(tmp_path / "out")["images"][0]
    assert (image["width"], image["height"]) == (H, W)


def _break_points(doc):
    doc["shapes"][0]["points"] = [["1", 2], [3, 4], [5, 6]]


def _escape(doc):
    doc["imagePath"] = "../../outside.png"


def _bad_size(doc):
    doc["imageWidth"] = 99


@pytest.mark.parametrize(
    "damage, names",
    [(_break_points, ["a.json", "shape 0", "points"]), (_escape, ["a.json", "escapes"]), (_bad_size, ["a.json", "99"])],
)
def test_labelme_bad_fields(damage, names, tmp_path, cli):
    src = _single(tmp_path / "data" / "src")
    write_image(tmp_path / "outside.png")
    doc = json.loads((src / "a.json").read_text())
    damage(doc)
    write_json(src / "a.json", doc)
    before = tree_hash(src)
    assert_user_error(convert(cli, src, "labelme", tmp_path / "out"), *names)
    assert tree_hash(src) == before and not (tmp_path / "out").exists()


def test_labelme_truncated_json(tmp_path, cli):
    src = _single(tmp_path / "src")
    (src / "a.json").write_text((src / "a.json").read_text()[:40])
    assert_user_error(convert(cli, src, "labelme", tmp_path / "out"), "a.json", "json")


@pytest.mark.parametrize("name", ["a.png", "a.jpg"])
def test_labelme_truncated_image(name, tmp_path, cli):
    src = _single(tmp_path / "src", image_name=name)
    data = (src / name).read_bytes()
    (src / name).write_bytes(data[: len(data) // 2])
    before = tree_hash(src)
    assert_user_error(convert(cli, src, "labelme", tmp_path / "out"), name)
    assert tree_hash(src) == before


def test_labelme_empty_folder(tmp_path, cli):
    (tmp_path / "src").mkdir()
    assert_user_error(convert(cli, tmp_path / "src", "labelme", tmp_path / "o"), "src")
    (tmp_path / "src" / "notes.txt").write_text("x")
    assert_user_error(convert(cli, tmp_path / "src", "labelme", tmp_path / "o"), "json")
