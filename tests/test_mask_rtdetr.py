"""Mask-RT-DETR's parts: Hungarian matching against brute force, deformable attention against a naive bilinear
reference, denoising groups, mask-enhanced boxes, the published L size, training on empty pictures."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from instaseg.errors import UserError
from instaseg.models.factory import build_model
from instaseg.models.mask_rtdetr.assigner import HungarianMatcher
from instaseg.models.mask_rtdetr.attention import MSDeformableAttention, deformable_sampling
from instaseg.models.mask_rtdetr.backbone import HGNetV2
from instaseg.models.mask_rtdetr.denoising import build_denoising
from instaseg.models.mask_rtdetr.heads import mask_logits, masks_to_boxes_normalised
from instaseg.models.recipes import apply_overrides, load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")
WEIGHTS = {"class": 4.0, "bbox": 5.0, "giou": 2.0, "mask": 5.0, "dice": 5.0}


def _random_case(queries: int, objects: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, queries, 3, generator=g)
    centres, sizes = torch.rand(1, queries, 2, generator=g) * 0.6 + 0.2, torch.rand(1, queries, 2, generator=g) * 0.3
    boxes = torch.cat([centres, sizes + 0.05], dim=-1)
    masks = torch.randn(1, queries, 12, 12, generator=g)
    gt_labels = torch.randint(0, 3, (objects,), generator=g)
    gt_centres = torch.rand(objects, 2, generator=g) * 0.6 + 0.2
    gt_boxes = torch.cat([gt_centres, torch.rand(objects, 2, generator=g) * 0.3 + 0.05], 1)
    gt_masks = (torch.rand(objects, 48, 48, generator=g) > 0.5).float()
    return logits, boxes, masks, [gt_labels], [gt_boxes], [gt_masks]


@pytest.mark.parametrize("seed", range(4))
def test_matcher_finds_the_cheapest_assignment(seed: int) -> None:
    logits, boxes, masks, labels, gt_boxes, gt_masks = _random_case(5, 3, seed)
    matcher = HungarianMatcher(WEIGHTS, num_points=64)
    torch.manual_seed(seed)
    (rows, cols), = matcher(logits, boxes, masks, labels, gt_boxes, gt_masks)
    torch.manual_seed(seed)  # the same sampled points for the cost the brute force sees
    cost = matcher.cost(logits[0], boxes[0], masks[0], labels[0], gt_boxes[0], gt_masks[0])
    best = min(
        sum(float(cost[q, j]) for j, q in enumerate(perm)) for perm in itertools.permutations(range(5), 3)
    )
    assert sorted(cols.tolist()) == [0, 1, 2] and len(set(rows.tolist())) == 3
    assert math.isclose(float(cost[rows, cols].sum()), best, rel_tol=1e-6)


def test_matcher_pairs_each_object_with_the_query_that_predicts_it() -> None:
    gt_boxes = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])
    boxes = torch.tensor([[[0.5, 0.5, 0.1, 0.1], [0.7, 0.6, 0.3, 0.4], [0.9, 0.9, 0.1, 0.1], [0.3, 0.3, 0.2, 0.2]]])
    logits = torch.full((1, 4, 2), -5.0)
    logits[0, 1, 1] = logits[0, 3, 0] = 5.0
    masks = torch.full((1, 4, 8, 8), -5.0)
    (rows, cols), = HungarianMatcher(WEIGHTS, 0)(logits, boxes, masks, [torch.tensor([0, 1])], [gt_boxes], [None])
    assert dict(zip(cols.tolist(), rows.tolist(), strict=True)) == {0: 3, 1: 1}


def test_matcher_without_objects_matches_nothing() -> None:
    logits, boxes, masks, *_ = _random_case(4, 1, 0)
    empty = torch.zeros(0, dtype=torch.long)
    (rows, cols), = HungarianMatcher(WEIGHTS, 16)(logits, boxes, masks, [empty], [torch.zeros(0, 4)], [None])
    assert rows.numel() == 0 and cols.numel() == 0


def _naive_bilinear(value: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """value [C,h,w] at normalised (x, y), pixel centres at (i + 0.5) / size, zero outside."""
    c, h, w = value.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(c)
    for dx, dy in itertools.product((0, 1), (0, 1)):
        xi, yi = x0 + dx, y0 + dy
        weight = (1 - abs(px - xi)) * (1 - abs(py - yi))
        if 0 <= xi < w and 0 <= yi < h:
            out += weight * value[:, yi, xi]
    return out


def test_deformable_sampling_matches_a_naive_bilinear_reference() -> None:
    g = torch.Generator().manual_seed(0)
    b, q, heads, points, head_dim = 2, 3, 2, 3, 4
    shapes = [(6, 5), (3, 4)]
    values = [torch.randn(b * heads, head_dim, h, w, generator=g) for h, w in shapes]
    locations = torch.rand(b, q, heads, len(shapes), points, 2, generator=g) * 1.2 - 0.1  # some fall outside
    weights = torch.rand(b, q, heads, len(shapes), points, generator=g)
    got = deformable_sampling(values, locations, weights)
    want = torch.zeros(b, q, heads * head_dim)
    for bi, qi, hi in itertools.product(range(b), range(q), range(heads)):
        acc = torch.zeros(head_dim)
        for level, p in itertools.product(range(len(shapes)), range(points)):
            x, y = locations[bi, qi, hi, level, p].tolist()
            acc += weights[bi, qi, hi, level, p] * _naive_bilinear(values[level][bi * heads + hi], x, y)
        want[bi, qi, hi * head_dim : (hi + 1) * head_dim] = acc
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_deformable_attention_starts_at_the_reference_box() -> None:
    """At initialisation the attention is uniform and the offsets a fixed star: a constant map reads back its
    constant (through the value and output projections) wherever the box is."""
    torch.manual_seed(0)
    attn = MSDeformableAttention(dim=8, heads=2, levels=1, points=2).eval()
    memory = [torch.ones(1, 8, 10, 10)]
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.6, 0.1, 0.3]]])
    out = attn(torch.randn(1, 2, 8), boxes, memory)
    torch.testing.assert_close(out[0, 0], out[0, 1])


def test_value_projection_on_channels_last_tokens_matches_the_published_layout() -> None:
    """The values are projected on each map's tokens taken channels last by a permute (one transpose in the
    exported graph): the same numbers as the published layout, the linear layer on the flattened map
    transposed, split into heads."""
    torch.manual_seed(0)
    attn = MSDeformableAttention(dim=8, heads=2, levels=2, points=3).eval()
    torch.nn.init.normal_(attn.value_proj.bias)
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.3)
    torch.nn.init.normal_(attn.attention_weights.weight)
    memory = [torch.randn(2, 8, 6, 5), torch.randn(2, 8, 3, 4)]
    query, boxes = torch.randn(2, 4, 8), torch.rand(2, 4, 4) * 0.5 + 0.25
    values = []
    for level in memory:  # the published layout: tokens [B, h*w, D] through the linear layer, then [B*heads, D/heads]
        b, d, h, w = level.shape
        tokens = attn.value_proj(level.flatten(2).transpose(1, 2))
        values.append(tokens.transpose(1, 2).reshape(b * attn.heads, d // attn.heads, h, w))
    offsets = attn.sampling_offsets(query).reshape(2, 4, attn.heads, attn.levels, attn.points, 2)
    weights = attn.attention_weights(query).reshape(2, 4, attn.heads, -1).softmax(-1)
    weights = weights.reshape(2, 4, attn.heads, attn.levels, attn.points)
    ref = boxes[:, :, None, None, None, :]
    locations = ref[..., :2] + offsets / attn.points * ref[..., 2:] * 0.5
    want = attn.output_proj(deformable_sampling(values, locations, weights))
    with torch.no_grad():
        torch.testing.assert_close(attn(query, boxes, memory), want, atol=1e-6, rtol=1e-6)


def test_mask_logits_and_boxes_from_logits_match_the_plain_forms() -> None:
    g = torch.Generator().manual_seed(0)
    embed, feat = torch.randn(2, 5, 4, generator=g), torch.randn(2, 4, 6, 7, generator=g)
    want = (embed @ feat.flatten(2)).reshape(2, 5, 6, 7)
    torch.testing.assert_close(mask_logits(embed, feat), want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(mask_logits(embed[0], feat[0]), want[0], atol=1e-6, rtol=1e-6)  # one picture
    logits = want - 2.0  # some masks empty, some partial
    assert (logits > 0).flatten(2).any(-1).sum() not in (0, logits.shape[0] * logits.shape[1])
    torch.testing.assert_close(masks_to_boxes_normalised(logits, 0.0), masks_to_boxes_normalised(logits > 0))


def test_denoising_groups_and_their_attention_mask() -> None:
    torch.manual_seed(0)
    labels = [torch.tensor([0, 2]), torch.tensor([1])]
    boxes = [torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.4, 0.2]]), torch.tensor([[0.5, 0.5, 0.5, 0.5]])]
    embed = torch.randn(3, 8)
    dn = build_denoising(labels, boxes, embed, num_queries=5, num_denoising=7, label_noise=0.0, box_noise=0.0)
    assert dn is not None and dn.groups == 3 and dn.size == 6  # 7 // 2 objects = 3 groups of 2 slots
    # without noise every real slot carries its object's class embedding and box; padding slots are zero
    torch.testing.assert_close(dn.content[0, 0], embed[0])
    torch.testing.assert_close(dn.content[0, 3], embed[2])
    torch.testing.assert_close(dn.content[1, 1], torch.zeros(8))
    torch.testing.assert_close(dn.boxes_unact[0, 2:4].sigmoid(), boxes[0], atol=1e-5, rtol=1e-5)
    assert dn.positive[0].tolist() == [0, 1, 2, 3, 4, 5] and dn.positive[1].tolist() == [0, 2, 4]
    assert dn.gt_index[0].tolist() == [0, 1, 0, 1, 0, 1] and dn.gt_index[1].tolist() == [0, 0, 0]
    blocked = dn.blocked
    assert blocked.shape == (11, 11)
    assert blocked[6:, :6].all() and not blocked[6:, 6:].any()  # matching queries never see denoising ones
    for g in range(3):
        rows = slice(2 * g, 2 * g + 2)
        assert not blocked[rows, rows].any() and not blocked[rows, 6:].any()
        assert int(blocked[rows, :6].sum()) == 2 * 4  # every other group's 4 slots hidden
    assert build_denoising([torch.zeros(0, dtype=torch.long)], [torch.zeros(0, 4)], embed, 5, 7, 0.5, 1.0) is None


def test_box_noise_stays_within_the_published_bounds() -> None:
    torch.manual_seed(0)
    box = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    dn = build_denoising([torch.tensor([0])], [box], torch.randn(2, 4), 5, 200, 0.0, 1.0)
    noised = dn.boxes_unact[0].sigmoid()
    # centres move by at most half the size, sizes by at most their own value
    assert ((noised[:, :2] - box[:, :2]).abs() <= box[:, 2:] / 2 + 1e-5).all()
    assert ((noised[:, 2:] - box[:, 2:]).abs() <= box[:, 2:] + 1e-5).all()
    assert (noised != box).any()


def test_mask_enhanced_boxes_are_the_masks_extent() -> None:
    masks = torch.zeros(1, 2, 8, 10, dtype=torch.bool)
    masks[0, 0, 2:5, 3:9] = True
    boxes = masks_to_boxes_normalised(masks)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([6 / 10, 3.5 / 8, 6 / 10, 3 / 8]))
    assert boxes[0, 1].abs().sum() == 0  # an empty mask: no box


def test_backbone_levels_keep_stride_four() -> None:
    net = HGNetV2("nano").eval()
    feats = net(torch.rand(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert [f.shape[1] for f in feats] == net.out_channels


def test_published_l_size() -> None:
    """Mask-RT-DETR-L: 32 M parameters as published (within 5%)."""
    model = build_model(load_recipe("mask_rtdetr_l"), 80, weights="none")
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params - 32.0) / 32.0 < 0.05, params


@pytest.mark.slow
def test_published_l_flops() -> None:
    """Mask-RT-DETR-L: 120 GFLOPs at 640 as published (within 5%), counted as `instaseg models` counts."""
    from instaseg.models.zoo import count_flops

    model = build_model(load_recipe("mask_rtdetr_l"), 80, weights="none").eval()
    gflops = count_flops(model, 640, 640) / 1e9
    assert abs(gflops - 120.0) / 120.0 < 0.05, gflops


def _tiny(*more: str) -> dict:
    sized = ["input.min_size=96", "input.max_size=96", "model.num_queries=50", "model.decoder_layers=2"]
    return apply_overrides(load_recipe("mask_rtdetr_fast"), [*sized, *more])


def test_batch_without_objects_trains_every_parameter() -> None:
    torch.manual_seed(0)
    model = build_model(_tiny(), 2, weights="none").train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
             "masks": torch.zeros(0, 96, 96, dtype=torch.uint8)}  # fmt: skip
    losses = model([torch.rand(3, 96, 96), torch.rand(3, 80, 96)], [empty, empty])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_class"].item() > 0  # background is still taught
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_eval_keeps_at_most_max_dets_without_nms() -> None:
    torch.manual_seed(0)
    model = build_model(_tiny("eval.max_dets=30", "eval.score_threshold=0.0"), 3, weights="none").eval()
    model.make_outputs_busy()
    with torch.no_grad():
        (out,) = model.raw_forward(torch.randn(1, 3, 96, 128), [(90, 120)])
    assert len(out.scores) == 30 and out.masks.shape == (30, 24, 32)
    assert (out.scores[:-1] >= out.scores[1:]).all()
    assert out.boxes[:, 2].max() <= 120 and out.boxes[:, 3].max() <= 90


def test_model_section_rules() -> None:
    with pytest.raises(UserError, match="model.backbone"):
        load_recipe_with("model.backbone=hgnetv2_q")
    with pytest.raises(UserError, match="model.hidden_dim"):
        load_recipe_with("model.hidden_dim=60", "model.decoder_heads=8")
    load_recipe_with("model.weights=imagenet")  # PaddleX's published starts exist for the published sizes
    with pytest.raises(UserError, match="no ImageNet-pretrained PP-HGNetV2"):  # none for our own nano size
        build_model(load_recipe_with(), 3, weights="imagenet")


def load_recipe_with(*overrides: str) -> dict:
    return apply_overrides(load_recipe("mask_rtdetr_fast"), list(overrides))
