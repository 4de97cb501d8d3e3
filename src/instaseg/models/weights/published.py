"""Published weights by name: which ones a recipe can start from, and their files, downloaded once into a cache.

An architecture lists what publishers released for its models (`Architecture.published`, each a
`PublishedWeights` with the model-section values it needs and its key map, in the architecture's ``published.py``).
A recipe can start from the weights whose values its model section has. Files are kept in
``$INSTASEG_CACHE/weights`` (default ``~/.cache/instaseg/weights``): downloaded there once, with a progress bar,
checked against the sha256 prefix OpenMMLab writes into its file names, and written atomically. Without network
the error names the address and where to put the file.
"""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from instaseg.errors import UserError
from instaseg.models.detector import PublishedWeights
from instaseg.utils.cache import cache_root
from instaseg.utils.io import atomic_write
from instaseg.utils.progress import progress_bar

KINDS = ("coco", "imagenet")
CHUNK = 1 << 20
TIMEOUT_S = 60
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8})\.\w+$")


def matching(
    published: Iterable[PublishedWeights], model_section: dict, recipe: str | None = None
) -> list[PublishedWeights]:
    """The published weights whose model-section values ``model_section`` has, in the architecture's order, those
    listed for ``recipe`` first (two recipes of one network with different conventions, as solov2_r50_fpn
    (MMDetection's) and solov2_r50_fpn_paddlex (PaddleDetection's), each take their own publisher's file first)."""
    found = [w for w in published if all(model_section.get(k) == v for k, v in w.model.items())]
    return sorted(found, key=lambda w: w.recipe != recipe) if recipe else found


def choose(
    published: Iterable[PublishedWeights], model_section: dict, choice: str, recipe: str | None = None
) -> PublishedWeights | None:
    """The weights ``choice`` names for this model section: the first match of a kind ("coco", "imagenet"), those
    of ``recipe`` first, or the match whose publisher's name it is; None when there is none."""
    for w in matching(published, model_section, recipe):
        if choice in (w.kind, w.name):
            return w
    return None


def by_name(published: Iterable[PublishedWeights], name: str) -> PublishedWeights | None:
    """The published weights called ``name`` or stored in a file of that name, whatever the model section."""
    return next((w for w in published if name in (w.name, w.file_name)), None)


def weights_dir() -> Path:
    return cache_root() / "weights"


def cached_path(weights: PublishedWeights) -> Path:
    """Where the file is kept (and where to put it by hand on a machine without network)."""
    return weights_dir() / weights.file_name


def fetch(weights: PublishedWeights) -> Path:
    """The local file of published weights, downloaded into the cache the first time."""
    target = cached_path(weights)
    if target.is_file():
        return target
    try:
        with urllib.request.urlopen(weights.url, timeout=TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            atomic_write(target, lambda tmp: _save(response, tmp, total, weights.file_name))
    except (urllib.error.URLError, OSError) as e:  # no network, refused, reset, timed out
        reason = getattr(e, "reason", None) or e
        raise UserError(
            f"cannot download {weights.url} ({reason}); without network, download it elsewhere and put it at {target}",
            target,
        ) from None
    except ValueError as e:
        raise UserError(f"{e}: nothing was kept, download {weights.url} again", target) from None
    return target


def _save(response, path: Path, total: int | None, name: str) -> None:
    digest = hashlib.sha256()
    with open(path, "wb") as f, progress_bar(f"downloading {name}", total=total) as bar:
        while chunk := response.read(CHUNK):
            f.write(chunk)
            digest.update(chunk)
            bar.advance(len(chunk))
    want = _HASH_IN_NAME.search(name)
    if want and not digest.hexdigest().startswith(want.group(1)):
        raise ValueError(f"the download is corrupt (sha256 {digest.hexdigest()[:8]}, its name says {want.group(1)})")


def describe(weights: PublishedWeights) -> str:
    """One line: the publisher's name and its published metric."""
    if weights.kind == "imagenet":
        metric = f"top-1 {weights.top1}" if weights.top1 is not None else ""
    else:
        parts = [f"mask AP {weights.mask_ap}" if weights.mask_ap is not None else "",
                 f"box AP {weights.box_ap}" if weights.box_ap is not None else ""]  # fmt: skip
        metric = ", ".join(p for p in parts if p)
    return f"{weights.publisher} {weights.name}" + (f" ({metric})" if metric else "")


def _row(kind: str, name: str, publisher: str, url: str | None = None, **metrics) -> dict:
    row = {"kind": kind, "name": name, "publisher": publisher, "url": url, "cached": None, "note": ""}
    return {**row, "mask_ap": None, "box_ap": None, "top1": None, **metrics}


def recipe_weights(recipe: dict) -> list[dict]:
    """What a (complete) recipe can start from besides random weights: one row per published file (kind, name,
    publisher, metrics, address, whether it is in the cache), the publisher's files of its architecture first,
    torchvision's COCO checkpoint first where the recipe equals its model (what --weights coco then takes), and the
    ImageNet backbone its builder downloads where no publisher lists one."""
    from instaseg.models.common.backbones import BACKBONES
    from instaseg.models.registry import architecture

    model = recipe["model"]
    rows = [
        _row(w.kind, w.name, w.publisher, w.url, mask_ap=w.mask_ap, box_ap=w.box_ap, top1=w.top1,
             cached=cached_path(w).is_file(), note=w.note)  # fmt: skip
        for w in matching(architecture(model["architecture"]).published, model, recipe.get("name"))
    ]
    if model.get("coco_weights"):  # first: --weights coco takes it before a publisher's
        from torchvision.models import get_weight

        enum = get_weight(model["coco_weights"])
        metrics = enum.meta.get("_metrics", {}).get("COCO-val2017", {})
        name = model["coco_weights"]
        rows.insert(0, _row("coco", name, "torchvision", enum.url, mask_ap=metrics.get("mask_map"),
                            box_ap=metrics.get("box_map")))  # fmt: skip
    spec = BACKBONES.get(model.get("backbone"))
    if spec is not None and spec.imagenet and not any(r["kind"] == "imagenet" for r in rows):
        rows.append(_row("imagenet", f"{model['backbone']} ({spec.imagenet})", spec.source))
    return rows


def coco_classes() -> tuple[list[str], list[int]]:
    """COCO's 80 class names and their category ids (torchvision's list, with its gaps for the unused ids)."""
    from torchvision.models import get_weight

    names = get_weight("MaskRCNN_ResNet50_FPN_Weights.COCO_V1").meta["categories"]
    kept = [(n, i) for i, n in enumerate(names) if n not in ("__background__", "N/A")]
    return [n for n, _ in kept], [i for _, i in kept]
