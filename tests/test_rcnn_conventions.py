"""The R-CNN conventions that differ between publishers, each a model-section switch: exact anchors (no rounding, level
strides independent of the padding), aligned RoIAlign, adaptive sampling, the RPN's minimum proposal size and the L1
box losses, the mask paste, the rounding of the resized size. torchvision's values stay the defaults (its COCO
weights load by name and must keep their outputs); the recipes of PaddleX's models set PaddleDetection's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import MultiScaleRoIAlign, roi_align

from instaseg.inference.postprocess import paste_mask_exact
from instaseg.models.common.rcnn_ops import CellAnchorGenerator, RoIPooler, paste_masks_exact
from instaseg.models.factory import build_model
from instaseg.models.recipes import apply_overrides, load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")
SIZES, RATIOS = ((32,), (64,)), ((0.5, 1.0, 2.0),) * 2


def test_torchvision_anchors_are_torchvisions():
    images = ImageList(torch.zeros(1, 3, 96, 160), [(90, 150)])
    feats = [torch.zeros(1, 1, 24, 40), torch.zeros(1, 1, 12, 20)]
    ours = CellAnchorGenerator(SIZES, RATIOS)(images, feats)[0]
    assert torch.equal(ours, AnchorGenerator(SIZES, RATIOS)(images, feats)[0])


def test_exact_cell_anchors_are_not_rounded():
    anchors = CellAnchorGenerator(SIZES, RATIOS, exact=True).cell_anchors[0]
    w = 32 / 0.5**0.5  # ratio h/w = 0.5 at area 32^2: 45.25 px wide
    assert torch.allclose(anchors[0], torch.tensor([-w / 2, -w / 4, w / 2, w / 4]))
    assert torch.equal(AnchorGenerator(SIZES, RATIOS).cell_anchors[0][0], torch.tensor([-23.0, -11.0, 23.0, 11.0]))


def test_exact_strides_do_not_depend_on_the_padding():
    """A 800 px side padded to 32: the max-pooled P6 map has 13 cells, torchvision's stride 800 // 13 = 61."""
    images = ImageList(torch.zeros(1, 3, 64, 800), [(64, 800)])
    feats = [torch.zeros(1, 1, 16, 200), torch.zeros(1, 1, 1, 13)]  # strides 4 and 64 (800 / 64 = 12.5 -> 13)
    generators = [CellAnchorGenerator(((32,), (512,)), ((1.0,),) * 2, exact=e) for e in (False, True)]
    p6 = [g(images, feats)[0][-13:] for g in generators]
    assert (p6[0][1] - p6[0][0])[0] == 61 and (p6[1][1] - p6[1][0])[0] == 64
    assert torch.equal(p6[1][:, 0], torch.arange(13) * 64.0 - 256)


def test_unaligned_pooler_is_torchvisions_and_aligned_shifts_half_a_pixel():
    torch.manual_seed(0)
    feats = {"0": torch.rand(1, 4, 32, 32), "1": torch.rand(1, 4, 16, 16)}
    boxes = [torch.tensor([[4.0, 6.0, 30.0, 40.0], [0.0, 0.0, 127.0, 126.0], [1.0, 2.0, 9.0, 8.0]])]
    sizes = [(128, 128)]
    theirs = MultiScaleRoIAlign(["0", "1"], 7, 2)(feats, boxes, sizes)
    assert torch.equal(RoIPooler(["0", "1"], 7, 2)(feats, boxes, sizes), theirs)
    pooler = RoIPooler(["0", "1"], 7, 0, aligned=True)
    aligned = pooler(feats, boxes, sizes)
    rois = torch.cat([torch.zeros(3, 1), boxes[0]], 1)
    levels = pooler.map_levels(boxes).tolist()  # torchvision's level mapping, unchanged
    assert sorted(set(levels)) == [0, 1]
    for i, level in enumerate(levels):
        expected = roi_align(feats[str(level)], rois[i : i + 1], 7, 0.25 / 2**level, 0, aligned=True)
        assert torch.allclose(aligned[i : i + 1], expected)
    assert not torch.allclose(aligned, RoIPooler(["0", "1"], 7, 0)(feats, boxes, sizes))


def _fast(*overrides: str):
    recipe = apply_overrides(load_recipe("maskrcnn_fast"), ["input.min_size=96", "input.max_size=96", *overrides])
    torch.manual_seed(0)
    return build_model(recipe, 2, weights="none")


def test_switches_reach_the_modules():
    model = _fast(
        "model.anchors=exact",
        "model.roi_align_aligned=true",
        "model.roi_sampling_ratio=0",
        "model.rpn_min_size=1.0",
        "model.rpn_box_loss_beta=0.0",
        "model.box_loss_beta=0.0",
    )
    assert model.rpn.anchor_generator.exact and model.rpn.min_size == 1.0 and model.rpn.box_loss_beta == 0.0
    heads = model.roi_heads
    assert heads.box_loss_beta == 0.0
    for pooler in (heads.box_roi_pool, heads.mask_roi_pool):
        assert pooler.aligned and pooler.sampling_ratio == 0
    default = _fast()
    assert not default.rpn.anchor_generator.exact and default.rpn.min_size == 1e-3
    assert default.roi_heads.box_roi_pool.sampling_ratio == 2 and not default.roi_heads.box_roi_pool.aligned


def test_box_losses_with_torchvisions_beta_are_torchvisions():
    """Our training path (sampling, box and mask losses) with beta 1/9 gives what torchvision's RoIHeads gives."""
    model = _fast().train()
    heads = model.roi_heads
    feats = {k: torch.rand(1, 64, 96 // s, 96 // s) for k, s in zip(["0", "1", "2"], (8, 16, 32), strict=True)}
    masks = torch.zeros(1, 96, 96, dtype=torch.uint8)
    masks[0, 20:70, 10:60] = 1
    target = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 70.0]]), "labels": torch.tensor([1]), "masks": masks}]
    proposals = [torch.tensor([[8.0, 18.0, 62.0, 66.0], [0.0, 0.0, 40.0, 40.0], [30.0, 30.0, 90.0, 90.0]])]
    torch.manual_seed(1)
    ours = heads.losses(feats, proposals, [(96, 96)], target)
    torch.manual_seed(1)
    _, theirs = RoIHeads.forward(heads, feats, proposals, [(96, 96)], target)
    assert ours.keys() == theirs.keys() and all(torch.allclose(ours[k], theirs[k]) for k in ours)


def test_beta_zero_is_an_l1_loss():
    model = _fast("model.rpn_box_loss_beta=0.0").train()
    labels = [torch.tensor([1.0, 0.0, 1.0, 0.0])]
    targets = [torch.tensor([[0.3, 0.1, -0.2, 0.5], [0.0] * 4, [1.0, -1.0, 0.5, 0.0], [0.0] * 4])]
    deltas = torch.zeros(4, 4)
    objectness = torch.zeros(4, 1)
    _, box_loss = model.rpn.compute_loss(objectness, deltas, labels, targets)
    assert torch.isclose(box_loss, F.l1_loss(deltas[[0, 2]], targets[0][[0, 2]], reduction="sum") / 4)


PADDLEX_RECIPES = (
    "maskrcnn_r50_c4",
    "maskrcnn_r50_fpn_paddlex",
    "maskrcnn_r50vd_fpn",
    "maskrcnn_r101_fpn",
    "maskrcnn_r101vd_fpn",
    "maskrcnn_x101vd_fpn",
    "cascade_maskrcnn_r50_fpn",
    "cascade_maskrcnn_r50vd_fpn",
)


@pytest.mark.parametrize("name", PADDLEX_RECIPES)
def test_paddlex_recipes_carry_paddledetections_conventions(name):
    m = load_recipe(name)["model"]
    assert (m["anchors"], m["roi_align_aligned"], m["roi_sampling_ratio"]) == ("exact", True, 0)
    assert m["mask_paste"] == "exact" and m["size_rounding"] == "round"
    assert m["rpn_min_size"] == 1.0 and m["rpn_box_loss_beta"] == 0 and m["box_loss_beta"] == 0
    if name.startswith("cascade"):
        assert m["stage_loss_weights"] == pytest.approx([1 / 3] * 3)


def test_torchvisions_r50_fpn_keeps_torchvisions_conventions():
    m = load_recipe("maskrcnn_r50_fpn")["model"]  # torchvision's COCO weights: trained with its conventions
    assert (m["anchors"], m["roi_align_aligned"], m["roi_sampling_ratio"]) == ("torchvision", False, None)
    assert m["mask_paste"] == "torchvision" and _fast().mask_paste == "torchvision"
    assert m["size_rounding"] == "floor" and _fast().input_spec.size_rounding == "floor"
    paddlex = load_recipe("maskrcnn_r50_fpn_paddlex")["model"]
    network = ("backbone", "fpn", "box_head", "levels", "fpn_channels", "mask_head_layers", "representation_size")
    assert all(paddlex[k] == m[k] for k in network)  # the same network


def _blobs(n: int, size: int = 28, seed: int = 0) -> np.ndarray:
    """Smooth [n,size,size] probability maps (a blob soft at its edge, as trained masks are)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    out = []
    for _ in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        radius = rng.uniform(0.2, 0.4) * size
        out.append(1 / (1 + np.exp((np.hypot(yy - cy, xx - cx) - radius) / 1.5)))
    return np.stack(out).astype(np.float32)


def _rule(mask: np.ndarray, box: np.ndarray, im_h: int, im_w: int) -> np.ndarray:
    """The rule itself, pixel by pixel (float64): the map spans the box exactly, each pixel centre samples it
    bilinearly with zeros beyond it."""
    m_h, m_w = mask.shape
    out = np.zeros((im_h, im_w))
    for y in range(im_h):
        v = (y + 0.5 - box[1]) / (box[3] - box[1]) * m_h - 0.5
        for x in range(im_w):
            u = (x + 0.5 - box[0]) / (box[2] - box[0]) * m_w - 0.5
            i, j = int(np.floor(v)), int(np.floor(u))
            for r, c, wt in ((i, j, (1 - v + i) * (1 - u + j)), (i, j + 1, (1 - v + i) * (u - j)),
                             (i + 1, j, (v - i) * (1 - u + j)), (i + 1, j + 1, (v - i) * (u - j))):  # fmt: skip
                if 0 <= r < m_h and 0 <= c < m_w:
                    out[y, x] += wt * mask[r, c]
    return out


BOXES = np.array([[3.3, 4.7, 20.2, 13.9], [0.0, 0.0, 50.0, 40.0], [30.5, 20.25, 49.9, 39.0], [45.0, 10.0, 58.0, 30.0],
                  [10.0, 30.0, 11.5, 31.0], [-5.0, -3.0, 12.0, 9.0], [7.0, 7.0, 7.4, 40.0]], np.float32)  # fmt: skip


def test_exact_paste_is_bilinear_at_pixel_centres_over_the_box():
    """The predictor's one-box paste and the eager one (grid_sample) both follow the rule, written out directly;
    torchvision's geometry (padded map, enlarged box, whole pixels) does not."""
    masks, (im_h, im_w) = _blobs(len(BOXES)), (40, 50)
    eager = paste_masks_exact(torch.from_numpy(masks), torch.from_numpy(BOXES), (im_h, im_w))[:, 0].numpy()
    for mask, box, pasted in zip(masks, BOXES, eager, strict=True):
        rule = _rule(mask, box, im_h, im_w)
        crop, x0, y0 = paste_mask_exact(mask, box, im_h, im_w)
        ours = np.zeros((im_h, im_w), bool)
        ours[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        clear = np.abs(rule - 0.5) > 1e-5  # float32 rounding may decide a pixel sampled at 0.5 exactly
        np.testing.assert_array_equal(ours[clear], (rule >= 0.5)[clear])
        np.testing.assert_allclose(pasted, rule, atol=1e-5)
        assert not ours[~clear].any() or (rule[~clear] >= 0.5 - 1e-5).all()
    from instaseg.inference.postprocess import paste_mask

    differs = 0
    for mask, box in zip(masks, BOXES, strict=True):
        crop, x0, y0 = paste_mask(mask, box, im_h, im_w)
        theirs = np.zeros((im_h, im_w), bool)
        theirs[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        differs += int((theirs != (_rule(mask, box, im_h, im_w) >= 0.5)).sum())
    assert differs > 20


def test_exact_paste_of_a_degenerate_box_is_empty():
    mask = _blobs(1)[0]
    for box in ([5.0, 5.0, 5.0, 9.0], [5.0, 9.0, 8.0, 2.0], [60.0, 5.0, 70.0, 9.0]):
        crop, _, _ = paste_mask_exact(mask, np.array(box, np.float32), 40, 50)
        assert not crop.any()


def test_exact_paste_reaches_the_predictor_and_the_eager_output():
    """The switch travels through the detector contract: the predictor's post-processing and the eager output
    paste alike (the same network input to both)."""
    from pycocotools import mask as mask_utils

    from instaseg.inference.backends.torch import TorchBackend
    from instaseg.inference.postprocess import postprocess

    model = _fast("model.mask_paste=exact").eval()
    model.make_outputs_busy()
    image = torch.rand(3, 70, 90)
    with torch.no_grad():
        eager = model([image])[0]["masks"][:, 0].numpy()
        batch = model.transform([image])[0]
    raw = TorchBackend(model)(batch.tensors, batch.image_sizes)[0]
    assert model.mask_paste == raw.mask_paste == "exact" and _fast().mask_paste == "torchvision"
    found = postprocess(raw, tuple(batch.image_sizes[0]), (70, 90))
    assert len(found.rles) == len(eager) > 0
    ours = np.stack([mask_utils.decode({**r, "counts": r["counts"].encode()}) for r in found.rles]).astype(bool)
    clear = np.abs(eager - 0.5) > 1e-5
    np.testing.assert_array_equal(ours[clear], (eager >= 0.5)[clear])
    assert ours.any() and (~ours).any()


@pytest.mark.parametrize("paste", ["torchvision", "exact"])
def test_size_rounding_reaches_the_input_spec_and_the_eager_resize(paste):
    """A 187 x 212 picture at 96 px: torchvision's interpolate floors 187 x 96 / 212 = 84.68 to 84 rows,
    PaddleDetection's Resize rounds it to 85. The rule reaches the spec every backend pre-processes by and the
    eager model's own resize, with either paste."""
    from instaseg.inference.preprocess import preprocess

    image = torch.rand(3, 187, 212)
    for rounding, rows in (("floor", 84), ("round", 85)):
        model = _fast(f"model.size_rounding={rounding}", f"model.mask_paste={paste}").eval()
        assert model.input_spec.size_rounding == rounding and model.mask_paste == paste
        assert model.input_spec.resized_size(187, 212) == (rows, 96)
        assert preprocess([image], model.input_spec)[1] == [(rows, 96)]
        resized, _ = model.transform.resize(image, None)
        assert tuple(resized.shape[-2:]) == (rows, 96)


@pytest.mark.parametrize("paste", ["torchvision", "exact"])
def test_size_divisible_one_pads_nothing_as_the_c4_references(paste):
    """PaddleDetection's C4 reader (PadBatch pad_to_stride -1) and Detectron2's C4 (size_divisibility 0) feed the
    resized picture unpadded; padding to 32 adds rows whose features reach the border's. ``size_divisible: 1``
    reaches the spec every backend pads by and the eager batch; the default stays 32, and the C4 recipe sets 1."""
    from instaseg.inference.preprocess import preprocess

    image = torch.rand(3, 70, 90)  # 74 x 96 at 96 px: not multiples of 32
    for divisor, frame in ((32, (96, 96)), (1, (74, 96))):
        model = _fast(f"model.size_divisible={divisor}", f"model.mask_paste={paste}").eval()
        assert model.input_spec.size_divisible == divisor
        assert tuple(preprocess([image], model.input_spec)[0].shape[-2:]) == frame
        batch, _ = model.transform([image])
        assert tuple(batch.tensors.shape[-2:]) == frame
    assert load_recipe("maskrcnn_r50_c4")["model"]["size_divisible"] == 1
    assert load_recipe("maskrcnn_r50_fpn")["model"]["size_divisible"] == 32
