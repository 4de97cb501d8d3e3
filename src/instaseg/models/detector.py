"""The detector contract: what every architecture implements, and all that the rest of instaseg knows of one.

An architecture is a `Detector` subclass in its own package under ``instaseg.models`` plus one registry entry
(`instaseg.models.registry.Architecture`) plus its recipes. Training, the predictor's torch backend, export,
the benchmark and evaluation call only what is defined here; none of them branches on an architecture.

What a detector provides:

- ``forward(images, targets)`` in training mode: ``images`` a list of float [3,H,W] tensors in [0, 1] at any
  size, ``targets`` one dict per image (``boxes`` [N,4] xyxy, ``labels`` [N] in 1..K, ``masks`` [N,H,W] uint8)
  -> a dict of named scalar losses, summed by the engine. The detector resizes, normalises and pads the images
  itself (by its ``input_spec``), so every architecture sees the same training batches. The engine's data
  pipeline resizes (multi-scale training) and calls ``keep_training_sizes()``: the detector then only normalises
  and pads in training.
- ``input_spec``: the resize rule (``min_size``/``max_size``, ``keep_ratio`` or stretched to a square, and
  ``size_rounding``: how a resized side becomes an integer, as the architecture's reference does it;
  ``resize_order``: resized in float after normalising, or as uint8 by OpenCV before it), mean/std on [0, 1] RGB
  pixels and the float32 arithmetic that applies them (``normalisation``), the padding multiple, and the padding
  itself (``pad_to_square``: a ``max_size`` canvas at least, as MMDetection's RTMDet pipeline pads; ``pad_value``:
  the padding's pixel value, or zero after normalisation). The shared pre-processing
  (`instaseg.inference.preprocess`) makes the batch ``raw_forward`` takes. ``set_resize_rule(keep_ratio)`` sets
  the rule a recipe's ``input.resize`` names.
- ``raw_forward(batch, image_sizes)``: ``batch`` [B,3,H,W] normalised and padded at the bottom/right,
  ``image_sizes`` each image's (h, w) before padding -> one `RawOutput` per image, in the batch's frame.
- ``mask_stride``: the frame of ``RawOutput.masks``. ``None``: each mask [M,M] spans its own box (Mask R-CNN's
  28x28 per RoI). An integer S: masks [N, H/S, W/S] cover the whole padded input, pixel (i, j) covering input
  pixels [S*i, S*i+S) x [S*j, S*j+S) (one-stage models' prototype masks). Post-processing pastes either kind
  into the original image one box at a time.
- ``mask_logits``: ``RawOutput.masks`` hold logits rather than probabilities; post-processing resamples them as
  logits and thresholds at the threshold's logit (MMDetection's RTMDet-Ins resamples logits; a probability
  saturates in float32 beyond a logit of about 17, which moves the resampled contour).
- ``mask_box_crop`` (image-frame masks only): post-processing keeps a mask's pixels inside its box only (and
  resamples just the box, so the cost scales with the box); False keeps the whole mask, resampled over its own
  extent (MMDetection's RTMDet-Ins does not cut masks to boxes).
- ``mask_paste`` (per-box masks only): how one lands in its box. "torchvision": the map padded by one pixel, the box
  enlarged to match and truncated to whole pixels (torchvision's `paste_masks_in_image`); "exact": the map spans
  the box exactly and is sampled bilinearly at every pixel centre, zero beyond it, foreground at >= the threshold
  (Detectron2's, mmdetection's and PaddleDetection's). The eager output pastes the same way.
- ``mask_resample`` (image-frame masks only): how one is resampled to the original picture
  (`instaseg.models.common.mask_resample`). "direct": one bilinear step, each original pixel centre mapped exactly
  through the resize; "canvas_rescale": MMDetection's RTMDet-Ins ``rescale``, the whole padded canvas upsampled by
  the stride, resized by the inverse scale factors with the width's applied to the height and the height's to the
  width (rounded up), the original size cut from its corner; "two_step": MMDetection's SOLOv2, upsampled by the
  stride to the padded input, the resized picture cut out and resized to the original; with ``mask_box_crop`` the
  mask is cut to its box between the two steps, at the box's input pixels (PaddleDetection's PP-YOLOE-seg). The
  eager output resamples the same way. A model section's ``mask_resample`` sets it (default "direct"; the recipes
  of published models set the reference's).
- ``export_forward(images, image_size)``: the graph that is exported (ONNX, then OpenVINO): one image
  [1,3,H,W] and its int64 (h, w) as a tensor -> (boxes, scores, labels, masks) as ``raw_forward`` gives them.
  It must be traceable by torch's TorchScript-based ONNX exporter; the default calls ``raw_forward``.
- ``quantization``: how INT8 post-training quantization treats this architecture's exported graph
  (`QuantizationSettings`): which operations are quantized, which parts stay in float, NNCF's preset and model type,
  each value chosen by measurement and the reason written beside it. The default suits convolutional models.
- ``make_outputs_busy()``: for a randomly initialised model, what makes its output look like a trained model's
  on a busy picture (every detection kept, masks partly filled), so `instaseg benchmark` of a recipe name times
  realistic post-processing. The default does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from instaseg.models.padding import filled_batch, normalised_fill, padded_frame
from instaseg.utils.normalisation import check_normalisation
from instaseg.utils.resize_rule import SIZE_ROUNDINGS, check_resize_order, resized_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# the exported graph's inputs and outputs, by name (see `Detector.export_forward`)
INPUT_NAMES = ("images", "image_size")
OUTPUT_NAMES = ("boxes", "scores", "labels", "masks")


@dataclass
class InputSpec:
    """What the network expects: the resize rule's sizes, normalisation and padding multiple. ``keep_ratio``: the
    shorter side to ``min_size`` unless the longer passes ``max_size`` (torchvision's rule); else every image is
    stretched to a ``max_size`` square (PaddleDetection's ``keep_ratio: false``). ``size_rounding``: how a side
    kept in ratio becomes an integer: "floor" (torchvision's ``interpolate``, Mask R-CNN's reference) or "round"
    (half up: MMDetection's and PaddleDetection's ``Resize``). ``resize_order``: "float" (normalise, then resize in
    float: torchvision's), "float_opencv_bilinear" (normalise, then resize in float by OpenCV: PaddleDetection's
    SOLOv2 evaluation) or "uint8_bilinear" / "uint8_bicubic" (the uint8 picture resized by OpenCV, then
    normalised: MMDetection's and PaddleDetection's); see `instaseg.utils.resize_rule`. ``normalisation``: the
    float32 arithmetic of ``(v / 255 - mean) / std``: "unit" (torchvision's), "pixel" (MMDetection's, in pixel
    units) or "paddle" (PaddleDetection's, each step in float64); see `instaseg.utils.normalisation`."""

    min_size: int
    max_size: int
    mean: tuple[float, ...] = field(default=IMAGENET_MEAN)
    std: tuple[float, ...] = field(default=IMAGENET_STD)
    size_divisible: int = 32
    keep_ratio: bool = True
    pad_to_square: bool = False
    pad_value: float | None = None
    size_rounding: str = "floor"
    resize_order: str = "float"
    normalisation: str = "unit"

    def __post_init__(self) -> None:
        if self.size_rounding not in SIZE_ROUNDINGS:
            raise ValueError(f"size_rounding must be one of {SIZE_ROUNDINGS}, got {self.size_rounding!r}")
        check_resize_order(self.resize_order)
        check_normalisation(self.normalisation)

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) the resize rule makes of a ``height`` x ``width`` picture: what every backend's
        pre-processing resizes it to, and what its detections are scaled back from."""
        return resized_size(height, width, self.min_size, self.max_size, self.keep_ratio, self.size_rounding)

    def padded_frame(self, height: Any, width: Any) -> tuple[Any, Any]:
        """The (h, w) an image of ``height`` x ``width`` is padded to when alone: the next multiple of
        ``size_divisible``, and at least the ``max_size`` square when ``pad_to_square``. Python ints, or traced
        0-d int64 tensors (the exported graph's ``image_size``)."""
        return padded_frame(height, width, self.size_divisible, self.max_size if self.pad_to_square else None)

    def pad_fill(self) -> tuple[float, ...]:
        """The padding's value per channel after normalisation: ``pad_value`` normalised in the spec's arithmetic,
        or zeros."""
        return normalised_fill(self.mean, self.std, self.pad_value, self.normalisation)

    def canvas(self, batch: int, height: int, width: int, device: Any = "cpu") -> torch.Tensor:
        """A [batch,3,height,width] float32 batch filled with the padding (images are then copied in)."""
        return filled_batch(self.pad_fill(), batch, height, width, device)

    @classmethod
    def of_transform(cls, transform: Any) -> InputSpec:
        """The settings of a torchvision `GeneralizedRCNNTransform` (the resize rule instaseg shares); its
        ``fixed_size`` is the stretched square."""
        min_size = transform.min_size[-1] if isinstance(transform.min_size, (tuple, list)) else transform.min_size
        return cls(
            min_size=int(min_size),
            max_size=int(transform.max_size),
            mean=tuple(float(v) for v in transform.image_mean),
            std=tuple(float(v) for v in transform.image_std),
            size_divisible=int(transform.size_divisible),
            keep_ratio=transform.fixed_size is None,
            pad_to_square=bool(getattr(transform, "pad_to_square", False)),
            pad_value=getattr(transform, "pad_value", None),
            size_rounding=getattr(transform, "size_rounding", "floor"),
            resize_order=getattr(transform, "resize_order", "float"),
            normalisation=getattr(transform, "normalisation", "unit"),
        )


def resize_transform(
    min_size: int,
    max_size: int,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    pad_to_square: bool = False,
    pad_value: float | None = None,
    size_rounding: str = "floor",
    resize_order: str = "float",
    normalisation: str = "unit",
    size_divisible: int = 32,
) -> nn.Module:
    """torchvision's `GeneralizedRCNNTransform` with the resize rule every architecture shares: resize by
    ``min_size``/``max_size``, normalise by ``mean``/``std`` on [0, 1] RGB, zero-pad to a multiple of
    ``size_divisible`` (32; 1 pads only a batch's smaller pictures to its largest); it resizes
    training targets alike. `TransformDetector` keeps it as ``self.transform``. ``pad_to_square`` and
    ``pad_value``: pad to a ``max_size`` canvas at least, with that pixel value; ``size_rounding``: "round" sizes
    sides half up instead of torchvision's floor; ``resize_order``: a ``uint8_*`` one resizes the uint8 picture by
    OpenCV before normalising; ``normalisation``: the float32 arithmetic of the normalisation (see `InputSpec`)."""
    # imported here: torchvision's detection package costs about a second, which exported-model users never need
    plain = size_rounding == "floor" and resize_order == "float" and normalisation == "unit"
    if pad_to_square or pad_value is not None or not plain:
        from instaseg.models.canvas import CanvasTransform

        return CanvasTransform(
            min_size, max_size, list(mean), list(std), pad_to_square, pad_value, size_rounding, resize_order,
            normalisation, size_divisible,
        )  # fmt: skip
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    return GeneralizedRCNNTransform(min_size, max_size, list(mean), list(std), size_divisible=size_divisible)


class RawOutput(NamedTuple):
    """One image's detections before post-processing, in the network-input frame (the resized image).

    boxes [N,4] xyxy float, clipped to the image's (h, w); scores [N]; labels [N] int64 in 1..K; masks float
    probabilities in [0, 1] (logits when the detector says ``mask_logits``), [N,M,M] per box or [N,H/S,W/S] over
    the padded input (see ``mask_stride``).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor


def padded_size(size: int, stride: int) -> int:
    """``size`` rounded up to a multiple of ``stride`` (the padding the pre-processing applies)."""
    return -(-int(size) // stride) * stride


def pad_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Target masks [N,h,w] zero-padded (bottom, right) to the padded batch size, as the images are padded."""
    h, w = masks.shape[-2:]
    return F.pad(masks, (0, size[1] - w, 0, size[0] - h)) if (h, w) != tuple(size) else masks


def clip_boxes(boxes: torch.Tensor, height: Any, width: Any) -> torch.Tensor:
    """xyxy boxes clipped to [0, width] x [0, height]; the size may be Python numbers or (traced) 0-d tensors."""
    if isinstance(height, torch.Tensor):
        limit = torch.stack([width, height, width, height]).to(boxes.dtype)
    else:
        limit = boxes.new_tensor([width, height, width, height])
    return torch.minimum(boxes.clamp(min=0), limit)


# the OpenVINO operations that INT8 speeds up: their inputs (activations and weights) are quantized
COMPUTE_OPS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")
PRESETS = ("performance", "mixed")
RANGE_ESTIMATORS = ("minmax", "extremes", "quantile")


@dataclass(frozen=True)
class QuantizationSettings:
    """How INT8 post-training quantization (NNCF on the exported OpenVINO graph) treats an architecture.

    ``quantized_ops``: the OpenVINO operation types whose inputs are quantized; every other operation stays in
    float. The default, convolutions and matrix products, is where the time goes; left to itself NNCF also
    quantizes the inputs of element-wise arithmetic, comparisons and resizes, which in a detector's graph compute
    box coordinates, scores and mask logits from each other, where 256 levels are too coarse.
    ``float_patterns``: regular expressions matched against node names (the exported graph's, e.g.
    ``/model/roi_heads/mask_head/.*``) of operations kept in float even if their type is quantized.
    ``float_computed_products``: products whose two operands are both computed from the picture (per-instance
    mask kernels or coefficients applied to shared mask features, query-feature products) stay in float; the mask
    logits come straight out of them and their operands' ranges change with every picture and instance.
    ``preset``: "performance" (symmetric activation ranges) or "mixed" (asymmetric: activations whose range is
    not centred on zero, such as after a ReLU-free activation, keep their resolution).
    ``transformer``: NNCF's transformer model type (attention-aware patterns); ``smooth_quant``: SmoothQuant's
    alpha for matrix products under it, None for off.
    ``range_estimator``: how the calibration pictures set an activation's range. "minmax" is NNCF's default, and
    not the pictures' extremes: a per-tensor range is the MEAN over the pictures of each picture's min and max
    (per-channel ranges and weights take the extremes), so a picture that drives a layer far past the usual
    range saturates there. "extremes": the lowest and highest value over all pictures. "quantile": the mean of
    each picture's 0.01% and 99.99% quantiles, so rare outliers within a picture do not widen the step either.
    Measured (`bench/int8_activation_ranges.py`): an under-trained PP-YOLOE-seg whose fp32 stride-32 path ran
    20-80x past its usual range on about one picture in seven, scoring false objects up to 0.997, went from 14.0
    mask AP in fp32 to 25.6 in INT8 with "minmax", and to 14.1 with "extremes" (an RTMDet-Ins: 71.3 -> 73.4 and
    70.5).
    ``picture_range``: the quantizer on the picture input covers every value a pre-processed picture can hold
    (black and white pixels normalised, and the padding) instead of the calibrated range, which clips every pixel
    brighter than the calibration pictures' mean maximum (0.859, grey level 219, on the demo's shapes). With a
    plain ``/ 255`` normalisation its step is then one grey level: a picture at the network's size enters the INT8
    graph unchanged.
    ``why``: the measurement that chose these values, carried into the export report.
    """

    quantized_ops: tuple[str, ...] = COMPUTE_OPS
    float_patterns: tuple[str, ...] = ()
    float_computed_products: bool = False
    preset: str = "performance"
    transformer: bool = False
    smooth_quant: float | None = None
    range_estimator: str = "minmax"
    picture_range: bool = False
    why: str = ""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if self.range_estimator not in RANGE_ESTIMATORS:
            raise ValueError(f"range_estimator must be one of {RANGE_ESTIMATORS}, got {self.range_estimator!r}")
        if self.smooth_quant is not None and not self.transformer:
            raise ValueError("smooth_quant applies to the transformer model type only")


class Detector(nn.Module):
    """Base class of every architecture; see the module notes for the contract."""

    mask_stride: int | None = None
    mask_logits: bool = False
    mask_box_crop: bool = True
    mask_paste: str = "torchvision"
    mask_resample: str = "direct"
    quantization: QuantizationSettings = QuantizationSettings()

    @property
    def input_spec(self) -> InputSpec:
        raise NotImplementedError(f"{type(self).__name__} does not state its input_spec")

    def raw_forward(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawOutput]:
        raise NotImplementedError(f"{type(self).__name__} does not implement raw_forward")

    def export_forward(self, images: torch.Tensor, image_size: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.raw_forward(images, [(image_size[0], image_size[1])])[0])

    def make_outputs_busy(self) -> None:
        """Nothing to do unless the architecture says otherwise."""

    def set_resize_rule(self, keep_ratio: bool) -> None:
        """Keep the aspect ratio (the default) or stretch to a square. A detector that pre-processes with
        torchvision's `GeneralizedRCNNTransform` (``self.transform``) stretches by its ``fixed_size`` (width,
        height); any other says it cannot."""
        transform = getattr(self, "transform", None)
        if transform is None or not hasattr(transform, "fixed_size"):
            if not keep_ratio:
                raise NotImplementedError(f"{type(self).__name__} cannot stretch its input (input.resize: stretch)")
            return
        side = int(transform.max_size)
        transform.fixed_size = None if keep_ratio else (side, side)

    def keep_training_sizes(self) -> None:
        """Training images arrive resized (by the engine's data pipeline): the detector keeps their sizes. For
        torchvision's transform that is its own ``_skip_resize`` switch: in training it normalises and pads only."""
        transform = getattr(self, "transform", None)
        if transform is not None and hasattr(transform, "_skip_resize"):
            transform._skip_resize = True


class TransformDetector(Detector):
    """A Detector that pre-processes with torchvision's `GeneralizedRCNNTransform` (``self.transform``, which
    resizes, normalises and pads images and targets alike) and computes its training losses in
    ``losses(batch, targets)``. Its eval-mode ``forward`` gives torchvision-style outputs in each image's own
    pixels (``full_size``), for tests and for users who call the module directly."""

    transform: nn.Module

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.of_transform(self.transform)

    def losses(self, batch: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} does not implement losses")

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None) -> Any:
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, targets = self.transform(images, targets)
        if self.training:
            return self.losses(image_list.tensors, targets)
        raw = self.raw_forward(image_list.tensors, image_list.image_sizes)
        sizes = zip(raw, image_list.image_sizes, original_sizes, strict=True)
        return [self.full_size(out, tuple(in_size), size) for out, in_size, size in sizes]

    def full_size(self, out: RawOutput, input_size: tuple[int, int], image_size: tuple[int, int]) -> dict:
        """One raw output in the original image: boxes scaled, the image-frame masks [N,1,H,W] resampled in one
        bilinear step (output pixel centres mapped through the resize, the shared post-processing's geometry), as
        probabilities (logits are resampled first, then turned into probabilities)."""
        (in_h, in_w), (h, w) = input_size, image_size
        ratio = out.boxes.new_tensor([w / in_w, h / in_h, w / in_w, h / in_h])
        if out.masks.shape[0] == 0:
            masks = out.masks.new_zeros((0, 1, h, w))
        else:
            stride = int(self.mask_stride)
            scale = (stride * h / in_h, stride * w / in_w)
            # one replicated row and column: the output size is floor(size x scale), and a product that should be
            # exactly h (e.g. 200 x 4 x 230 / 800) can round to h - 1; border values are what the edge holds anyway
            padded = F.pad(out.masks[:, None], (0, 1, 0, 1), mode="replicate")
            masks = F.interpolate(padded, scale_factor=scale, mode="bilinear", align_corners=False)
            masks = masks[..., :h, :w].sigmoid() if self.mask_logits else masks[..., :h, :w]
        return {"boxes": out.boxes * ratio, "labels": out.labels, "scores": out.scores, "masks": masks}


def _no_copy(name: str) -> str | None:
    return None


def _unchanged(name: str, tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@dataclass(frozen=True)
class KeyMap:
    """How a publisher's tensor names become ours (`instaseg.models.weights.convert` applies a map and checks that
    every published tensor is used and none of ours in ``scope`` is left unset).

    ``rename(name)``: our name for a published tensor, or None for one that is not part of our model (a classifier
    head, a data pre-processor's buffers: listed, not loaded). ``copy_of(name)``: the published tensor that ``name``
    is a stored copy of (checked equal, then dropped), or None. ``adapt(our_name, tensor)``: the tensor as our module
    holds it (a channel order flipped, a matrix transposed). ``prepare(state)``: the whole published state rewritten
    first, where tensors must be merged or split. ``scope``: the prefix (or prefixes) of our names the file must
    fill (empty: the whole model; ``"backbone."`` for an ImageNet backbone). ``keep``: endings of our names that
    the file does not hold (a training counter, a parameter its model did not have), kept as the model was built.
    """

    rename: Callable[[str], str | None]
    copy_of: Callable[[str], str | None] = _no_copy
    adapt: Callable[[str, torch.Tensor], torch.Tensor] = _unchanged
    prepare: Callable[[dict], dict] | None = None
    scope: str | tuple[str, ...] = ""
    keep: tuple[str, ...] = ()


@dataclass(frozen=True)
class PublishedWeights:
    """Weights a publisher released for one of our models, and how to read them.

    ``name``: the publisher's name for them, which ``--weights NAME`` also accepts; ``config``: the publisher's
    config they were trained with (the name when empty). ``kind``: "coco" (the
    whole detector) or "imagenet" (its backbone). ``model``: the model-section values they need (e.g.
    ``{"backbone": "cspnext_s"}``): a recipe whose model section has them can start from these weights. ``format``:
    "torch" (a ``torch.save`` file) or "paddle" (a ``.pdparams`` file). ``recipe``: our recipe that follows the config
    they were trained with. ``num_classes``: the classes of the file's class-dependent layers. Metrics are the
    publisher's (COCO val2017 AP, ImageNet top-1 accuracy), never measured here.
    """

    name: str
    kind: str
    url: str
    publisher: str
    format: str
    model: dict[str, Any]
    key_map: KeyMap
    recipe: str
    num_classes: int = 80
    mask_ap: float | None = None
    box_ap: float | None = None
    top1: float | None = None
    config: str = ""
    note: str = ""

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Architecture:
    """What an architecture package exports as ``ARCHITECTURE`` and the registry lists under its name.

    ``build(recipe, num_classes, download_backbone, freeze) -> Detector``: random init, or an ImageNet backbone
    when ``download_backbone``; ``freeze`` stops gradients in the first backbone stages (pretrained starts).
    ``model_defaults``: every key of the recipe's model section, with its default (and so its type).
    ``validate(model_section, source)``: value rules of a complete model section; raises UserError.
    ``recipe_defaults``: the other sections (input, train, eval) where this architecture's published recipe
    differs from `instaseg.config.DEFAULTS`, so its recipe files state only what differs from that, and under
    ``published.differences`` why its recipes keep the differences they share from their published configs.
    ``small_recipe``: the shipped recipe sized for CPUs (tests, demos, `bench/`); ``tiny_overrides`` shrink it
    further for the conformance suite (tests/test_conformance.py), which runs every registered architecture.
    ``anchor_keys``: for anchor-based models, the model keys of (sizes, aspect ratios): sizes one list per
    pyramid level, finest first, ratios h / w shared by every level (torchvision's `AnchorGenerator`); training
    fits them to the data (`instaseg.engine.auto_config`). ``candidate_keys``: model keys counting candidates
    kept before the final detections (proposals, queries, pre-NMS boxes) -> the least multiple of detections per
    image each must be, so raising ``eval.max_dets`` for crowded images is not undone upstream. ``published``: the
    weights publishers released for its models (`PublishedWeights`), which ``--weights coco``, ``imagenet``, a
    publisher's name or a downloaded file load through `instaseg.models.weights`.
    """

    build: Callable[[dict, int, bool, bool], Detector]
    model_defaults: dict[str, Any]
    validate: Callable[[dict, str | None], None]
    small_recipe: str
    tiny_overrides: tuple[str, ...] = ()
    recipe_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    anchor_keys: tuple[str, str] | None = None
    candidate_keys: dict[str, float] = field(default_factory=dict)
    published: tuple[PublishedWeights, ...] = ()
