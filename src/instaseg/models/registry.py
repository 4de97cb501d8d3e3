"""Model registry: architecture name -> its package, and nothing else.

Registering an architecture is one line in `ARCHITECTURES`: its name and the package that exports
``ARCHITECTURE`` (an `instaseg.models.detector.Architecture`: builder, model defaults, value rules, recipe
defaults). Its recipes (yaml) pick it by ``model.architecture``. Building a model from a recipe and loading weights
into it is `instaseg.models.factory`; everything else in instaseg (training, the predictor, export, the benchmark,
the conformance tests) then works through the `Detector` contract.
"""

from __future__ import annotations

import importlib

from instaseg.errors import UserError
from instaseg.models.detector import Architecture

__all__ = ["ARCHITECTURES", "architecture"]

# name -> package exporting ARCHITECTURE; imported on first use, so listing recipes pays only for what it lists
ARCHITECTURES: dict[str, str] = {
    "maskrcnn": "instaseg.models.maskrcnn",
    "cascade_maskrcnn": "instaseg.models.cascade",
    "rtmdet_ins": "instaseg.models.rtmdet_ins",
    "solov2": "instaseg.models.solov2",
    "mask_rtdetr": "instaseg.models.mask_rtdetr",
    "ppyoloe_seg": "instaseg.models.ppyoloe_seg",
}


def architecture(name: str, source: str | None = None) -> Architecture:
    """The `Architecture` registered under ``name``; a UserError (naming ``source``) for an unknown one."""
    if name not in ARCHITECTURES:
        raise UserError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}", source, "model")
    return importlib.import_module(ARCHITECTURES[name]).ARCHITECTURE
