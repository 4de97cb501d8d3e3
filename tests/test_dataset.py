import logging

import numpy as np
import pytest
import torch
from PIL import Image

from instaseg.data.coco import CocoData
from instaseg.data.dataset import InstanceDataset, collate_fn
from instaseg.data.masks import mask_to_rle
from instaseg.data.pipeline import build_transforms
from instaseg.errors import UserError

CATEGORIES = [{"id": 7, "name": "cat"}, {"id": 3, "name": "box"}]  # ids out of order on purpose


def _rect_ann(ann_id, image_id, cat, x, y, w, h, **extra):
    poly = [x, y, x + w, y, x + w, y + h, x, y + h]
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h], "area": w * h,
            "segmentation": [poly], "iscrowd": 0, **extra}  # fmt: skip


def _write_images(root, sizes):
    root.mkdir(parents=True, exist_ok=True)
    images = []
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes, start=1):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / f"im{i}.png")
        images.append({"id": i, "file_name": f"im{i}.png", "height": h, "width": w})
    return images


@pytest.fixture
def small_data(tmp_path):
    images = _write_images(tmp_path / "images", [(48, 64), (40, 40), (32, 48)])
    anns = [
        _rect_ann(1, 1, 7, 4, 6, 20, 10),
        _rect_ann(2, 1, 3, 30, 20, 16, 20),
        _rect_ann(3, 1, 3, 0, 0, 10, 10, iscrowd=1),
        _rect_ann(4, 2, 7, 5, 5, 0.5, 10),  # degenerate: half a pixel wide
        _rect_ann(5, 2, 99, 5, 5, 10, 10),  # unknown category
        {"id": 6, "image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5], "segmentation": [], "iscrowd": 0},
    ]
    rle = mask_to_rle(np.pad(np.ones((8, 8), np.uint8), ((10, 14), (20, 20))))  # 32x48 image, RLE mask
    anns.append({"id": 7, "image_id": 3, "category_id": 7, "segmentation": rle, "iscrowd": 0})
    wrong_size = mask_to_rle(np.ones((10, 10), np.uint8))
    anns.append({"id": 8, "image_id": 3, "category_id": 7, "segmentation": wrong_size, "iscrowd": 0})
    return CocoData(images=images, annotations=anns, categories=CATEGORIES, image_root=tmp_path / "images")


def test_item_types_and_shapes(small_data):
    ds = InstanceDataset(small_data, train=True)
    assert len(ds) == 3
    image, target = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, 48, 64)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (2, 4)
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [2, 1]  # id 7 -> 2, id 3 -> 1
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (2, 48, 64)
    assert target["image_id"] == 1 and target["orig_size"] == (48, 64)
    assert target["boxes"][0].tolist() == [4, 6, 24, 16]
    assert int(target["masks"][0].sum()) == 200  # the 20x10 rectangle's pixels
    assert type(image) is torch.Tensor and type(target["boxes"]) is torch.Tensor


def test_rle_annotation_without_bbox(small_data):
    _, target = InstanceDataset(small_data)[2]
    assert target["boxes"].tolist() == [[20, 10, 28, 18]]
    assert int(target["masks"].sum()) == 64


def test_skips_are_counted_and_warned_once(small_data, caplog):
    with caplog.at_level(logging.WARNING):
        ds = InstanceDataset(small_data, train=True)
    expected = {"crowd": 1, "degenerate": 1, "unknown category": 1, "empty mask": 1, "mask size differs from image": 1}
    assert dict(ds.skipped) == expected
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 5 annotations" in warnings[0].getMessage()
    assert "1 crowd" in warnings[0].getMessage()


def test_image_without_instances_has_empty_targets(small_data):
    ds = InstanceDataset(small_data, transforms=build_transforms({"min_size": 32, "max_size": 64}, {}, train=True))
    image, target = ds[1]  # all annotations of image 2 are unusable
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["masks"].shape == (0, *image.shape[-2:])


def test_class_names_and_label_mapping(small_data):
    ds = InstanceDataset(small_data)
    assert ds.class_names == ["box", "cat"] and ds.category_ids == [3, 7]
    assert ds.label_to_category_id(1) == 3 and ds.label_to_category_id(2) == 7
    with pytest.raises(ValueError):
        ds.label_to_category_id(0)


def test_collate_keeps_lists(small_data):
    ds = InstanceDataset(small_data)
    images, targets = collate_fn([ds[0], ds[2]])
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == 2
    assert images[1].shape == (3, 32, 48) and targets[1]["image_id"] == 3
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_fn)
    images, targets = next(iter(loader))
    assert [t["image_id"] for t in targets] == [1, 2, 3]


def test_size_mismatch_with_record_is_a_user_error(small_data):
    small_data.images[0]["height"] = 99
    with pytest.raises(UserError, match="record says"):
        InstanceDataset(small_data)[0]


def test_missing_image_is_a_user_error(small_data):
    small_data.images[0]["file_name"] = "gone.png"
    with pytest.raises(UserError, match="not found"):
        InstanceDataset(small_data)[0]


def test_image_with_300_instances(tmp_path):
    h, w = 120, 128
    images = _write_images(tmp_path / "images", [(h, w)])
    anns = []
    for i in range(300):  # 20 x 15 grid of 6x6 cells, like a crowded cell image
        x, y = (i % 20) * 6 + 2, (i // 20) * 8 + 1
        anns.append(_rect_ann(i + 1, 1, 3, x, y, 5, 6))
    data = CocoData(images=images, annotations=anns, categories=CATEGORIES, image_root=tmp_path / "images")
    tf = build_transforms({"min_size": 64, "max_size": 64}, {"hflip": True}, train=True)
    image, target = InstanceDataset(data, transforms=tf)[0]
    assert image.shape == (3, 60, 64)
    n = len(target["labels"])
    assert n > 250 and target["masks"].shape == (n, 60, 64) and target["masks"].dtype == torch.uint8
    assert target["boxes"].shape == (n, 4)


def test_synthetic_dataset_through_a_loader(tmp_path):
    from instaseg.data.coco import load_dataset
    from instaseg.data.synthetic import generate_synthetic

    splits = load_dataset(generate_synthetic(tmp_path / "shapes", num_images=8, img_size=64, seed=0))
    cfg = {"hflip": True, "scale_jitter": [0.8, 1.25], "photometric": True, "copy_paste": True}
    ds = InstanceDataset(splits["train"], build_transforms({"min_size": 48, "max_size": 48}, cfg, train=True))
    assert not ds.skipped and ds.class_names == splits["train"].class_names
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_fn, num_workers=1)
    seen = 0
    for images, targets in loader:
        for image, target in zip(images, targets, strict=True):
            assert image.shape == (3, 48, 48) and image.dtype == torch.float32
            n = len(target["labels"])
            assert target["masks"].shape == (n, 48, 48) and target["boxes"].shape == (n, 4)
            assert ((target["labels"] >= 1) & (target["labels"] <= 5)).all()
            assert (target["boxes"][:, 2:] > target["boxes"][:, :2]).all()
            seen += 1
    assert seen == len(ds) == 6


def test_odd_length_polygon_is_used_like_pycocotools(small_data):
    odd = [4, 4, 20, 4, 20, 20, 7]  # a triangle plus a stray value, which pycocotools ignores
    small_data.annotations = [{"id": 1, "image_id": 1, "category_id": 3, "segmentation": [odd], "iscrowd": 0}]
    ds = InstanceDataset(small_data)
    _, target = ds[0]
    assert not ds.skipped and target["labels"].tolist() == [1] and target["masks"].sum() > 100


def test_real_coco_sample(tiny_coco):
    from instaseg.data.coco import load_dataset
    from instaseg.data.transforms import ResizeToRecipe, boxes_from_masks, resize_scale

    data = load_dataset(tiny_coco)["train"]
    crowd = sum(1 for a in data.annotations if a.get("iscrowd"))
    original, resized = InstanceDataset(data), InstanceDataset(data, ResizeToRecipe(160, 256))
    assert original.skipped["crowd"] == crowd > 0
    for i in range(6):
        image0, target0 = original[i]
        image, target = resized[i]
        assert resize_scale(*image.shape[-2:], 160, 256) == 1.0  # at the recipe size
        # boxes follow the pixels: each axis scales by the ratio of the rounded output size to the input size
        (h0, w0), (h, w) = image0.shape[-2:], image.shape[-2:]
        scale = torch.tensor([w / w0, h / h0, w / w0, h / h0])
        assert torch.allclose(target["boxes"], target0["boxes"] * scale, atol=1e-3)
        assert torch.equal(target["labels"], target0["labels"])
        visible = target["masks"].flatten(1).any(dim=1).bool()
        # nearest-neighbour resizing moves a mask edge by under one output pixel, plus one for whole-pixel boxes
        expected = boxes_from_masks(target0["masks"][visible]) * scale
        assert torch.allclose(boxes_from_masks(target["masks"][visible]), expected, atol=2.0)
