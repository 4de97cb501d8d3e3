"""RTMDet-Ins: published sizes, head structure, assignment, losses, training, eval output, predictor parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from instaseg.models.common.losses import dice_loss
from instaseg.models.factory import build_architecture, build_model
from instaseg.models.recipes import apply_overrides, load_recipe
from instaseg.models.rtmdet_ins.assigner import DynamicSoftLabelAssigner
from instaseg.models.rtmdet_ins.heads import dynamic_mask_logits, relative_coordinates
from instaseg.models.rtmdet_ins.losses import quality_focal_loss
from instaseg.models.rtmdet_ins.model import DICE_EPS

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["input.min_size=64", "input.max_size=96"]
# published at 640 x 640, 80 classes (mmdetection's RTMDet-Ins model zoo); GFLOPs there count multiply-adds
PUBLISHED = {"rtmdet_ins_tiny": (5.6, 11.8), "rtmdet_ins_s": (10.2, 21.5)}


def _model(num_classes: int = 3, overrides: list[str] | None = None):
    torch.manual_seed(0)
    recipe = apply_overrides(load_recipe("rtmdet_ins_tiny"), TINY + list(overrides or []))
    return build_model(recipe, num_classes=num_classes, weights="none")


def _sample(h: int = 64, w: int = 96) -> tuple[torch.Tensor, dict]:
    boxes = [[8, 8, 40, 40], [44, 20, 90, 60]]
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    image = torch.full((3, h, w), 0.2)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = 1
        image[i, y0:y1, x0:x1] = 0.9  # a red square and a green square
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor([1, 2]), "masks": masks}
    return image, target


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_params_and_gflops_match_published(name):
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):  # shapes are all that counting needs: no memory, no arithmetic
        model = build_architecture(load_recipe(name), 80).eval()
        image = torch.zeros(1, 3, 640, 640)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:  # the published count: backbone + neck + head on one 640 x 640 image
        feats = model.neck(model.backbone(image))
        model.head(feats)
        # MMDetection's head runs the shared class tower a second time as its "reg_convs" (the same modules, so the
        # same features): its published count includes that repeat, which instaseg computes once
        for tower, x in zip(model.head.cls_convs, feats, strict=True):
            tower(x)
    macs = counter.get_total_flops() / 2 / 1e9
    want_params, want_gflops = PUBLISHED[name]
    assert abs(params - want_params) / want_params < 0.05, params
    assert abs(macs - want_gflops) / want_gflops < 0.05, macs


def test_head_shares_convs_across_levels_and_one_tower_feeds_class_and_box():
    head = _model().head
    for level in head.cls_convs[1:]:
        for layer, first in zip(level, head.cls_convs[0], strict=True):
            assert layer.conv.weight is first.conv.weight  # one conv for all levels
            assert layer.bn is not first.bn  # separate BatchNorm per level
    assert not hasattr(head, "reg_convs")  # MMDetection's reg_convs[n] is its cls_convs[n]
    cls_weights = {id(p) for p in head.cls_convs.parameters()}
    assert not cls_weights & {id(p) for p in head.kernel_convs.parameters()}
    assert head.kernel_convs[0][0].conv is not head.kernel_convs[1][0].conv  # kernel branch per level
    assert head.num_params == (10 * 8 + 8) + (8 * 8 + 8) + (8 + 1)


@pytest.mark.parametrize("shared_prototypes", [False, True])
def test_dynamic_masks_equal_grouped_convolutions(shared_prototypes):
    """The batched matrix products (either order of the first layer) compute the published per-instance 1x1 conv
    stack."""
    torch.manual_seed(0)
    n, protos = 5, torch.randn(8, 6, 7)
    sizes = [(8, 10), (8, 8), (1, 8)]
    kernels = torch.randn(n, sum(o * i + o for o, i in sizes))
    points, strides = torch.rand(n, 2) * 50, torch.tensor([8.0, 8, 16, 32, 16])
    got = dynamic_mask_logits(protos, kernels, points, strides, sizes, 8, shared_prototypes)
    coords = relative_coordinates(points, strides, 6, 7, 8).reshape(n, 2, 6, 7)
    x = torch.cat([coords, protos[None].expand(n, -1, -1, -1)], dim=1).reshape(1, -1, 6, 7)
    offset = sum(o * i for o, i in sizes)
    for k, (o, i) in enumerate(sizes):
        start = sum(a * b for a, b in sizes[:k])
        w = kernels[:, start : start + o * i].reshape(n * o, i, 1, 1)
        b0 = offset + sum(a for a, _ in sizes[:k])
        b = kernels[:, b0 : b0 + o].reshape(-1)
        x = F.conv2d(x, w, b, groups=n)
        if k < 2:
            x = F.relu(x)
    torch.testing.assert_close(got, x.reshape(n, 6, 7), rtol=1e-4, atol=1e-4)


def test_kernels_at_kept_points_equal_the_dense_kernel_maps():
    """Inference computes each kept instance's kernel from its window of the pyramid; it must equal the dense
    kernel maps at that point on every level, at corners and edges (where the convs' zero padding matters) too."""
    model = _model().eval()
    torch.manual_seed(1)
    for module in model.head.modules():  # BatchNorm statistics away from identity, so the padding rule shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.uniform_(-1.0, 1.0)
        elif isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, 0.0, 0.1)
    image = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        feats = model.neck(model.backbone(image))
        dense = model.head(feats)[2]
        points, want = [], []
        for kmap, stride in zip(dense, model.head.strides, strict=True):
            h, w = kmap.shape[-2:]
            for r, c in {(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (h // 2, w // 2), (1, w - 2), (h - 1, 1)}:
                points.append([c * stride, r * stride, stride])
                want.append(kmap[0, :, r, c])
        got = model.head.kernels_at([f[0] for f in feats], torch.tensor(points, dtype=torch.float32))
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-4, atol=1e-5)
    assert torch.stack(want).abs().max() > 1.0  # kernels that a wrong window would visibly change


def test_assigner_matches_points_inside_objects_only():
    points = torch.tensor([[x, y, 8.0] for y in range(0, 64, 8) for x in range(0, 64, 8)])
    gt = torch.tensor([[4.0, 4, 30, 30], [36, 36, 60, 60]])
    pred = torch.cat([points[:, :2] - 12, points[:, :2] + 12], dim=1)  # 24-pixel boxes around each point
    logits = torch.zeros(len(points), 3)
    centers = (gt[:, :2] + gt[:, 2:]) / 2
    result = DynamicSoftLabelAssigner()(logits, pred, points, gt, torch.tensor([0, 2]), centers)
    matched = result.gt_index >= 0
    assert set(result.gt_index[matched].tolist()) == {0, 1}  # both objects get points
    for i in matched.nonzero().squeeze(1).tolist():
        x0, y0, x1, y1 = gt[result.gt_index[i]]
        assert x0 < points[i, 0] < x1 and y0 < points[i, 1] < y1
        assert 0 < result.iou[i] <= 1
    assert (result.iou[~matched] == 0).all()
    empty = DynamicSoftLabelAssigner()(logits, pred, points, gt[:0], torch.tensor([]), centers[:0])
    assert (empty.gt_index == -1).all()


def test_losses_reward_the_right_answer():
    logits = torch.tensor([[4.0, -4.0], [-4.0, -4.0]])
    good = quality_focal_loss(logits, torch.tensor([0, -1]), torch.tensor([0, 0]), torch.tensor([1.0, 0.0]))
    bad = quality_focal_loss(-logits, torch.tensor([0, -1]), torch.tensor([0, 0]), torch.tensor([1.0, 0.0]))
    assert good < 0.01 < bad
    target = torch.zeros(1, 8, 8)
    target[0, 2:6, 2:6] = 1
    exact = dice_loss(target * 20 - 10, target, DICE_EPS).sum()
    assert exact < 0.01 < dice_loss(10 - target * 20, target, DICE_EPS).sum()


def test_train_step_gives_finite_losses_and_gradients():
    model = _model().train()
    losses = model(*map(list, zip(_sample(), _sample(64, 80), strict=True)))
    assert set(losses) == {"loss_cls", "loss_box", "loss_mask"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.stem[0].conv.weight.grad.abs().sum() > 0
    assert sum(k.weight.grad.abs().sum() for k in model.head.rtm_kernel) > 0  # the mask loss reaches the kernels
    assert model.head.mask_head.projection.weight.grad.abs().sum() > 0  # and the prototypes


def test_image_without_objects_trains():
    model = _model().train()
    image, target = _sample()
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, 64, 96, dtype=torch.uint8),
    }
    for targets in ([empty, empty], [target, empty]):
        losses = model([image, image], targets)
        assert all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters())  # every branch stays in the graph


def test_short_training_run_loss_falls():
    model = _model().train()
    image, target = _sample()
    opt = torch.optim.AdamW(model.parameters(), lr=0.004, weight_decay=0.05)
    history = []
    for _ in range(25):
        losses = model(
            [image, image.flip(-1)],
            [target, {**target, "boxes": _flip(target["boxes"], 96), "masks": target["masks"].flip(-1)}],
        )
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    total = [sum(h.values()) for h in history]
    assert np.mean(total[-3:]) < 0.6 * total[0], total
    for key in history[0]:
        assert np.mean([h[key] for h in history[-3:]]) < 0.9 * history[0][key], (key, history)


def _flip(boxes: torch.Tensor, width: int) -> torch.Tensor:
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def _varied(model):
    """Random-init heads give near-equal scores and 0.5 masks; spread them so comparisons mean something."""
    torch.manual_seed(1)
    for conv in [*model.head.rtm_cls, *model.head.rtm_kernel, model.head.mask_head.projection]:
        torch.nn.init.normal_(conv.weight, std=0.3)
        torch.nn.init.normal_(conv.bias, std=1.0)
    for conv in model.head.rtm_kernel:
        conv.bias.data[-1] = 0.0  # the last dynamic layer's bias: masks neither all on nor all off
    return model.eval()


def test_eval_output_format_at_input_resolution():
    model = _varied(_model(2))
    images = [torch.rand(3, 50, 90), torch.rand(3, 120, 70)]
    with torch.no_grad():
        out = model(images)
    for pred, image in zip(out, images, strict=True):
        n = len(pred["scores"])
        assert 0 < n <= 100
        assert pred["masks"].shape == (n, 1, *image.shape[1:]) and pred["masks"].dtype == torch.float32
        assert pred["masks"].min() >= 0 and pred["masks"].max() <= 1
        assert set(pred["labels"].tolist()) <= {1, 2}
        assert (pred["scores"] > 0.05).all() and (pred["scores"][:-1] >= pred["scores"][1:]).all()
        assert (pred["boxes"][:, 2] <= image.shape[2]).all() and (pred["boxes"][:, 3] <= image.shape[1]).all()
        x1 = int(pred["boxes"][0, 2].ceil())
        if x1 < image.shape[2]:  # masks are not cut to their boxes, as MMDetection's RTMDet-Ins gives them
            assert pred["masks"][0, 0, :, x1:].sum() > 0


@pytest.mark.parametrize("resample", ["direct", "canvas_rescale"])
@pytest.mark.parametrize("shape", [(77, 101), (41, 97)])  # the second: the two geometries differ by 2911 pixels
def test_predictor_matches_the_eager_model(resample, shape):
    from instaseg.inference.backends.torch import TorchBackend
    from instaseg.inference.predictor import Predictor

    model = _varied(_model(3, ["eval.score_threshold=0.2", f"model.mask_resample={resample}"]))
    assert model.mask_resample == resample
    image = (np.random.default_rng(0).random((*shape, 3)) * 255).astype(np.uint8)
    with torch.no_grad():
        eager = model([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
    result = next(iter(Predictor(TorchBackend(model), ["a", "b", "c"], threshold=0.0).predict(image)))
    assert len(result.scores) == len(eager["scores"]) > 0
    np.testing.assert_allclose(result.boxes, eager["boxes"].numpy(), atol=1e-3)
    np.testing.assert_array_equal(result.labels, eager["labels"].numpy())
    decoded = np.stack([mask_utils.decode({**r, "counts": r["counts"].encode()}) for r in result.rles])
    want = (eager["masks"][:, 0] > 0.5).numpy()
    assert want.sum() > 0
    assert (decoded != want).sum() <= 0.001 * want.size  # the same resampling, up to float rounding


def test_freeze_stops_gradients_in_the_first_stages():
    """A pretrained start (a weights PATH) freezes the stem and ``frozen_stages`` stages, as Mask R-CNN does."""
    recipe = apply_overrides(load_recipe("rtmdet_ins_tiny"), ["model.frozen_stages=2"])
    model = build_architecture(recipe, 2, freeze=True)
    stages = {i: [p.requires_grad for p in model.backbone.stages[i].parameters()] for i in range(4)}
    assert not any(stages[0]) and not any(stages[1]) and all(stages[2]) and all(stages[3])
    assert not any(p.requires_grad for p in model.backbone.stem.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert all(p.requires_grad for p in build_architecture(recipe, 2).parameters())  # from scratch: nothing frozen
