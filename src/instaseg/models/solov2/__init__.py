"""SOLOv2 (Wang et al., "SOLOv2: Dynamic and Fast Instance Segmentation", NeurIPS 2020): segmenting objects by
location. Each cell of an S x S grid on each pyramid level predicts a class and a dynamic 1x1 kernel; the kernel,
applied to one shared stride-4 mask feature, gives that cell's object mask over the whole image, so masks are not
cut to a box-relative grid. Matrix NMS removes duplicates in one matrix product."""

from __future__ import annotations

from instaseg.models.detector import Architecture
from instaseg.models.solov2.build import build
from instaseg.models.solov2.published import PUBLISHED
from instaseg.models.solov2.recipe import DEFAULTS, RECIPE_DEFAULTS, validate

__all__ = ["ARCHITECTURE"]

ARCHITECTURE = Architecture(
    build=build,
    model_defaults=DEFAULTS,
    validate=validate,
    small_recipe="solov2_fast",
    candidate_keys={"nms_pre": 2.0, "max_candidates": 2.0},  # candidates, as multiples of eval.max_dets
    tiny_overrides=(
        # the conformance suite's 96 px pictures hold 12-30 px shapes: ranges and grids scaled to that size
        "model.scale_ranges=[[1, 16], [8, 32], [16, 64], [32, 128], [64, 256]]",
        "model.num_grids=[12, 10, 8, 6, 4]",
    ),
    recipe_defaults=RECIPE_DEFAULTS,
    published=PUBLISHED,
)
