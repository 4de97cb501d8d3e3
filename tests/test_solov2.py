"""SOLOv2: what is particular to it. Level and grid-cell assignment, its losses, Matrix NMS, boxes read from masks,
the published R50-FPN size, and an exported graph that stays valid with nothing detected.

Build, training, prediction, export parity and benchmark are the conformance suite's (tests/test_conformance.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from instaseg.models.common.losses import dice_loss
from instaseg.models.common.masks import mask_centers
from instaseg.models.factory import build_architecture, build_model
from instaseg.models.recipes import apply_overrides, load_recipe
from instaseg.models.solov2.assigner import assign, center_region, mask_targets
from instaseg.models.solov2.decode import mask_boxes, matrix_nms, point_nms
from instaseg.models.solov2.losses import DICE_EPS, focal_loss

pytestmark = pytest.mark.usefixtures("one_thread")
GRIDS = [40, 36, 24, 16, 12]
RANGES = [[1, 96], [48, 192], [96, 384], [192, 768], [384, 2048]]


def _rect_masks(boxes: list[list[int]], size: tuple[int, int]) -> torch.Tensor:
    masks = torch.zeros(len(boxes), *size, dtype=torch.uint8)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = 1
    return masks


def _cells_of(gt_index: torch.Tensor, level: int, who: int) -> set[tuple[int, int]]:
    start = sum(s * s for s in GRIDS[:level])
    grid = GRIDS[level]
    flat = (gt_index[start : start + grid * grid] == who).nonzero().squeeze(1).tolist()
    return {(i // grid, i % grid) for i in flat}


def test_objects_go_to_the_levels_whose_scale_range_holds_them():
    size = (800, 800)
    boxes = [[100, 100, 140, 140], [300, 300, 420, 420], [0, 0, 700, 700]]  # scales 40, 120, 700
    masks = _rect_masks(boxes, size)
    asg = assign(torch.tensor(boxes, dtype=torch.float32), torch.tensor([0, 1, 2]), masks, GRIDS, RANGES, 0.2)
    levels_of = [{lvl for lvl in range(5) if _cells_of(asg.gt_index, lvl, who)} for who in range(3)]
    assert levels_of == [{0}, {1, 2}, {3, 4}]  # overlapping ranges: 120 in (48, 192) and (96, 384)
    assert set(asg.labels[asg.gt_index == 1].tolist()) == {1}
    assert (asg.labels[asg.gt_index < 0] == -1).all()


def test_cells_are_the_centre_region_with_sigma_0_2_capped_to_3x3():
    size = (800, 800)
    # 40 px box centred at (125, 125): sigma 0.2 -> half extent 4 px, inside one 20 px cell of the 40-grid
    box = [105, 105, 145, 145]
    small = assign(torch.tensor([box], dtype=torch.float32), torch.tensor([0]), _rect_masks([box], size), GRIDS,
                   RANGES, 0.2)  # fmt: skip
    assert _cells_of(small.gt_index, 0, 0) == {(6, 6)}
    # a 90 px object: half extent 9 px; about x = 150 it stays in column 7 (141..159 px), about y = 160 (a cell
    # edge) it spans rows 7 and 8
    boxes = torch.tensor([[105.0, 115, 195, 205]])
    region = center_region(torch.tensor([[150.0, 160.0]]), boxes, 40, size, 0.2)
    assert [int(v) for v in region] == [7, 8, 7, 7]
    # a huge sigma would cover many cells: the region stays within one cell of the centre cell
    region = center_region(torch.tensor([[150.0, 160.0]]), boxes, 40, size, 1.0)
    assert [int(v) for v in region] == [7, 9, 6, 8]


def test_a_cell_two_objects_claim_takes_the_later_label_and_trains_on_both_masks():
    size = (320, 320)
    boxes = [[100, 100, 180, 180], [125, 125, 155, 155]]  # same centre, scales 80 and 30
    masks = _rect_masks(boxes, size)
    asg = assign(torch.tensor(boxes, dtype=torch.float32), torch.tensor([0, 1]), masks, [8] * 5, [[1, 100]] * 5, 1.0)
    owners = asg.gt_index[:64].reshape(8, 8)  # level 0: 40 px cells, both objects centred in cell (3, 3)
    assert owners[3, 3] == 1 and (owners[2:5, 2:5] == 0).sum() == 8 and (owners >= 0).sum() == 9
    level0 = asg.pairs[asg.pairs[:, 0] < 64].tolist()
    assert [3 * 8 + 3, 0] in level0 and [3 * 8 + 3, 1] in level0 and len(level0) == 10  # 9 cells, 10 masks


def test_centre_of_mass_and_mask_targets():
    masks = _rect_masks([[4, 8, 12, 16]], (32, 32))
    assert mask_centers(masks).tolist() == [[7.5, 11.5]]  # pixel indices 4..11 and 8..15, as MMDetection counts
    half = torch.zeros(1, 8, 8, dtype=torch.uint8)
    half[0, :, :2] = 1  # half of each stride-4 cell in the first column
    assert mask_targets(half, 4, soft=True)[0, :, 0].tolist() == [0.5, 0.5]
    assert mask_targets(half, 4, soft=False)[0, :, 0].tolist() == [1.0, 1.0]  # 2 of the central 2 x 2: foreground
    quarter = torch.zeros(1, 8, 8, dtype=torch.uint8)
    quarter[0, 1, 1] = quarter[0, 6, 6] = quarter[0, 5, 5] = 1  # 1 then 2 of the central pixels (1..2, 5..6)
    assert mask_targets(quarter, 4, soft=False)[0].tolist() == [[0.0, 0.0], [0.0, 1.0]]


def test_focal_and_dice_losses_reward_the_right_answer():
    labels = torch.tensor([1, -1, 0])
    right = torch.tensor([[-4.0, 4.0], [-4.0, -4.0], [4.0, -4.0]])
    assert focal_loss(right, labels) < focal_loss(-right, labels) / 100
    # focal weighting: a confident correct background cell costs far less than plain BCE says
    bce = torch.nn.functional.binary_cross_entropy_with_logits(right[1], torch.zeros(2), reduction="sum")
    p = torch.sigmoid(torch.tensor(-4.0))
    torch.testing.assert_close(focal_loss(right[1:2], labels[1:2]), (1 - 0.25) * p**2 * bce)
    target = torch.zeros(1, 16, 16)
    target[0, 4:12, 4:12] = 1
    exact, shifted = (target * 20 - 10), (torch.roll(target, 4, dims=2) * 20 - 10)
    assert dice_loss(exact, target, DICE_EPS).item() < 1e-3 < dice_loss(shifted, target, DICE_EPS).item()
    assert dice_loss(torch.full((1, 16, 16), -10.0), target, DICE_EPS).item() > 0.99


def _reference_matrix_nms(masks, labels, scores, sigma):
    """SOLOv2's Matrix NMS written pair by pair (masks sorted by descending score)."""
    n = len(scores)
    iou = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            if labels[i] == labels[j]:
                inter = float((masks[i] * masks[j]).sum())
                iou[i, j] = inter / float(masks[i].sum() + masks[j].sum() - inter)
    compensate = [max([iou[k, i] for k in range(i)], default=0.0) for i in range(n)]
    out = []
    for j in range(n):
        decays = [math.exp(-sigma * iou[i, j] ** 2) / math.exp(-sigma * compensate[i] ** 2) for i in range(j)]
        out.append(scores[j] * min(decays, default=1.0))
    return out


def test_matrix_nms_equals_the_pairwise_definition():
    torch.manual_seed(0)
    masks = (torch.rand(7, 10, 10) > 0.4).float()
    masks[3] = masks[0]  # a duplicate
    labels = torch.tensor([0, 1, 0, 0, 1, 0, 1])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.2])
    got = matrix_nms(masks.flatten(1), labels, scores, "gaussian", 2.0)
    want = _reference_matrix_nms(masks.numpy(), labels.tolist(), scores.tolist(), 2.0)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32))


def test_matrix_nms_decays_overlapping_masks_of_one_class_only():
    square = torch.zeros(3, 10, 10)
    square[:, 2:8, 2:8] = 1
    square[1, 2:8, 7] = 0  # nearly the same mask (IoU 30/36): decayed if of the same class
    scores = torch.tensor([0.9, 0.8, 0.7])
    same = matrix_nms(square.flatten(1), torch.tensor([0, 0, 1]), scores, "gaussian", 2.0)
    assert same[0] == 0.9 and same[1] == pytest.approx(0.8 * math.exp(-2.0 * (30 / 36) ** 2))
    assert same[2] == pytest.approx(0.7)  # the third is another class: untouched though it equals the first
    linear = matrix_nms(square.flatten(1), torch.tensor([0, 0, 0]), scores, "linear")
    assert linear[1] == pytest.approx(0.8 * (1 - 30 / 36)) and linear[2] == pytest.approx(0.0, abs=1e-6)
    assert matrix_nms(torch.zeros(0, 100), torch.zeros(0, dtype=torch.long), torch.zeros(0)).shape == (0,)


def test_point_nms_keeps_local_maxima():
    probs = torch.tensor([[[[0.1, 0.9, 0.2], [0.3, 0.4, 0.8], [0.1, 0.2, 0.3]]]])
    kept = point_nms(probs)[0, 0]  # a cell survives if nothing in its 2 x 2 up-left window is higher
    assert {(i, j): round(float(kept[i, j]), 2) for i, j in kept.nonzero().tolist()} == {
        (0, 0): 0.1,
        (0, 1): 0.9,
        (1, 0): 0.3,
    }


@pytest.mark.parametrize("seed", range(4))
def test_boxes_enclose_the_pasted_masks_and_fit_them(seed):
    """The box read from a mask holds every pixel the shared post-processing pastes for it (one pasted over the
    whole image is the reference), and no more than a pixel of margin, at the input size and resized."""
    from instaseg.inference.postprocess import paste_image_mask

    rng = np.random.default_rng(seed)
    stride, (h, w) = 4, (24, 32)
    probs = np.zeros((h, w), dtype=np.float32)
    y0, x0 = rng.integers(0, 10, 2)
    probs[y0 : y0 + rng.integers(3, 12), x0 : x0 + rng.integers(3, 16)] = rng.uniform(0.5, 1.0)
    probs = np.clip(probs + rng.normal(0, 0.15, probs.shape), 0, 1).astype(np.float32)
    box = mask_boxes(torch.from_numpy(probs)[None], stride)[0].numpy()
    for image_size in [(h * stride, w * stride), (67, 101), (250, 301)]:
        ratio = np.array([image_size[1] / (w * stride), image_size[0] / (h * stride)] * 2, dtype=np.float32)
        scaled = np.clip(box, 0, [w * stride, h * stride] * 2) * ratio
        whole = np.array([0, 0, image_size[1], image_size[0]], dtype=np.float32)
        full, _, _ = paste_image_mask(probs, whole, stride, (h * stride, w * stride), image_size)
        crop, cx, cy = paste_image_mask(probs, scaled, stride, (h * stride, w * stride), image_size)
        assert crop.sum() == full.sum() > 0  # nothing of the mask is cut off by its box
        ys, xs = np.nonzero(full)  # and the box fits the pasted mask to a pixel
        assert abs(xs.min() - scaled[0]) <= 1 and abs(xs.max() + 1 - scaled[2]) <= 1, (box, image_size)
        assert abs(ys.min() - scaled[1]) <= 1 and abs(ys.max() + 1 - scaled[3]) <= 1, (box, image_size)


def _published_r50_params(num_classes: int) -> int:
    """mmdetection's solov2_r50_fpn_1x_coco, counted by hand from its config: ResNet-50 without fc, FPN
    (1x1 laterals, 3x3 outputs, biases), towers of 4 conv-GN (no conv bias), 3x3 predictors, mask feature head."""
    resnet50 = 23_508_032
    fpn = sum(c * 256 + 256 for c in (256, 512, 1024, 2048)) + 4 * (9 * 256 * 256 + 256)
    tower = 3 * (9 * 512 * 512 + 2 * 512)
    kernel_tower, cls_tower = 9 * 258 * 512 + 2 * 512 + tower, 9 * 256 * 512 + 2 * 512 + tower
    predictors = (9 * 512 * 256 + 256) + (9 * 512 * num_classes + num_classes)
    conv = 9 * 256 * 128 + 2 * 128  # conv-GN at the mask feature head's inputs; 9*128*128 + 256 after them
    mask_feat = conv + conv + (conv + 9 * 128 * 128 + 256) + (conv + 2 * 9 * 128 + 2 * (9 * 128 * 128 + 256))
    mask_feat += 128 * 256 + 2 * 256
    return resnet50 + fpn + kernel_tower + cls_tower + predictors + mask_feat


def test_r50_fpn_has_the_published_structure_and_size():
    with torch.device("meta"):
        model = build_architecture(load_recipe("solov2_r50_fpn"), 80)
    params = sum(p.numel() for p in model.parameters())
    # frozen BatchNorm keeps its affine weights as buffers; mmdetection counts them as parameters
    frozen = sum(b.numel() for n, b in model.named_buffers() if n.endswith((".weight", ".bias")))
    assert params + frozen == _published_r50_params(80)
    assert 46.0e6 < params + frozen < 47.0e6  # "~46 M" as mmdetection's model reports
    assert [m.shape[-1] for m in model.head(list(_fake_pyramid().values()))[0]] == GRIDS


def _fake_pyramid() -> dict[str, torch.Tensor]:
    sizes = [200, 100, 50, 25, 13]
    return {str(i): torch.zeros(1, 256, s, s, device="meta") for i, s in enumerate(sizes)}


def test_no_detections_stay_empty_in_every_backend(tmp_path):
    """A random-init model scores every cell at the 0.01 prior, below the candidate cut: nothing is detected, and
    the exported graphs return empty outputs of the right shapes rather than failing."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from instaseg.export import export_model
    from instaseg.inference.predictor import create_model
    from instaseg.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    recipe = apply_overrides(load_recipe("solov2_fast"), ["input.min_size=64", "input.max_size=64"])
    model = build_model(recipe, 2, weights="none").eval()
    ckpt = save_checkpoint(tmp_path / "m.pt", model, recipe, ["a", "b"], [1, 2])
    picture = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
    exported = [export_model(ckpt, format=f, out=tmp_path / f, dynamic=True)["path"] for f in ("onnx", "openvino")]
    paths = [ckpt, *exported]
    for path in paths:
        result = next(iter(create_model(path, threshold=0.0).predict(picture)))
        assert len(result.scores) == 0 and len(result.rles) == 0, path


def test_a_batch_of_mixed_sizes_gives_each_image_its_own_result():
    """The grids divide the padded input: an image padded beyond its own multiple of 32 would see other grids.
    In a mixed batch each image keeps the result it gets alone (and from the exported graph)."""
    from instaseg.inference.preprocess import preprocess

    torch.manual_seed(0)
    recipe = apply_overrides(load_recipe("solov2_fast"), ["input.min_size=64", "input.max_size=128", "eval.max_dets=5"])
    model = build_model(recipe, 2, weights="none").eval()
    model.make_outputs_busy()
    rng = np.random.default_rng(0)
    pictures = [(rng.random(shape) * 255).astype(np.uint8) for shape in ((64, 128, 3), (64, 64, 3))]
    batch, sizes = preprocess(pictures, model.input_spec)
    with torch.no_grad():
        together = model.raw_forward(batch, sizes)
        for picture, joint in zip(pictures, together, strict=True):
            alone_batch, alone_sizes = preprocess([picture], model.input_spec)
            alone = model.raw_forward(alone_batch, alone_sizes)[0]
            assert len(alone.scores) == 5
            torch.testing.assert_close(joint.boxes, alone.boxes)
            torch.testing.assert_close(joint.scores, alone.scores)
            h, w = alone.masks.shape[-2:]
            assert joint.masks.shape[-2:] == (batch.shape[-2] // 4, batch.shape[-1] // 4)
            torch.testing.assert_close(joint.masks[:, :h, :w], alone.masks)
            assert joint.masks[:, h:].abs().sum() == joint.masks[:, :, w:].abs().sum() == 0


def test_eval_masks_cover_the_whole_picture():
    """A 352 x 230 picture resized to 1224 x 800: 200 x 4 x 230 / 800 rows is 229.99999 in floating point, and
    interpolating by that scale made masks one row short of the picture."""
    torch.manual_seed(0)
    sizes = ["input.min_size=800", "input.max_size=1333", "eval.max_dets=3"]
    recipe = apply_overrides(load_recipe("solov2_fast"), sizes)
    model = build_model(recipe, 2, weights="none").eval()
    model.make_outputs_busy()
    with torch.no_grad():
        out = model([torch.rand(3, 230, 352)])[0]
    assert len(out["scores"]) == 3 and out["masks"].shape[-2:] == (230, 352)


@pytest.mark.parametrize("resample", ["direct", "two_step"])
def test_the_predictor_resamples_masks_as_the_eager_model(resample):
    """``mask_resample: two_step`` (MMDetection's x4, cut, resize) in the eager output and the shared
    post-processing alike, on a picture resized by a non-integer factor; such masks are not cut to their boxes."""
    from pycocotools import mask as mask_utils

    from instaseg.inference.backends.torch import TorchBackend
    from instaseg.inference.predictor import Predictor

    torch.manual_seed(0)
    overrides = ["input.min_size=64", "input.max_size=128", "eval.max_dets=5", f"model.mask_resample={resample}"]
    model = build_model(apply_overrides(load_recipe("solov2_fast"), overrides), 2, weights="none").eval()
    model.make_outputs_busy()
    assert model.mask_resample == resample and model.mask_box_crop == (resample == "direct")
    picture = (np.random.default_rng(0).random((77, 101, 3)) * 255).astype(np.uint8)
    with torch.no_grad():
        eager = model([torch.from_numpy(picture).permute(2, 0, 1).float() / 255])[0]
    result = next(iter(Predictor(TorchBackend(model), ["a", "b"], threshold=0.0).predict(picture)))
    assert len(result.scores) == len(eager["scores"]) == 5
    decoded = np.stack([mask_utils.decode({**r, "counts": r["counts"].encode()}) for r in result.rles])
    want = (eager["masks"][:, 0] > 0.5).numpy()
    assert want.sum() > 0
    assert (decoded != want).sum() <= 1e-4 * want.size  # the same resampling, up to float rounding
