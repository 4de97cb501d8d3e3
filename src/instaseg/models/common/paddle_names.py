"""How Paddle stores what torch stores otherwise: the conventions every PaddleDetection / PaddleClas state dict
shares, for the architectures' key maps (``published.py``).

- BatchNorm statistics are ``_mean`` / ``_variance`` (torch: ``running_mean`` / ``running_var``);
- ``nn.Linear`` weights are stored [in, out] (torch: [out, in]); ``nn.Embedding`` tables are [num, dim] in both;
- ``nn.MultiHeadAttention`` keeps one ``in_proj_weight`` [D, 3D] and ``in_proj_bias`` [3D] (query, key, value
  side by side) where ours has three projections;
- a scalar parameter is stored with shape [1].
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch

Rule = tuple[str, str | Callable[[re.Match], str]]


def batch_norm(name: str) -> str:
    """A Paddle BatchNorm statistic's torch name (other names come back unchanged)."""
    return re.sub(r"\._mean$", ".running_mean", re.sub(r"\._variance$", ".running_var", name))


def first_rule(rules: Iterable[Rule], name: str) -> str:
    """``name`` rewritten by the first rule whose pattern it matches (unchanged when none does)."""
    for pattern, ours in rules:
        renamed, n = re.subn(pattern, ours, name)
        if n:
            return renamed
    return name


def split_attention(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Paddle's joint ``in_proj_weight`` / ``in_proj_bias`` split into ``q_proj``, ``k_proj``, ``v_proj`` (still in
    Paddle's [in, out] layout, so that `torch_linear` transposes them with the other linear layers)."""
    out = {}
    for name, tensor in state.items():
        base, _, last = name.rpartition(".")
        if last == "in_proj_weight":
            out.update({f"{base}.{p}_proj.weight": t for p, t in zip("qkv", tensor.chunk(3, dim=1), strict=True)})
        elif last == "in_proj_bias":
            out.update({f"{base}.{p}_proj.bias": t for p, t in zip("qkv", tensor.chunk(3, dim=0), strict=True)})
        else:
            out[name] = tensor
    return out


def torch_linear(state: dict[str, torch.Tensor], embeddings: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Every 2-D ``.weight`` (a Paddle ``nn.Linear``, [in, out]) transposed to torch's [out, in], except the
    embedding tables whose names end with one of ``embeddings``."""
    return {
        name: tensor.t() if tensor.dim() == 2 and name.endswith(".weight") and not name.endswith(embeddings) else tensor
        for name, tensor in state.items()
    }


def scalars(state: dict[str, torch.Tensor], suffix: str) -> dict[str, torch.Tensor]:
    """The [1]-shaped parameters whose names end with ``suffix`` as 0-d tensors (torch's scalar parameters)."""
    return {n: t.reshape(()) if n.endswith(suffix) and t.shape == (1,) else t for n, t in state.items()}


# where PaddleX and PaddleDetection publish: PaddleX's "trained model" files by PaddleX name, PaddleDetection's model
# zoo by config name, and the ImageNet backbones PaddleDetection's configs start from (``pretrain_weights``)
PADDLEX_URL = "https://paddle-model-ecology.bj.bcebos.com/paddlex/official_pretrained_model/{}_pretrained.pdparams"
PADDLEDET_URL = "https://paddledet.bj.bcebos.com/models/{}.pdparams"
PADDLEDET_PRETRAINED_URL = "https://paddledet.bj.bcebos.com/models/pretrained/{}.pdparams"


def rows_first(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """``tensor`` with ``rows`` zero rows before its first row: a slot the file has no values for (torchvision's
    background class in a class-wise box regressor or mask predictor, which inference never reads)."""
    return torch.cat([tensor.new_zeros((rows, *tensor.shape[1:])), tensor])


def last_row_first(tensor: torch.Tensor) -> torch.Tensor:
    """The last row moved to the front (Paddle's classifiers put the background class last, torchvision's first)."""
    return torch.cat([tensor[-1:], tensor[:-1]])
