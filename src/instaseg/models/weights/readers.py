"""Reading publishers' weight files without running anything they contain.

- ``torch.save`` files (MMDetection, mmpretrain, torchvision): ``torch.load(weights_only=True)``, which builds
  tensors and plain containers only. What a publisher's metadata holds beyond that (mmengine's message hub, numpy
  arrays, config objects) is dropped, not executed: every global of the file's pickle is listed first; those of
  the publishers' own packages and numpy are mapped onto `Dropped`, an inert stand-in that is never called with
  the original's code, and a global of anything else (``os.system``, ``builtins.eval``...) refuses the file.
- Paddle ``.pdparams`` files: a pickle of ``{name: numpy array}``, read by an unpickler that knows four globals
  (building an array, a dtype, bytes) and refuses everything else, without Paddle.

A refused, truncated or unreadable file is a UserError in one line that names it.
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from instaseg.errors import UserError

# packages whose objects a publisher's metadata may hold: read as `Dropped`, never imported or called
METADATA_PACKAGES = ("mmengine", "mmcv", "mmdet", "mmpretrain", "mmcls", "numpy")
# globals torch's weights_only unpickler decides on itself (tensors, storages, plain containers)
TORCH_DECIDES = ("torch", "collections", "builtins", "_codecs", "copyreg")
TRUNCATED = "the file ends early (truncated, or still being written)"


class Dropped:
    """What a metadata object of a publisher's file becomes: it accepts any arguments and state and keeps none."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Dropped:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return "<dropped>"


def _attribute_of_dropped(obj: Any, name: str) -> Dropped:
    """``getattr`` as a publisher's metadata uses it (mmengine's HistoryBuffer pickles its statistics methods as
    getattr(buffer, "mean")): allowed on a dropped object only, where it yields another dropped object."""
    if not isinstance(obj, Dropped) and obj is not Dropped:
        raise pickle.UnpicklingError(f"getattr on a {type(obj).__name__}, not on dropped metadata")
    return Dropped()


GETATTR = ("__builtin__.getattr", "builtins.getattr")  # protocol 2 writes Python 3's builtins as __builtin__


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _globals_of(stream: io.BufferedIOBase, pickles: int) -> list[str]:
    """The globals the next ``pickles`` pickles of ``stream`` name (GLOBAL, INST, STACK_GLOBAL), in order."""
    found: list[str] = []
    for _ in range(pickles):
        strings: list[str] = []  # strings pushed so far: STACK_GLOBAL takes the last two
        memo: dict[int, str | None] = {}
        last: str | None = None  # the string the previous opcode pushed, if it pushed one
        for op, arg, _pos in pickletools.genops(stream):
            pushed = None
            if op.name in ("GLOBAL", "INST"):
                found.append(".".join(str(arg).split(" ", 1)))
            elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                pushed = str(arg)
            elif op.name == "MEMOIZE":
                memo[len(memo)] = last
            elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = last
            elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                pushed = memo.get(int(arg))
            elif op.name == "STACK_GLOBAL":
                found.append(".".join(strings[-2:]) if len(strings) >= 2 else "<unknown global>")
            elif op.name.startswith("EXT"):
                found.append("<extension registry>")
            if pushed is not None:
                strings.append(pushed)
            last = pushed if op.name not in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT") else last
    return found


def pickle_globals(path: Path) -> list[str]:
    """Every global a ``torch.save`` file's pickle names (the zip format's data.pkl, or the legacy format's
    header and object pickles); UserError for a file that is not one or ends early."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    raise UserError("not a torch.save file (a zip archive without data.pkl)", path)
                return _globals_of(io.BytesIO(archive.read(name)), 1)
        with open(path, "rb") as f:
            return _globals_of(f, 4)  # magic number, protocol, system info, then the object itself
    except (ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        what = TRUNCATED if "exhausted" in first or isinstance(e, EOFError) else f"unreadable: {first[:120]}"
        raise UserError(f"corrupt weights file: {what}", path) from None


def read_torch_file(path: str | Path) -> Any:
    """A ``torch.save`` file loaded with weights_only=True, the publisher's metadata objects dropped."""
    path = Path(path)
    _check_exists(path)
    names = sorted(set(pickle_globals(path)))
    undecided = [n for n in names if _top(n) not in TORCH_DECIDES and n not in GETATTR]
    code = [n for n in undecided if _top(n) not in METADATA_PACKAGES]
    if code:
        raise UserError(f"refused: loading it would call {code[0]}, which is not data (a pickle that runs code)", path)
    allowed = [(Dropped, n) for n in undecided]
    if any(n in GETATTR for n in names):
        allowed.append((_attribute_of_dropped, "builtins.getattr"))  # torch reads __builtin__ as builtins
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(allowed):
            warnings.simplefilter("ignore")  # torch's remarks on legacy files say nothing to a user
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        said = [ln for ln in lines if ln.startswith(("Unsupported", "Trying to", "Can only")) or "GLOBAL" in ln]
        why = (said[0] if said else lines[0] if lines else type(e).__name__)[:160]
        raise UserError(f"refused: holds objects weights_only=True does not build ({why})", path) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        what = TRUNCATED if isinstance(e, EOFError) or "central directory" in first else first[:160]
        raise UserError(f"corrupt weights file: {what}", path) from None


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise UserError("weights file not found", path)
    if path.stat().st_size == 0:
        raise UserError("empty weights file (0 bytes)", path)


# ---------------------------------------------------------------- Paddle
class UnsafePaddleFile(pickle.UnpicklingError):
    """A .pdparams file that asks for something other than arrays and plain containers."""


def _array(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePaddleFile(f"an array of type {subtype!r}")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dtype = np.dtype(spec, align, copy)
    if dtype.hasobject:  # object arrays unpickle arbitrary objects inside them
        raise UnsafePaddleFile(f"an array of Python objects ({dtype})")
    return dtype


def _latin1(text: Any, encoding: str = "latin1") -> bytes:
    if not isinstance(text, str) or encoding.replace("-", "") != "latin1":
        raise UnsafePaddleFile("_codecs.encode used for something other than bytes")
    return text.encode("latin1")


PADDLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _array,
    ("numpy._core.multiarray", "_reconstruct"): _array,  # written under NumPy 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1,  # how protocol 2 pickles bytes
    ("collections", "OrderedDict"): collections.OrderedDict,
}
PADDLE_NAME_TABLE = "StructuredToParameterName@@"  # paddle.save's table of internal names: not a weight


class _PaddleUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in PADDLE_GLOBALS:
            raise UnsafePaddleFile(f"refused: it names {module}.{name}, which is not an array or a plain container")
        return PADDLE_GLOBALS[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePaddleFile("refused: persistent ids are no part of a .pdparams file")


def read_pdparams(path: str | Path) -> dict[str, torch.Tensor]:
    """{name: tensor} of a Paddle ``.pdparams`` file (paddle.save of a state dict), without Paddle."""
    path = Path(path)
    _check_exists(path)
    try:
        with open(path, "rb") as f:
            data = _PaddleUnpickler(f).load()
    except UnsafePaddleFile as e:
        raise UserError(str(e), path) from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        what = TRUNCATED if isinstance(e, EOFError) or "truncated" in str(e) else str(e).splitlines()[0][:160]
        raise UserError(f"corrupt .pdparams file: {what}", path) from None
    if not isinstance(data, Mapping):
        raise UserError(f"not a .pdparams state dict: it holds a {type(data).__name__}", path)
    state = {}
    for key, value in data.items():
        if key == PADDLE_NAME_TABLE:
            continue
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise UserError(f"not a .pdparams state dict: entry {key!r} is a {type(value).__name__}", path)
        state[key] = torch.from_numpy(np.ascontiguousarray(value))
    return state


# ---------------------------------------------------------------- either
def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors by the publisher's names, the file's class names if it states them) of a published file: a
    ``.pdparams`` file, or a ``torch.save`` file holding a ``state_dict`` (MMDetection, mmpretrain) or tensors."""
    path = Path(path)
    if path.suffix == ".pdparams":
        return read_pdparams(path), {}
    return publisher_state(read_torch_file(path), path)


def publisher_state(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """`read_weights` of an already loaded ``torch.save`` object (``path`` names it in errors)."""
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping) or not state:
        raise UserError("holds no state_dict of tensors", path)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(state):
        other = next(k for k, v in state.items() if not isinstance(v, torch.Tensor))
        raise UserError(f"its state_dict holds a {type(state[other]).__name__} at {other!r}, not a tensor", path)
    return tensors, {"class_names": _class_names(obj)}


def _class_names(obj: Any) -> list[str] | None:
    """The class names MMDetection records in a checkpoint's meta (3.x: dataset_meta.classes; 2.x: CLASSES)."""
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping):
        return None
    dataset = meta.get("dataset_meta")
    names = dataset.get("classes") if isinstance(dataset, Mapping) else meta.get("CLASSES")
    if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
        return list(names)
    return None
