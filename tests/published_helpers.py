"""What the published-weights tests share: a published file's layout (tensor names and shapes, from the fixtures)
converted against our model for the recipe it fits, on the meta device; published addresses answered from local
files."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from instaseg.models.detector import PublishedWeights
from instaseg.models.factory import build_architecture
from instaseg.models.recipes import load_recipe
from instaseg.models.weights import published as published_module
from instaseg.models.weights.convert import Conversion, convert


def convert_layout(weights: PublishedWeights, layouts: dict) -> tuple[Conversion, dict, list]:
    """(the conversion, our state_dict of meta tensors, the layout) of ``weights``' published tensor layout."""
    layout = layouts[weights.config or weights.name]
    published = {name: torch.empty(shape, device="meta") for name, shape, _ in layout}
    classes = weights.num_classes if weights.kind == "coco" else 1
    with torch.device("meta"):
        ours = build_architecture(load_recipe(weights.recipe), classes).state_dict()
    return convert(published, ours, weights.key_map), ours, layout


def serve_files(monkeypatch, files: dict[str, Path]) -> list[str]:
    """urlopen mocked: each address in ``files`` (a dict the caller may fill later) answered with its file's bytes.
    Returns the addresses asked for, in order."""
    requests: list[str] = []

    def urlopen(url, timeout=None):
        requests.append(url)
        data = files[url].read_bytes()
        response = io.BytesIO(data)
        response.headers = {"Content-Length": str(len(data))}
        return response

    monkeypatch.setattr(published_module.urllib.request, "urlopen", urlopen)
    return requests
