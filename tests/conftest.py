"""Shared test fixtures. Tests write their own data; ../shared/datasets/tiny_coco is an optional real-data check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_COCO = REPO.parent / "shared" / "datasets" / "tiny_coco"


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Measurement caches go to a temporary folder, never the user's home."""
    os.environ["INSTASEG_CACHE"] = str(tmp_path_factory.mktemp("cache"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture
def tiny_coco() -> Path:
    """The real COCO sample beside the repo; skipped where it is absent (a user's clone)."""
    if not (TINY_COCO / "annotations" / "instances_train.json").is_file():
        pytest.skip("../shared/datasets/tiny_coco is absent")
    return TINY_COCO


@pytest.fixture
def cli(capsys: pytest.CaptureFixture):
    """Run `instaseg ARGS...` in-process; returns (exit code, stdout, stderr)."""
    from instaseg.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse exits on usage errors
            code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def one_thread():
    """torch on one thread for the test: small convolutions run faster so, and far faster when other processes
    load the cores (two threads then wait on each other)."""
    from instaseg.utils.device import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_maskrcnn():
    """Factory: (recipe, model) of maskrcnn_fast shrunk by ``overrides``, random init with seed 0, no download."""

    def build(num_classes: int, overrides: list[str]):
        import torch

        from instaseg.models.factory import build_model
        from instaseg.models.recipes import apply_overrides, load_recipe

        torch.manual_seed(0)
        recipe = apply_overrides(load_recipe("maskrcnn_fast"), overrides)
        return recipe, build_model(recipe, num_classes, weights="none")

    return build


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory, tiny_maskrcnn) -> Path:
    """maskrcnn_fast at 64 px, random init, classes `tiny.CKPT_CLASSES`. The class-1 logit bias is raised and the
    mask logits are centred near zero so that the untrained model gives confident detections with partly filled
    masks: the tests exercise the pipeline's plumbing and geometry, not accuracy."""
    import torch

    from instaseg.models.checkpoint import save_checkpoint
    from tiny import CKPT_CATEGORY_IDS, CKPT_CLASSES

    recipe, model = tiny_maskrcnn(
        len(CKPT_CLASSES), ["input.min_size=64", "input.max_size=96", "eval.score_threshold=0.0", "eval.max_dets=30"]
    )
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[1] += 4.0
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(0.1)
        model.roi_heads.mask_predictor.mask_fcn_logits.bias[1] += 1.0
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model, recipe, CKPT_CLASSES, CKPT_CATEGORY_IDS)
    return path


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory: pytest.TempPathFactory):
    """Factory: architecture name -> `test_conformance.train_tiny`'s briefly trained tiny model (recipe, checkpoint,
    pictures, folder), trained once a session for the tests that only read it (and export it into its folder)."""
    from test_conformance import train_tiny

    trained: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in trained:
            trained[name] = train_tiny(name, tmp_path_factory.mktemp(name))
        return trained[name]

    return get
