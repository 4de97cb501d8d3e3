"""The bad-input corpus: every command, fed a broken file, says so in one line naming it and exits with status 2.

Each case makes its broken files in a fresh folder (``make(tmp) -> {placeholder: path}``), runs the command line
in-process, and checks: exit status 2, exactly one stderr line, that line names the broken file, no traceback,
and the shared source dataset is byte for byte what it was.
"""

from __future__ import annotations

import hashlib
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from instaseg.data.synthetic import generate_synthetic
from instaseg.models.checkpoint import save_checkpoint

TINY = ["input.min_size=64", "input.max_size=64", "model.fpn_channels=16", "model.representation_size=64"]
TINY += ["model.mask_head_layers=[16]", "model.mask_dim_reduced=16", "train.num_workers=0", "train.batch_size=2"]
TINY_ARGS = [arg for o in TINY for arg in ("-o", o)]


class _CodeOnLoad:
    """Unpickling this would run a shell command: a checkpoint holding it must be refused, not loaded."""

    def __reduce__(self):
        return (print, ("this ran at load time",))


@dataclass
class World:
    data: Path  # a valid COCO dataset (never to be modified)
    ckpt: Path  # a valid instaseg checkpoint of the tiny model, 5 classes
    run: Path  # a finished training run folder (config.yaml, last.ckpt)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_maskrcnn) -> World:
    root = tmp_path_factory.mktemp("world")
    data = generate_synthetic(root / "data", num_images=6, img_size=64, seed=0)
    recipe, model = tiny_maskrcnn(5, TINY)
    names = ["circle", "triangle", "square", "star", "ring"]
    ckpt = save_checkpoint(root / "model.ckpt", model, recipe, names, [1, 2, 3, 4, 5])
    from instaseg.engine.train import train

    train("maskrcnn_fast", data, epochs=1, device="cpu", weights="none", out=root / "run", overrides=[*TINY])
    return World(data=data, ckpt=ckpt, run=root / "run")


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


# ---- broken files ----
def empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def truncated_of(source: Path) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        data = source.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path

    return make


def pickled_code(path: Path) -> Path:
    with open(path, "wb") as f:
        pickle.dump({"instaseg": _CodeOnLoad()}, f, protocol=2)
    return path


def other_program_ckpt(path: Path) -> Path:
    torch.save({"state_dict": {"net.weight": torch.zeros(2, 2)}, "loops": {}, "epoch": 3, "global_step": 9}, path)
    return path


def plain_state_dict(path: Path) -> Path:
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, path)
    return path


def text(content: str) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        return path

    return make


def with_classes(world: World, count: int) -> Callable[[Path], Path]:
    """The world's checkpoint relabelled to ``count`` classes: its head no longer fits."""

    def make(path: Path) -> Path:
        ckpt = torch.load(world.ckpt, weights_only=True)
        part = ckpt["instaseg"]
        part["class_names"], part["category_ids"] = [f"c{i}" for i in range(count)], list(range(1, count + 1))
        torch.save(ckpt, path)
        return path

    return make


def other_size(world: World) -> Callable[[Path], Path]:
    """The world's checkpoint whose recipe asks for wider FPN channels than its weights have."""

    def make(path: Path) -> Path:
        ckpt = torch.load(world.ckpt, weights_only=True)
        ckpt["instaseg"]["recipe"]["model"]["fpn_channels"] = 32
        torch.save(ckpt, path)
        return path

    return make


def run_with_last(make_last: Callable[[World], Callable[[Path], Path]]) -> Callable[[World, Path], Path]:
    """A copy of the world's run folder whose last.ckpt is replaced by a broken one; returns the last.ckpt."""

    def make(world: World, tmp: Path) -> Path:
        run = tmp / "run"
        shutil.copytree(world.run, run)
        return make_last(world)(run / "last.ckpt")

    return make


def coco_with(split_json: str) -> Callable[[World, Path], Path]:
    """A copy of the world's dataset with instances_train.json replaced; returns that json."""

    def make(world: World, tmp: Path) -> Path:
        data = tmp / "data"
        shutil.copytree(world.data, data)
        return text(split_json)(data / "annotations" / "instances_train.json")

    return make


def file_in(name: str, maker: Callable[[Path], Path]) -> Callable[[World, Path], Path]:
    return lambda world, tmp: maker(tmp / name)


def ckpt_in(name: str, maker: Callable[[World], Callable[[Path], Path]]) -> Callable[[World, Path], Path]:
    return lambda world, tmp: maker(world)(tmp / name)


# ---- the corpus: (case id, builder of the broken file, argv with {bad}, {data}, {ckpt}, {tmp}) ----
PREDICT = ["predict", "--checkpoint", "{bad}", "--input", "{data}/images", "--out", "{tmp}/pred", "--device", "cpu"]
EXPORT = ["export", "--checkpoint", "{bad}", "--out", "{tmp}/export"]
EVAL = ["eval", "--checkpoint", "{bad}", "--data", "{data}", "--device", "cpu"]
RESUME = ["train", "--model", "maskrcnn_fast", "--data", "{data}", "--resume", "--out", "{tmp}/run", "--device", "cpu"]
WEIGHTS = [
    "train",
    "--model",
    "maskrcnn_fast",
    "--data",
    "{data}",
    "--weights",
    "{bad}",
    "--out",
    "{tmp}/w",
    "--device",
    "cpu",
]
TRAIN_ON = ["train", "--model", "maskrcnn_fast", "--data", "{bad_parent2}", "--out", "{tmp}/t", "--device", "cpu"]
truncated_ckpt = lambda w: truncated_of(w.ckpt)  # noqa: E731
truncated_last = lambda w: truncated_of(w.run / "last.ckpt")  # noqa: E731
fixed = lambda maker: lambda w: maker  # noqa: E731

CASES: list[tuple[str, Callable[[World, Path], Path], list[str]]] = [
    ("predict-empty-ckpt", file_in("m.ckpt", empty), PREDICT),
    ("predict-truncated-ckpt", ckpt_in("m.ckpt", truncated_ckpt), PREDICT),
    ("predict-pickled-code", file_in("m.ckpt", pickled_code), PREDICT),
    ("predict-other-program", file_in("m.ckpt", other_program_ckpt), PREDICT),
    ("predict-plain-state-dict", file_in("m.pt", plain_state_dict), PREDICT),
    ("predict-other-class-count", ckpt_in("m.ckpt", lambda w: with_classes(w, 2)), PREDICT),
    ("predict-other-model-size", ckpt_in("m.ckpt", other_size), PREDICT),
    ("predict-text-as-ckpt", file_in("m.ckpt", text("not a checkpoint\n")), PREDICT),
    ("predict-missing-ckpt", lambda w, tmp: tmp / "absent.ckpt", PREDICT),
    ("predict-unknown-model-format", file_in("m.h5", text("x")), PREDICT),
    (
        "predict-missing-input",
        lambda w, tmp: tmp / "absent.jpg",
        ["predict", "--checkpoint", "{ckpt}", "--input", "{bad}", "--out", "{tmp}/p"],
    ),
    (
        "predict-empty-folder",
        lambda w, tmp: (tmp / "none").mkdir() or tmp / "none",
        ["predict", "--checkpoint", "{ckpt}", "--input", "{bad}", "--out", "{tmp}/p"],
    ),
    ("export-empty-ckpt", file_in("m.ckpt", empty), EXPORT),
    ("export-truncated-ckpt", ckpt_in("m.ckpt", truncated_ckpt), EXPORT),
    ("export-pickled-code", file_in("m.ckpt", pickled_code), EXPORT),
    ("export-other-program", file_in("m.ckpt", other_program_ckpt), EXPORT),
    ("export-other-class-count", ckpt_in("m.ckpt", lambda w: with_classes(w, 7)), EXPORT),
    ("eval-empty-ckpt", file_in("m.ckpt", empty), EVAL),
    ("eval-truncated-ckpt", ckpt_in("m.ckpt", truncated_ckpt), EVAL),
    ("eval-pickled-code", file_in("m.ckpt", pickled_code), EVAL),
    ("eval-other-program", file_in("m.ckpt", other_program_ckpt), EVAL),
    (
        "eval-malformed-pred",
        file_in("p.json", text("[{")),
        ["eval", "--gt", "{data}/annotations/instances_val.json", "--pred", "{bad}"],
    ),
    ("eval-malformed-gt", file_in("g.json", text("{]")), ["eval", "--gt", "{bad}", "--pred", "{bad}"]),
    ("benchmark-empty-ckpt", file_in("m.ckpt", empty), ["benchmark", "--model", "{bad}", "--iters", "1"]),
    ("benchmark-pickled-code", file_in("m.ckpt", pickled_code), ["benchmark", "--model", "{bad}", "--iters", "1"]),
    ("resume-empty-last", run_with_last(fixed(empty)), RESUME),
    ("resume-truncated-last", run_with_last(truncated_last), RESUME),
    ("resume-pickled-last", run_with_last(fixed(pickled_code)), RESUME),
    ("resume-other-program-last", run_with_last(fixed(other_program_ckpt)), RESUME),
    ("resume-model-checkpoint-as-last", run_with_last(lambda w: lambda p: Path(shutil.copy(w.ckpt, p))), RESUME),
    ("resume-other-classes", run_with_last(lambda w: lambda p: _relabelled_last(w, p)), RESUME),
    ("resume-other-model", run_with_last(lambda w: lambda p: _resized_last(w, p)), RESUME),
    ("resume-nothing-to-resume", lambda w, tmp: (tmp / "run").mkdir() or tmp / "run", RESUME),
    ("train-weights-empty", file_in("w.pt", empty), [*WEIGHTS, *TINY_ARGS]),
    ("train-weights-pickled-code", file_in("w.pt", pickled_code), [*WEIGHTS, *TINY_ARGS]),
    ("train-weights-truncated", ckpt_in("w.pt", truncated_ckpt), [*WEIGHTS, *TINY_ARGS]),
    ("train-malformed-train-json", coco_with('{"images": ['), TRAIN_ON),
    ("train-annotations-not-a-mapping", coco_with("[1, 2, 3]"), TRAIN_ON),
    (
        "train-malformed-recipe",
        file_in("r.yaml", text("name: [unclosed\n")),
        ["train", "--model", "{bad}", "--data", "{data}"],
    ),
    (
        "train-recipe-not-a-mapping",
        file_in("r.yaml", text("- a\n- b\n")),
        ["train", "--model", "{bad}", "--data", "{data}"],
    ),
    ("train-missing-data", lambda w, tmp: tmp / "absent", ["train", "--model", "maskrcnn_fast", "--data", "{bad}"]),
    (
        "convert-missing-source",
        lambda w, tmp: tmp / "absent",
        ["data", "convert", "{bad}", "--from", "labelme", "--out", "{tmp}/o"],
    ),
    (
        "convert-labelme-malformed",
        lambda w, tmp: text("{ not json")(tmp / "lm" / "a.json"),
        ["data", "convert", "{bad_parent}", "--from", "labelme", "--out", "{tmp}/o"],
    ),
    (
        "convert-out-not-empty",
        lambda w, tmp: text("x")(tmp / "o" / "keep.txt").parent,
        ["data", "convert", "{data}", "--from", "coco", "--out", "{bad}"],
    ),
    (
        "convert-labels-not-for-coco",
        lambda w, tmp: tmp / "absent.txt",
        ["data", "convert", "{data}", "--from", "coco", "--out", "{tmp}/o", "--labels", "{bad}"],
    ),
    ("check-malformed-json", file_in("a.json", text("{")), ["data", "check", "{bad}", "--out", "{tmp}/c"]),
    ("split-malformed-json", file_in("a.json", text("[")), ["data", "split", "{bad}", "--out", "{tmp}/s"]),
    ("split-missing-dataset", lambda w, tmp: tmp / "absent", ["data", "split", "{bad}", "--out", "{tmp}/s"]),
    ("models-malformed-recipe", file_in("r.yaml", text("model: {a: [\n")), ["models", "{bad}"]),
]


def _relabelled_last(world: World, path: Path) -> Path:
    """The run's own last.ckpt claiming other class names: a dataset it was not trained on."""
    ckpt = torch.load(world.run / "last.ckpt", weights_only=True)
    ckpt["instaseg"]["class_names"] = ["cat", "dog", "bird", "fish", "frog"]
    torch.save(ckpt, path)
    return path


def _resized_last(world: World, path: Path) -> Path:
    """The run's own last.ckpt with one head tensor of another shape: weights of another model."""
    ckpt = torch.load(world.run / "last.ckpt", weights_only=True)
    key = next(k for k in ckpt["state_dict"] if k.endswith("cls_score.weight"))
    ckpt["state_dict"][key] = torch.zeros(3, ckpt["state_dict"][key].shape[1])
    torch.save(ckpt, path)
    return path


def test_the_corpus_has_at_least_40_cases() -> None:
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("make", "argv"), [pytest.param(c[1], c[2], id=c[0]) for c in CASES])
def test_bad_input_is_one_line_and_exit_2(world: World, cli, tmp_path: Path, make, argv: list[str]) -> None:
    before = _tree_digest(world.data)
    bad = make(world, tmp_path)
    values = {
        "bad": bad,
        "bad_parent": bad.parent,
        "bad_parent2": bad.parent.parent,
        "data": world.data,
        "ckpt": world.ckpt,
        "tmp": tmp_path,
    }
    code, _, err = cli(*[arg.format(**values) for arg in argv])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    named = {str(bad), str(bad.parent), str(bad.parent.parent), bad.name}
    assert any(n in lines[0] for n in named), lines[0]
    assert _tree_digest(world.data) == before, "the source dataset was modified"
