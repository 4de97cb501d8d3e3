"""A publisher's tensors renamed into ours by an architecture's `KeyMap`, with the proof that nothing was lost.

Every published tensor is either loaded into one of ours, recognised as a stored copy of another (checked
equal), dropped because the map says it is no part of our model (a classifier head), or a BatchNorm counter our
frozen BatchNorm does not keep. Every tensor of ours inside the map's scope must be set, at the shape ours has
for the file's class count. Anything else is a problem, and a file with problems is not loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from instaseg.models.detector import KeyMap

COUNTER = "num_batches_tracked"


@dataclass
class Conversion:
    """The state for our model, and what happened to every published tensor."""

    state: dict[str, torch.Tensor] = field(default_factory=dict)
    copies: list[str] = field(default_factory=list)  # stored copies, checked equal to what they copy
    dropped: list[str] = field(default_factory=list)  # no part of our model, by the map
    counters: list[str] = field(default_factory=list)  # BatchNorm counters ours does not keep
    unplaced: list[str] = field(default_factory=list)  # published tensors with no place in ours
    mismatched: list[str] = field(default_factory=list)  # placed, but of another shape or value
    unset: list[str] = field(default_factory=list)  # ours in scope that nothing set

    def problem(self) -> str | None:
        """None when the file fills the model completely; else what is wrong, in one line."""
        parts = []
        for what, names in (
            ("of the file's tensors have no place in the model", self.unplaced),
            ("do not fit", self.mismatched),
            ("of the model's tensors are not in the file", self.unset),
        ):
            if names:
                parts.append(f"{len(names)} {what} (e.g. {names[0]})")
        return "; ".join(parts) or None

    def summary(self) -> str:
        return (
            f"{len(self.state)} tensors loaded, {len(self.copies)} stored copies checked, {len(self.dropped)} not "
            f"part of the model, {len(self.counters)} BatchNorm counters not kept"
        )


def _values_differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors differ; tensors without data (shapes only, on the meta device) never do."""
    if a.shape != b.shape:
        return True
    if a.device.type == "meta" or b.device.type == "meta":
        return False
    return not torch.equal(a, b)


def convert(published: Mapping[str, torch.Tensor], ours: Mapping[str, torch.Tensor], key_map: KeyMap) -> Conversion:
    """``published`` renamed into ``ours`` (a state_dict, or its shapes on the meta device, of our model built for
    the file's class count) by ``key_map``; see `Conversion`."""
    state = key_map.prepare(dict(published)) if key_map.prepare else dict(published)
    out = Conversion()
    misfits = set()  # ours that a tensor of another shape was meant for: reported once, as mismatched
    for name, tensor in state.items():
        original = key_map.copy_of(name)
        if original is not None:
            if original not in state or _values_differ(state[original], tensor):
                out.mismatched.append(f"{name} (a stored copy of {original} that differs from it)")
            else:
                out.copies.append(name)
            continue
        target = key_map.rename(name)
        if target is None:
            out.dropped.append(name)
        elif target not in ours:
            (out.counters if name.endswith(COUNTER) else out.unplaced).append(name)
        elif tuple(ours[target].shape) != tuple(tensor.shape):
            out.mismatched.append(f"{name} is {tuple(tensor.shape)}, the model's {target} {tuple(ours[target].shape)}")
            misfits.add(target)
        else:
            out.state[target] = key_map.adapt(target, tensor).to(ours[target].dtype)
    done = set(out.state) | misfits
    out.unset = [k for k in ours if k.startswith(key_map.scope) and k not in done and not k.endswith(COUNTER)]
    return out
