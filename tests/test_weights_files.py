"""Starting from published weights: `--weights coco` / `imagenet` downloaded once into the cache (the network
mocked), the same from a local file (real), the conversion command, and files that must be refused in one line
(a pickle that runs code, a truncated file, another model's weights) in both publishers' formats.

The files are made from the MMDetection fixtures (tests/fixtures/mmdet: the reference's random weights of a
reduced RTMDet-Ins, in the published format)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from instaseg.cli import main
from instaseg.config import recipe_to_yaml
from instaseg.errors import UserError
from instaseg.models.factory import build_model, model_from_checkpoint
from instaseg.models.recipes import apply_overrides, load_recipe
from instaseg.models.registry import architecture
from instaseg.models.weights import published as published_module
from instaseg.models.weights.published import cached_path, fetch
from instaseg.models.weights.readers import read_pdparams, read_weights

FIXTURES = Path(__file__).parent / "fixtures" / "mmdet"
DETECTOR_FILE = FIXTURES / "rtmdet_ins.pth"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("INSTASEG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def reduced() -> dict:
    """rtmdet_ins_tiny at the fixture's reduced widths (its backbone name still says cspnext_tiny)."""
    info = np.load(FIXTURES / "rtmdet_ins.npz")["info"]
    return apply_overrides(load_recipe("rtmdet_ins_tiny"), json.loads(str(info))["overrides"])


def entry(kind: str):
    return next(w for w in architecture("rtmdet_ins").published if w.kind == kind and "tiny" in w.recipe)


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class FakeResponse(io.BytesIO):
    headers = {"Content-Length": "0"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def serve(monkeypatch, payload: bytes) -> list[str]:
    """urlopen answering every address with ``payload``; returns the addresses asked for."""
    asked = []

    def urlopen(url, timeout=None):
        asked.append(url)
        response = FakeResponse(payload)
        response.headers = {"Content-Length": str(len(payload))}
        return response

    monkeypatch.setattr(published_module.urllib.request, "urlopen", urlopen)
    return asked


# ---------------------------------------------------------------- download, cache, --weights coco
def test_download_is_kept_once_and_checked_against_the_hash_in_its_name(cache, monkeypatch):
    payload = DETECTOR_FILE.read_bytes()
    real = hashlib.sha256(payload).hexdigest()[:8]
    good = dataclasses.replace(entry("coco"), url=f"https://example.org/rtmdet-ins_tiny_fixture-{real}.pth")
    asked = serve(monkeypatch, payload)
    path = fetch(good)
    assert path == cached_path(good) and path.read_bytes() == payload and len(asked) == 1
    assert fetch(good) == path and len(asked) == 1  # the second time from the cache
    bad = dataclasses.replace(good, url="https://example.org/rtmdet-ins_tiny_fixture-00000000.pth")
    with pytest.raises(UserError, match="corrupt"):
        fetch(bad)
    assert not cached_path(bad).exists() and not list(cached_path(bad).parent.glob("*.tmp*"))


def test_no_network_names_the_address_and_where_to_put_the_file(cache, monkeypatch):
    def offline(url, timeout=None):
        raise published_module.urllib.error.URLError("no route to host")

    monkeypatch.setattr(published_module.urllib.request, "urlopen", offline)
    with pytest.raises(UserError) as e:
        build_model(reduced(), 80, weights="coco")
    assert entry("coco").url in str(e.value) and str(cached_path(entry("coco"))) in str(e.value)


def test_weights_coco_loads_the_cached_file_and_a_local_file_the_same(cache):
    target = cached_path(entry("coco"))
    target.parent.mkdir(parents=True)
    target.write_bytes(DETECTOR_FILE.read_bytes())  # as a finished download leaves it
    from_cache = state(build_model(reduced(), 80, weights="coco"))
    from_file = state(build_model(reduced(), 80, weights=str(DETECTOR_FILE)))
    assert same_state(from_cache, from_file)
    random = state(build_model(reduced(), 80, weights="none"))
    assert not same_state(from_cache, random)
    published = read_weights(DETECTOR_FILE)[0]
    stem = published["backbone.stem.0.conv.weight"]
    assert torch.equal(from_file["backbone.stem.0.conv.weight"], stem.flip(1))  # the detector read BGR


def test_another_class_count_reinitialises_only_the_class_layers():
    full = state(build_model(reduced(), 80, weights=str(DETECTOR_FILE)))
    three = state(build_model(reduced(), 3, weights=str(DETECTOR_FILE)))
    differ = sorted(k for k in full if full[k].shape != three[k].shape)
    assert differ and all(k.startswith("head.rtm_cls.") for k in differ)
    assert all(torch.equal(full[k], three[k]) for k in full if k not in differ)


def test_weights_imagenet_loads_the_published_backbone(cache):
    detector = read_weights(DETECTOR_FILE)[0]
    backbone = {k: v for k, v in detector.items() if k.startswith("backbone.")}
    width = backbone["backbone.stage4.1.conv2.conv.weight"].shape[0]
    classifier = {**backbone, "head.fc.weight": torch.randn(1000, width), "head.fc.bias": torch.zeros(1000)}
    target = cached_path(entry("imagenet"))
    target.parent.mkdir(parents=True)
    torch.save({"meta": {"epoch": 600}, "state_dict": classifier}, target)  # as mmpretrain publishes
    model = build_model(reduced(), 3, weights="imagenet")
    ours = model.state_dict()
    assert torch.equal(ours["backbone.stem.0.conv.weight"], backbone["backbone.stem.0.conv.weight"])  # RGB: as is
    assert torch.equal(ours["backbone.stages.3.1.conv2.conv.weight"], backbone["backbone.stage4.1.conv2.conv.weight"])
    random_head = build_model(reduced(), 3, weights="none").state_dict()
    assert ours["head.rtm_cls.0.weight"].shape == random_head["head.rtm_cls.0.weight"].shape


def test_mmengine_runner_checkpoint_loads_with_its_metadata_dropped():
    model = state(build_model(reduced(), 80, weights=str(FIXTURES / "runner.pth")))
    assert same_state(model, state(build_model(reduced(), 80, weights=str(DETECTOR_FILE))))


# ---------------------------------------------------------------- files that are refused
class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


class ReachesThroughGetattr:
    def __reduce__(self):
        return (getattr, (dict, "fromkeys"))  # getattr on something other than dropped metadata


def pdparams(path: Path, data: object) -> Path:
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=2)  # paddle.save's format: a protocol-2 pickle of a dict of arrays
    return path


def test_pdparams_reader_reads_arrays_without_paddle(tmp_path):
    arrays = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(2, np.int64)}
    table = {"StructuredToParameterName@@": {"a.weight": "conv2d_0.w_0"}}
    read = read_pdparams(pdparams(tmp_path / "m.pdparams", {**arrays, **table}))
    assert read.keys() == arrays.keys() and torch.equal(read["a.weight"], torch.from_numpy(arrays["a.weight"]))


@pytest.mark.parametrize("suffix", [".pth", ".pdparams"])
def test_a_file_that_would_run_code_is_refused_without_running_it(tmp_path, monkeypatch, suffix):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / f"evil{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": RunsCode()}, bad)
    else:
        pdparams(bad, {"w": np.zeros(1, np.float32), "x": RunsCode()})
    with pytest.raises(UserError) as e:
        build_model(reduced(), 80, weights=str(bad))
    assert "refused" in str(e.value) and str(bad) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "pwned").exists()


def test_getattr_is_allowed_on_dropped_metadata_only(tmp_path):
    bad = tmp_path / "reach.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": ReachesThroughGetattr()}, bad)
    with pytest.raises(UserError, match="refused"):
        read_weights(bad)


@pytest.mark.parametrize("suffix", [".pth", ".pdparams"])
def test_a_truncated_file_is_refused_in_one_line(tmp_path, suffix):
    if suffix == ".pth":
        whole = DETECTOR_FILE.read_bytes()
    else:
        whole = pdparams(tmp_path / "whole.pdparams", {"w": np.zeros((64, 64), np.float32)}).read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError) as e:
        build_model(reduced(), 80, weights=str(cut))
    assert str(cut) in str(e.value) and "\n" not in str(e.value)


def test_another_models_weights_are_refused_in_one_line(tmp_path):
    with pytest.raises(UserError) as e:
        build_model(reduced(), 80, weights=str(FIXTURES / "solov2.pth"))
    assert "solov2.pth" in str(e.value) and "\n" not in str(e.value)
    other = pdparams(tmp_path / "other.pdparams", {"conv.weight": np.zeros((8, 3, 3, 3), np.float32)})
    with pytest.raises(UserError, match="other.pdparams"):
        build_model(reduced(), 80, weights=str(other))


# ---------------------------------------------------------------- the command line
def test_convert_command_writes_a_checkpoint_that_predicts_like_the_file(tmp_path, capsys):
    recipe = tmp_path / "reduced.yaml"
    recipe.write_text(recipe_to_yaml(reduced()))
    out = tmp_path / "converted.pt"
    assert main(["weights", "convert", str(DETECTOR_FILE), "--model", str(recipe), "--out", str(out)]) == 0
    assert "80 classes" in capsys.readouterr().out
    model, info = model_from_checkpoint(out)
    assert info["class_names"][0] == "person" and len(info["class_names"]) == 80
    assert same_state(state(model), state(build_model(reduced(), 80, weights=str(DETECTOR_FILE))))
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": RunsCode()}, evil)
    assert main(["weights", "convert", str(evil), "--model", str(recipe), "--out", str(tmp_path / "x.pt")]) == 2
    assert not (tmp_path / "x.pt").exists()


def test_models_lists_the_published_weights_and_their_ap(capsys):
    assert main(["models", "rtmdet_ins_tiny"]) == 0
    printed = capsys.readouterr().out
    assert "35.4" in printed and entry("coco").name in printed and entry("imagenet").name in printed
