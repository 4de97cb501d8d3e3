"""Masks over the whole padded input (prototype and kernel heads): their centres, and their paste into the original
image (cut to each box, or whole; resampled as ``mask_resample`` says), the eval-mode output of
`TransformDetector.full_size` for one-stage architectures."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from instaseg.models.common.mask_resample import ImageMaskResample
from instaseg.models.detector import RawOutput, clip_boxes


def mask_centers(masks: torch.Tensor, fallback: torch.Tensor | None = None) -> torch.Tensor:
    """[N,2] (x, y) centres of mass of [N,H,W] masks in pixel indices: pixel i counts at i, not at its centre
    i + 0.5, as MMDetection's and the original SOLO's ``center_of_mass`` (and scipy's) count, so the centre cells
    and centre priors of RTMDet-Ins and SOLOv2 are where the published code puts them. An empty mask gets its
    ``fallback`` row ([N,2], e.g. the box centre), or (0, 0)."""
    m = masks.float()
    area = m.sum(dim=(1, 2))
    ys = torch.arange(m.shape[1], device=m.device, dtype=m.dtype)
    xs = torch.arange(m.shape[2], device=m.device, dtype=m.dtype)
    cx = (m.sum(dim=1) * xs).sum(dim=1) / area.clamp(min=1)
    cy = (m.sum(dim=2) * ys).sum(dim=1) / area.clamp(min=1)
    centers = torch.stack([cx, cy], dim=1)
    return centers if fallback is None else torch.where((area > 0)[:, None], centers, fallback)


def sample_grid(n_out: int, in_extent: float, out_extent: int, n_low: int, stride: int, offset: float = 0.0):
    """Normalised grid_sample coordinates (align_corners=False) of ``n_out`` output pixels starting at ``offset``.

    Output pixel x (original image) has centre (x + 0.5) * in_extent / out_extent in the network-input frame,
    i.e. that / stride - 0.5 in low-res pixels.
    """
    x = torch.arange(n_out, dtype=torch.float32) + offset
    low = (x + 0.5) * (in_extent / out_extent) / stride - 0.5
    return (2 * low + 1) / n_low - 1


def paste_image_masks(
    probs: torch.Tensor,  # [N, h, w] at `stride` of the padded network input
    boxes: torch.Tensor,  # [N, 4] in original pixels
    stride: int,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
    crop: bool = True,
    logits: bool = False,
    resample: str = "direct",
    input_boxes: torch.Tensor | None = None,  # [N, 4] in input pixels: where a reference geometry cuts
) -> torch.Tensor:
    """[N,1,H,W] mask probabilities at original size, zero outside each box unless not ``crop``: one bilinear
    resampling from the low-res map straight to the original pixels (as `instaseg.inference.postprocess` does per
    box), or the geometry ``resample`` names (`instaseg.models.common.mask_resample`; pixels it does not reach are
    zero). ``logits``: the maps hold logits, resampled as such and then turned into probabilities.

    Where the cut falls: the direct paste cuts at ``boxes`` in the picture's pixels; a reference geometry cuts
    between its two steps at ``input_boxes`` (`cut_resampled_masks`: PaddleDetection's PP-YOLOE-seg; the maps must
    hold probabilities, as the cut zeroes the intermediate map)."""
    if crop and resample != "direct":
        if logits:
            raise ValueError("a mask cut between two resampling steps must hold probabilities, not logits")
        if input_boxes is None:
            raise ValueError("a mask cut between two resampling steps needs its box in the input frame")
        return cut_resampled_masks(probs, input_boxes, stride, input_size, image_size, resample)
    if probs.shape[0] == 0:
        return probs.new_zeros((0, 1, *image_size))
    if resample == "direct":
        return direct_masks(probs, boxes if crop else None, stride, input_size, image_size, logits)
    return resampled_masks(probs, stride, input_size, image_size, logits, resample)


def direct_masks(
    probs: torch.Tensor,
    boxes: torch.Tensor | None,
    stride: int,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
    logits: bool,
) -> torch.Tensor:
    """[N,1,H,W] probabilities of [N,h,w] maps resampled in one bilinear step to the original pixels, zero outside
    each of ``boxes`` (original pixels, widened to whole pixels) unless they are None."""
    n, h, w = probs.shape
    out_h, out_w = image_size
    gx = sample_grid(out_w, input_size[1], out_w, w, stride).to(probs.device)
    gy = sample_grid(out_h, input_size[0], out_h, h, stride).to(probs.device)
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)  # [H, W, 2] as (x, y)
    full = F.grid_sample(
        probs[:, None], grid[None].expand(n, -1, -1, -1), mode="bilinear", padding_mode="border",
        align_corners=False,
    )  # fmt: skip
    full = full.sigmoid() if logits else full
    if boxes is None:
        return full
    xs = torch.arange(out_w, device=probs.device)
    ys = torch.arange(out_h, device=probs.device)
    x0, y0 = boxes[:, 0].floor()[:, None], boxes[:, 1].floor()[:, None]
    x1, y1 = boxes[:, 2].ceil()[:, None], boxes[:, 3].ceil()[:, None]
    inside_x = (xs[None] >= x0) & (xs[None] < x1)
    inside_y = (ys[None] >= y0) & (ys[None] < y1)
    return full * (inside_y[:, :, None] & inside_x[:, None, :])[:, None].to(full.dtype)


def resampled_masks(
    probs: torch.Tensor,
    stride: int,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
    logits: bool,
    resample: str,
) -> torch.Tensor:
    """[N,1,H,W] probabilities of [N,h,w] maps resampled by a reference geometry as dense per-axis matrices (the
    predictor applies the same weights per window); pixels beyond what the geometry reaches are zero."""
    geometry = ImageMaskResample(resample, stride, tuple(probs.shape[-2:]), input_size, image_size)
    rows, cols = (torch.from_numpy(geometry.dense(axis)).to(probs.device) for axis in (0, 1))
    values = rows @ probs.float() @ cols.T
    values = values.sigmoid() if logits else values
    full = values.new_zeros((probs.shape[0], 1, *image_size))
    full[:, 0, : rows.shape[0], : cols.shape[0]] = values
    return full


def cut_resampled_masks(
    probs: torch.Tensor,
    input_boxes: torch.Tensor,
    stride: int,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
    resample: str,
) -> torch.Tensor:
    """[N,1,H,W] probabilities of [N,h,w] probability maps resampled by a two-step reference geometry with each
    mask cut to its box (``input_boxes`` [N,4], input pixels) between the steps (`ImageMaskResample.dense_cut`,
    PaddleDetection's PP-YOLOE-seg): one pair of per-axis matrices per mask."""
    geometry = ImageMaskResample(resample, stride, tuple(probs.shape[-2:]), input_size, image_size)
    full = probs.new_zeros((probs.shape[0], 1, *image_size), dtype=torch.float32)
    for i, (x1, y1, x2, y2) in enumerate(input_boxes.tolist()):
        rows = torch.from_numpy(geometry.dense_cut(0, (y1, y2))).to(probs.device)
        cols = torch.from_numpy(geometry.dense_cut(1, (x1, x2))).to(probs.device)
        full[i, 0, : rows.shape[0], : cols.shape[0]] = rows @ probs[i].float() @ cols.T
    return full


def scale_to_image(boxes: torch.Tensor, input_size: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
    """Boxes in the resized image mapped to the original one (torchvision's resize_boxes ratios)."""
    h, w = input_size
    ratio = boxes.new_tensor([image_size[1] / w, image_size[0] / h, image_size[1] / w, image_size[0] / h])
    return boxes * ratio


def box_cropped_output(
    out: RawOutput,
    mask_stride: int,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
    crop: bool = True,
    logits: bool = False,
    resample: str = "direct",
) -> dict:
    """A raw output in the original image, each image-frame mask pasted inside its own box (PP-YOLOE-seg's crop),
    or whole (not ``crop``); ``logits``: the masks are logits; ``resample``: the geometry and where it cuts (see
    `paste_image_masks`)."""
    input_boxes = clip_boxes(out.boxes, *input_size)
    boxes = scale_to_image(input_boxes, input_size, image_size)
    masks = paste_image_masks(
        out.masks, boxes, mask_stride, input_size, image_size, crop, logits, resample, input_boxes=input_boxes
    )
    return {"boxes": boxes, "labels": out.labels, "scores": out.scores, "masks": masks}
