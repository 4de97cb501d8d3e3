"""The predictor: inputs -> pre-processing -> backend -> post-processing -> Result, one image at a time.

One predictor serves every backend: a backend only maps a normalised, padded batch to low-resolution detections
(see `instaseg.inference.backends.torch.TorchBackend` for the interface), so accuracy and latency of exported
models are measured on the same code path users call. Each stage is timed apart in ``Predictor.timings``.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from instaseg.errors import UserError
from instaseg.inference.postprocess import CropDetections, Detections, RawDetections, postprocess_crops
from instaseg.inference.preprocess import InputSpec, preprocess
from instaseg.inference.result import Result
from instaseg.inference.sources import InputItem, iter_inputs
from instaseg.inference.tiling import TilingOptions, tiled_detect

DEFAULT_THRESHOLD = 0.5  # score below which instances are dropped; lower it (e.g. 0.05) for COCO AP
STAGES = ("read", "preprocess", "model", "postprocess")
ON_ERROR = ("skip", "raise")  # what `Predictor.predict` does with an unreadable image, besides a callable
logger = logging.getLogger(__name__)

# file suffix -> module providing `load(path, device) -> (backend, info)`
_BACKENDS = {
    ".ckpt": "instaseg.inference.backends.torch",
    ".pt": "instaseg.inference.backends.torch",
    ".pth": "instaseg.inference.backends.torch",
    ".onnx": "instaseg.inference.backends.onnxruntime",
    ".xml": "instaseg.inference.backends.openvino",
    ".engine": "instaseg.inference.backends.tensorrt",
}


class Backend(Protocol):
    """What a backend provides to the predictor."""

    name: str
    device: Any
    spec: InputSpec

    def __call__(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawDetections]: ...

    def synchronize(self) -> None: ...


class Predictor:
    """A loaded model ready to predict; create it with `instaseg.create_model`.

    ``timings`` maps each stage (read, preprocess, model, postprocess) to seconds per batch, accumulated over
    calls until `reset_timings`. ``skipped`` lists the (path, reason) of each image the last `predict` call
    skipped as unreadable (see its ``on_error``); it is reset when a call starts iterating.
    ``tiling``: how images larger than a tile are predicted (`instaseg.inference.tiling`): on overlapping
    tiles plus the whole image, merged; by default what the checkpoint's recipe recorded.
    """

    def __init__(
        self,
        backend: Backend,
        class_names: list[str],
        category_ids: list[int] | None = None,
        threshold: float | None = None,
        mask_threshold: float = 0.5,
        tiling: TilingOptions | None = None,
    ):
        self.backend = backend
        self.tiling = tiling or TilingOptions()
        self.class_names = list(class_names)
        self.category_ids = list(category_ids) if category_ids is not None else None
        self.threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        self.mask_threshold = mask_threshold
        self.timings: dict[str, list[float]] = defaultdict(list)
        self.skipped: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return (
            f"Predictor({self.backend.name} on {self.backend.device}, {len(self.class_names)} classes, "
            f"threshold {self.threshold}, input {self.backend.spec.min_size}/{self.backend.spec.max_size})"
        )

    def reset_timings(self) -> None:
        self.timings = defaultdict(list)

    def timing_summary(self) -> dict[str, dict[str, float]]:
        """Per stage: total seconds, mean seconds per batch, and share of the total over the timed stages."""
        totals = {s: float(np.sum(self.timings.get(s, []))) for s in STAGES}
        grand = sum(totals.values()) or 1.0
        return {
            s: {"total_s": totals[s], "mean_s": float(np.mean(self.timings[s])), "share": totals[s] / grand}
            for s in STAGES
            if self.timings.get(s)
        }

    def predict(
        self,
        inputs: Any,
        batch_size: int = 1,
        threshold: float | None = None,
        bgr: bool = False,
        on_error: str | Callable[[UserError], None] = "skip",
        tile: str | int | None = None,
    ) -> Iterator[Result]:
        """Yield one Result per image, lazily, in input order.

        ``inputs``: a path to an image or video file (one Result per frame, with ``frame_index``), a folder
        (its images, recursively), a glob pattern, a numpy array HxWx3 uint8 (RGB; pass ``bgr=True`` for arrays
        from OpenCV such as ``cv2.imread``), a PIL image, or a list mixing these. Images are read only when
        their batch is due, so a folder of any size streams in constant memory.
        ``threshold`` overrides the predictor's score threshold for this call.
        ``on_error``: what a corrupt or unreadable image does. "skip" (default): a warning naming the file and the
        reason is logged (logger ``instaseg.inference.predictor``) and the image skipped, the rest go on. "raise":
        its UserError stops the call. A callable: it is called with the UserError (no warning) and the image
        skipped. Skipped images are listed in ``self.skipped`` as (path, reason). Missing inputs (a path or glob
        that names nothing) raise UserError whatever ``on_error`` says.
        ``tile``: "auto" or None (the predictor's ``tiling``), "off", or a tile size in pixels.
        """
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        if not (callable(on_error) or on_error in ON_ERROR):
            raise ValueError(f"on_error must be 'skip', 'raise' or a callable, got {on_error!r}")
        self.skipped = []
        threshold = self.threshold if threshold is None else float(threshold)
        tiling = self.tiling.choose(tile)
        batch: list[tuple[InputItem, np.ndarray]] = []
        items = iter_inputs(inputs, bgr=bgr)
        while True:
            start = time.perf_counter()  # video frames are decoded while the item is fetched: time both
            item = next(items, None)
            if item is None:
                break
            image = self._read(item, on_error, start)
            if image is None:
                continue
            batch.append((item, image))
            if len(batch) == batch_size:
                yield from self._run_batch(batch, threshold, tiling)
                batch = []
        if batch:
            yield from self._run_batch(batch, threshold, tiling)

    __call__ = predict

    def _read(self, item: InputItem, on_error: str | Callable[[UserError], None], start: float) -> np.ndarray | None:
        try:
            image = item.read()
        except UserError as e:
            if on_error == "raise":
                raise
            self.skipped.append((e.path or str(item.path or item.name), e.detail))
            if on_error == "skip":
                logger.warning("skipped %s", e)  # the error's text names the file, the record and the reason
            else:
                on_error(e)
            return None
        self.timings["read"].append(time.perf_counter() - start)
        return image

    def detect(
        self,
        images: list[np.ndarray | torch.Tensor],
        threshold: float | None = None,
        tiling: TilingOptions | None = None,
    ) -> list[Detections]:
        """The core of every prediction (and of validation and `instaseg eval`), timed stage by stage:
        pre-processing, the backend, post-processing. ``images``: HxWx3 uint8 RGB arrays, or [3,H,W] float tensors
        in [0, 1]; each image's detections come back in its own pixels, masks as compressed RLE. Images larger
        than a tile of ``tiling`` (default: the predictor's) are predicted tile by tile and merged."""
        threshold = self.threshold if threshold is None else float(threshold)
        tiling = tiling or self.tiling
        sizes = [_image_size(image) for image in images]
        whole = [i for i, size in enumerate(sizes) if not tiling.applies_to(*size)]
        found: dict[int, CropDetections] = {}
        if whole:
            crops = self._detect_crops([images[i] for i in whole], [sizes[i] for i in whole], threshold)
            found.update(zip(whole, crops, strict=True))
        for i, image in enumerate(images):
            if i not in found:
                spec = self.backend.spec
                run = lambda tiles, tile_sizes: self._detect_crops(tiles, tile_sizes, threshold)  # noqa: E731
                found[i] = tiled_detect(run, image, tiling, (spec.min_size, spec.max_size), spec.keep_ratio)
        start = time.perf_counter()
        detections = [found[i].to_detections(size) for i, size in enumerate(sizes)]
        if self.timings["postprocess"]:  # RLE encoding: part of the last batch's post-processing
            self.timings["postprocess"][-1] += time.perf_counter() - start
        return detections

    def _detect_crops(
        self, images: list[np.ndarray | torch.Tensor], out_sizes: list[tuple[int, int]], threshold: float
    ) -> list[CropDetections]:
        """Pre-processing, backend, post-processing up to per-box mask crops in each ``out_sizes`` frame."""
        start = time.perf_counter()
        tensor, sizes = preprocess(images, self.backend.spec, self.backend.device)
        self.backend.synchronize()
        self.timings["preprocess"].append(time.perf_counter() - start)

        start = time.perf_counter()
        raw = self.backend(tensor, sizes)
        self.backend.synchronize()
        self.timings["model"].append(time.perf_counter() - start)

        start = time.perf_counter()
        crops = [
            postprocess_crops(r, size, out, threshold, self.mask_threshold)
            for r, size, out in zip(raw, sizes, out_sizes, strict=True)
        ]
        self.timings["postprocess"].append(time.perf_counter() - start)
        return crops

    def _run_batch(
        self, batch: list[tuple[InputItem, np.ndarray]], threshold: float, tiling: TilingOptions
    ) -> Iterator[Result]:
        detections = self.detect([image for _, image in batch], threshold, tiling)
        for (item, image), det in zip(batch, detections, strict=True):
            yield Result(
                boxes=det.boxes,
                scores=det.scores,
                labels=det.labels,
                rles=det.rles,
                image_size=_image_size(image),
                class_names=self.class_names,
                category_ids=self.category_ids,
                input_path=item.path,
                frame_index=item.frame_index,
                name=item.name,
                image=item.image,  # kept for arrays and frames; files are read again if an overlay is asked for
            )


def _image_size(image: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """(h, w) of an HxWx3 array or a [3,H,W] tensor."""
    h, w = image.shape[-2:] if isinstance(image, torch.Tensor) else image.shape[:2]
    return int(h), int(w)


def create_model(
    name_or_path: str | Path,
    device: str = "cpu",
    threshold: float | None = None,
    mask_threshold: float = 0.5,
    amp: bool = False,
    tile: str | int | None = "auto",
) -> Predictor:
    """Load a checkpoint (.ckpt/.pt/.pth from instaseg training) or an exported model (.onnx, .xml, .engine) as a
    Predictor.

    ``device``: "cpu", "cuda", "cuda:1" or "auto". ``threshold``: score threshold (default 0.5); it filters the
    model's own output, so values below the recipe's ``eval.score_threshold`` (its box score cut) change nothing.
    ``amp``: a checkpoint on CUDA runs under fp16 autocast (an exported model's precision is in its file).
    ``tile``: "auto" (what the checkpoint's recipe or the export's metadata recorded: ``tiling.size``), "off",
    or a tile size in pixels; images larger than a tile are predicted on tiles plus the whole image, merged.
    """
    path = Path(name_or_path)
    if not path.is_file():
        raise UserError("model file not found", path)
    module_name = _BACKENDS.get(path.suffix.lower())
    if module_name is None:
        raise UserError(f"unknown model format {path.suffix!r} (expected one of {', '.join(_BACKENDS)})", path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise UserError(f"{path.suffix} models are not supported by this version of instaseg", path) from None
    if amp and not module_name.endswith(".torch"):
        raise UserError("amp applies to checkpoints; an exported model's precision was chosen at export", path)
    backend, info = module.load(path, device, amp=True) if amp else module.load(path, device)
    return Predictor(
        backend,
        class_names=info["class_names"],
        category_ids=info.get("category_ids"),
        threshold=threshold,
        mask_threshold=mask_threshold,
        tiling=TilingOptions.from_info(info).choose(tile),
    )
