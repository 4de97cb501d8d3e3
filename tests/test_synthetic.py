from collections import Counter

import cv2
import numpy as np
import pytest

from instaseg.data.coco import load_dataset
from instaseg.data.masks import segmentation_to_mask
from instaseg.data.synthetic import (
    CLASSES,
    MAX_INSTANCES,
    RADIUS_RANGE,
    SynthStyle,
    generate_synthetic,
    synth_image,
)
from instaseg.errors import UserError
from instaseg.utils.images import read_image


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """100 small images: enough instances for statistics, generated in about a second."""
    out = generate_synthetic(tmp_path_factory.mktemp("shapes") / "data", num_images=100, img_size=96, seed=5)
    return load_dataset(out)


def _instances(data):
    """(category_id, mask, image pixels) of every annotation."""
    by_image = data.annotations_by_image()
    for image in data.images:
        pixels = read_image(data.image_path(image))
        for ann in by_image[image["id"]]:
            yield ann, segmentation_to_mask(ann["segmentation"], image["height"], image["width"]), pixels


def test_layout_and_split(shapes):
    assert set(shapes) == {"train", "val"}
    assert len(shapes["train"].images) == 80 and len(shapes["val"].images) == 20
    assert shapes["train"].class_names == list(CLASSES) == shapes["val"].class_names
    ids = [a["id"] for d in shapes.values() for a in d.annotations]
    assert len(ids) == len(set(ids))
    for data in shapes.values():
        assert all(data.image_path(im).suffix == ".jpg" and data.image_path(im).is_file() for im in data.images)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    paths = [generate_synthetic(tmp_path / name, num_images=6, img_size=64, seed=s) for name, s in [("a", 3), ("b", 3)]]
    other = generate_synthetic(tmp_path / "c", num_images=6, img_size=64, seed=4)
    for split in ("train", "val"):
        rel = f"annotations/instances_{split}.json"
        assert (paths[0] / rel).read_bytes() == (paths[1] / rel).read_bytes()
        assert (paths[0] / rel).read_bytes() != (other / rel).read_bytes()
    for image in sorted((paths[0] / "images").iterdir()):
        assert image.read_bytes() == (paths[1] / "images" / image.name).read_bytes()


def test_instances_per_image_and_classes_balanced(shapes):
    counts, per_image = Counter(), Counter()
    for data in shapes.values():
        for ann in data.annotations:
            counts[ann["category_id"]] += 1
            per_image[ann["image_id"]] += 1
    assert len(per_image) == 100  # every image has instances
    assert min(per_image.values()) >= 1 and max(per_image.values()) <= MAX_INSTANCES
    assert 3 <= np.mean(list(per_image.values())) <= 6
    mean = sum(counts.values()) / len(CLASSES)
    assert set(counts) == set(range(1, len(CLASSES) + 1))
    assert all(0.6 * mean <= n <= 1.4 * mean for n in counts.values()), counts


def test_occlusion_masks_never_overlap_and_match_annotations(shapes):
    data = shapes["train"]
    by_image = data.annotations_by_image()
    for image in data.images[:40]:
        masks = [segmentation_to_mask(a["segmentation"], 96, 96) for a in by_image[image["id"]]]
        assert int(np.sum(masks, axis=0).max()) == 1  # every pixel belongs to at most one instance
        for ann, mask in zip(by_image[image["id"]], masks, strict=True):
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["area"] == mask.sum() and ann["iscrowd"] == 0


def test_objects_are_not_tiny_and_size_does_not_give_away_the_class(shapes):
    anns = [a for d in shapes.values() for a in d.annotations]
    sides = [max(a["bbox"][2:]) for a in anns]
    assert min(sides) >= 0.1 * 96  # no speck survives occlusion or the frame
    areas = np.array([a["area"] for a in anns])
    assert np.median(areas) >= np.pi * (RADIUS_RANGE[0] * 96) ** 2
    medians = [np.median([a["area"] for a in anns if a["category_id"] == c]) for c in range(1, len(CLASSES) + 1)]
    assert max(medians) < 1.3 * min(medians), medians


def test_colour_does_not_give_away_the_class(shapes):
    """A nearest-class-mean classifier on an instance's mean colour is close to chance on held-out instances."""
    feats, labels = [], []
    for data in shapes.values():
        for ann, mask, pixels in _instances(data):
            feats.append(pixels[mask.astype(bool)].mean(axis=0))
            labels.append(ann["category_id"])
    feats, labels = np.array(feats), np.array(labels)
    half = len(labels) // 2
    means = np.stack([feats[:half][labels[:half] == c].mean(axis=0) for c in range(1, len(CLASSES) + 1)])
    pred = np.argmin(((feats[half:, None, :] - means[None]) ** 2).sum(-1), axis=1) + 1
    accuracy = float((pred == labels[half:]).mean())
    assert accuracy < 1.0 / len(CLASSES) + 0.15, accuracy
    # class mean colours differ by no more than sampling noise: a few standard errors of a class mean
    all_means = np.stack([feats[labels == c].mean(axis=0) for c in range(1, len(CLASSES) + 1)])
    standard_error = feats.std(axis=0) / np.sqrt(len(labels) / len(CLASSES))
    assert (np.ptp(all_means, axis=0) < 5 * standard_error).all(), all_means


def test_synth_image_is_deterministic_and_independent_of_other_images():
    a_pixels, a_instances = synth_image(7, 64, seed=1)
    b_pixels, b_instances = synth_image(7, 64, seed=1)
    assert np.array_equal(a_pixels, b_pixels) and len(a_instances) == len(b_instances)
    assert all(ca == cb and np.array_equal(ma, mb) for (ca, ma), (cb, mb) in zip(a_instances, b_instances, strict=True))
    assert not np.array_equal(a_pixels, synth_image(8, 64, seed=1)[0])


def test_refuses_bad_arguments_and_non_empty_output(tmp_path):
    with pytest.raises(UserError):
        generate_synthetic(tmp_path / "x", num_images=1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        generate_synthetic(tmp_path / "full", num_images=4, img_size=64)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_cli_data_synth(cli, tmp_path):
    code, out, _ = cli("data", "synth", "--out", tmp_path / "s", "--images", 5, "--img-size", 48, "--seed", 2)
    assert code == 0 and "wrote" in out
    data = load_dataset(tmp_path / "s")
    assert len(data["train"].images) == 4 and len(data["val"].images) == 1
    assert data["train"].images[0]["width"] == 48 and data["train"].info["seed"] == 2
    code, _, err = cli("data", "synth", "--out", tmp_path / "s", "--images", 5)
    assert code == 2 and "not empty" in err


def test_plain_style_fewer_classes_and_instances(tmp_path):
    style = SynthStyle(num_classes=3, background="plain", max_instances=3)
    data = load_dataset(generate_synthetic(tmp_path / "plain", num_images=30, img_size=64, seed=0, style=style))
    assert data["train"].class_names == ["circle", "triangle", "square"] == data["val"].class_names
    assert data["train"].info["background"] == "plain" and data["train"].info["num_classes"] == 3
    per_image = Counter(a["image_id"] for d in data.values() for a in d.annotations)
    assert {a["category_id"] for d in data.values() for a in d.annotations} == {1, 2, 3}
    assert max(per_image.values()) <= 3
    for image in data["train"].images[:5]:
        pixels = read_image(data["train"].image_path(image))
        background = pixels[~_near_any_shape(data["train"], image)]
        assert background.astype(float).std(axis=0).max() < 12  # flat grey plus pixel noise: no texture or lines


def _near_any_shape(data, image):
    """Pixels within 3 px of an annotated shape (anti-aliased rims and JPEG ringing lie outside the masks)."""
    union = np.zeros((image["height"], image["width"]), dtype=np.uint8)
    for ann in data.annotations_by_image()[image["id"]]:
        union |= segmentation_to_mask(ann["segmentation"], image["height"], image["width"]).astype(np.uint8)
    return cv2.dilate(union, np.ones((7, 7), np.uint8)).astype(bool)


@pytest.mark.parametrize(
    "style",
    [SynthStyle(num_classes=0), SynthStyle(num_classes=6), SynthStyle(background="x"), SynthStyle(max_instances=0)],
)
def test_bad_style_is_a_user_error(tmp_path, style):
    with pytest.raises(UserError):
        generate_synthetic(tmp_path / "x", num_images=4, img_size=64, style=style)
    assert not (tmp_path / "x").exists()


def test_cli_data_synth_style(cli, tmp_path):
    args = ("data", "synth", "--images", 4, "--img-size", 48, "--classes", 2, "--background", "plain")
    code, _, _ = cli(*args, "--out", tmp_path / "s")
    assert code == 0 and load_dataset(tmp_path / "s")["train"].class_names == ["circle", "triangle"]
    code, _, err = cli(*args[:-1], "wavy", "--out", tmp_path / "t")
    assert code == 2 and "background" in err
