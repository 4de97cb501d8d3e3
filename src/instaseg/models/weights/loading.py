"""Loading weights into a detector: torchvision's COCO checkpoints, and files (instaseg checkpoints, Lightning
.ckpt files, plain state_dicts).

Tensors whose shape does not fit the model (the class-count-dependent predictor layers when the class count
differs) are left at their fresh initialisation and reported.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from instaseg.errors import UserError
from instaseg.models.checkpoint import read_torch_file
from instaseg.models.weights.download import download_guard

log = logging.getLogger("instaseg")


def load_coco_weights(model: nn.Module, weight_name: str | None, recipe_name: str) -> dict:
    """Load a torchvision COCO checkpoint (a weight enum name such as ``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``)."""
    from torchvision.models import get_weight

    if not weight_name:
        raise UserError(
            f"no COCO-pretrained weights are published for recipe {recipe_name!r}; use --weights imagenet or a PATH",
            record="weights",
        )
    weights = get_weight(weight_name)
    with download_guard(weights.url):
        state = weights.get_state_dict(progress=True)
    return load_matching(model, state, source=weight_name)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights in an instaseg checkpoint, a Lightning .ckpt or a plain state_dict file."""
    obj = read_torch_file(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("instaseg"), Mapping):
        obj = obj["instaseg"].get("model_state_dict")
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = _strip_prefix(obj["state_dict"], "model.")  # a Lightning checkpoint of a module holding `model`
    elif isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]  # the {"model": state_dict, ...} layout of torchvision's reference scripts
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError("not a checkpoint or state_dict of tensors", path)
    return dict(obj)


def _strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def load_matching(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> dict:
    """Copy the tensors of `state` whose name and shape match the model; report what was left out.

    Returns {"loaded": n, "reinitialised": [names with a different shape], "missing": [...], "unexpected": [...]}.
    """
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    report = {
        "source": source,
        "loaded": len(fitting),
        "reinitialised": sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape),
        "missing": sorted(k for k in own if k not in state),
        "unexpected": sorted(k for k in state if k not in own),
    }
    if not fitting:
        raise UserError("no tensor in these weights matches the model (another architecture or backbone?)", source)
    model.load_state_dict(fitting, strict=False)
    if report["reinitialised"]:
        log.warning("%s: re-initialised %s (shape differs, e.g. another class count)", source, report["reinitialised"])
    # FrozenBatchNorm has no num_batches_tracked; such keys are harmless on either side
    real_missing = [k for k in report["missing"] if not k.endswith("num_batches_tracked")]
    if real_missing:
        log.warning("%s: %d model tensors not in the weights, left as initialised", source, len(real_missing))
    return report


def load_weights_file(model: nn.Module, path: str | Path) -> dict:
    """Initialise `model` from a checkpoint / state_dict file, adapting the class-count-dependent layers."""
    return load_matching(model, read_state_dict(path), source=str(path))
