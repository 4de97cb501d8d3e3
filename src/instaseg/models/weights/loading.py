"""Loading weights into a detector: torchvision's COCO checkpoints, publishers' files converted by the
architecture's key maps (`instaseg.models.weights.convert`), and files (instaseg checkpoints, Lightning .ckpt
files, plain state_dicts).

Tensors whose shape does not fit the model (the class-count-dependent predictor layers when the class count
differs) are left at their fresh initialisation and reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from instaseg.errors import UserError
from instaseg.models.detector import PublishedWeights
from instaseg.models.weights.convert import Conversion, convert
from instaseg.models.weights.download import download_guard
from instaseg.models.weights.published import by_name, describe
from instaseg.models.weights.readers import publisher_state, read_pdparams, read_torch_file

Shapes = Callable[[int], Mapping[str, torch.Tensor]]  # class count -> our model's state_dict (meta tensors)

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


@dataclass(frozen=True)
class WeightsFile:
    """A weights file read once (publishers' files weigh hundreds of MB), then seen either as a state_dict in our
    names or as its publisher's tensors."""

    path: Path
    content: Any  # the loaded torch.save object; a .pdparams file's tensors

    def own_state(self) -> dict[str, torch.Tensor]:
        """The model weights of an instaseg checkpoint, a Lightning .ckpt or a plain state_dict."""
        obj = self.content
        if self.path.suffix == ".pdparams":
            raise UserError("a Paddle file holds a publisher's names, not a checkpoint", self.path)
        if isinstance(obj, Mapping) and isinstance(obj.get("instaseg"), Mapping):
            obj = obj["instaseg"].get("model_state_dict")
        elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
            obj = _strip_prefix(obj["state_dict"], "model.")  # a Lightning checkpoint of a module holding `model`
        elif isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
            obj = obj["model"]  # the {"model": state_dict, ...} layout of torchvision's reference scripts
        if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise UserError("not a checkpoint or state_dict of tensors", self.path)
        return dict(obj)

    def publisher_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors by the publisher's names, the file's class names if it states them)."""
        if self.path.suffix == ".pdparams":
            return self.content, {}
        return publisher_state(self.content, self.path)


def open_weights(path: str | Path) -> WeightsFile:
    """Read a weights file (nothing in it is run: see `instaseg.models.weights.readers`)."""
    path = Path(path)
    return WeightsFile(path, read_pdparams(path) if path.suffix == ".pdparams" else read_torch_file(path))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights in an instaseg checkpoint, a Lightning .ckpt or a plain state_dict file."""
    return open_weights(path).own_state()


def _strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def load_matching(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str, scope: str | tuple[str, ...] = ""
) -> dict:
    """Copy the tensors of `state` whose name and shape match the model; report what was left out (of the
    model's tensors under ``scope``: "backbone." for a backbone's weights).

    Returns {"loaded": n, "reinitialised": [names with a different shape], "missing": [...], "unexpected": [...]}.
    """
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    report = {
        "source": source,
        "loaded": len(fitting),
        "reinitialised": sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape),
        "missing": sorted(k for k in own if k.startswith(scope) and k not in state),
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


def load_published(
    model: nn.Module, weights: PublishedWeights, file: Path | WeightsFile, shapes: Shapes, recipe: str
) -> dict:
    """Load a file of a publisher's ``weights`` into ``model``, converted by their key map. A file that does not fill
    the model (another model's, a damaged one) is a UserError naming it; another class count re-initialises the
    class layers, reported as for any file."""
    file = file if isinstance(file, WeightsFile) else open_weights(file)
    path = file.path
    tensors, info = file.publisher_tensors()
    conversion = _convert(weights, tensors, info, shapes)
    problem = conversion.problem()
    if problem:
        raise UserError(f"does not fit recipe {recipe} as {weights.publisher}'s {weights.name}: {problem}", path)
    return load_converted(model, conversion, weights, path)


def _convert(weights: PublishedWeights, tensors: dict, info: dict, shapes: Shapes) -> Conversion:
    """``tensors`` converted against our shapes for the file's class count (its metadata's, else the table's)."""
    classes = len(info.get("class_names") or []) or weights.num_classes
    return convert(tensors, shapes(classes if weights.kind == "coco" else 1), weights.key_map)


def load_converted(model: nn.Module, conversion: Conversion, weights: PublishedWeights, path: Path) -> dict:
    """Load a complete conversion; tensors our model ties together (one parameter under several names) must have
    received one value."""
    own = model.state_dict()
    first: dict[int, str] = {}
    for name, tensor in own.items():
        other = first.setdefault(tensor.untyped_storage().data_ptr(), name)
        both = other != name and name in conversion.state and other in conversion.state
        if both and not torch.equal(conversion.state[name], conversion.state[other]):
            raise UserError(f"{name} and {other} are one tensor in the model but differ in the file", path)
    kept = {k: v for k, v in own.items() if k.endswith(weights.key_map.keep) and k not in conversion.state}
    report = load_matching(model, {**kept, **conversion.state}, source=str(path), scope=weights.key_map.scope)
    report.update(kind=weights.kind, published=describe(weights), conversion=conversion.summary())
    log.info("%s: %s as %s (%s)", path, weights.kind, describe(weights), conversion.summary())
    return report


def load_weights_path(
    model: nn.Module,
    file: Path | WeightsFile,
    published: tuple[PublishedWeights, ...],
    candidates: list[PublishedWeights],
    shapes: Shapes,
    recipe: str,
) -> dict:
    """A weights file: an instaseg checkpoint or a state_dict in our names, else a publisher's file of this
    architecture, known by its file name (``published``) or converted completely by one of the ``candidates``
    (the published weights the recipe's model section can take), else by another of the architecture's maps."""
    file = file if isinstance(file, WeightsFile) else open_weights(file)
    path = file.path
    # known by its file name: the recipe's own entry first (one file may serve several model sections)
    named = by_name(candidates, path.name) or by_name(published, path.name)
    if named is not None:
        if named not in candidates:
            wanted = ", ".join(f"model.{k}={v}" for k, v in named.model.items())
            raise UserError(f"{named.publisher}'s {named.name} is for {wanted}; recipe {recipe} differs", path)
        return load_published(model, named, file, shapes, recipe)
    own = model.state_dict()
    try:
        state = file.own_state()
    except UserError:
        state = None  # not in our names: perhaps a publisher's file
    if state is not None and sum(k in state for k in own) >= 0.9 * len(own):
        return load_matching(model, state, source=str(path))
    # the recipe's own candidates first; then the architecture's other maps, for a model section no publisher
    # used (another backbone of the same design): only a complete conversion is accepted either way
    ordered = [*candidates, *(w for w in published if w not in candidates)]
    same_format = [w for w in ordered if (w.format == "paddle") == (path.suffix == ".pdparams")]
    if not same_format:
        return load_matching(model, state if state is not None else file.own_state(), source=str(path))
    tensors, info = file.publisher_tensors()
    tried = [(w, _convert(w, tensors, info, shapes)) for w in same_format]
    for weights, conversion in tried:
        if conversion.problem() is None:
            return load_converted(model, conversion, weights, path)
    weights, best = min(tried, key=lambda t: len(t[1].unplaced) + len(t[1].unset) + len(t[1].mismatched))
    raise UserError(f"not a checkpoint of recipe {recipe}, nor {weights.publisher}'s: {best.problem()}", path)
