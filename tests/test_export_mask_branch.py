"""The deferred mask branch (`instaseg.export.mask_branch`): the graph with its mask-only nodes under an ``If`` gives
the outputs of the graph without it, with and without detections, in ONNX Runtime and OpenVINO."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instaseg.export.exporter import example_inputs
from instaseg.export.graph import DetectorGraph
from instaseg.export.mask_branch import defer_mask_branch, mask_only_nodes
from instaseg.export.onnx import export_onnx_bytes
from instaseg.models.detector import OUTPUT_NAMES
from instaseg.models.factory import build_model
from instaseg.models.recipes import apply_overrides, load_recipe

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")
SIDE = 64
# random heads score about sigmoid(prior) = 0.01 everywhere: 0.001 keeps max_dets of them, 0.9 none
THRESHOLDS = {"found": 0.001, "none": 0.9}


def _graphs(recipe_name: str, threshold: float, dynamic: bool) -> tuple[bytes, bytes, tuple]:
    """(plain ONNX bytes, deferred ONNX bytes, example inputs as numpy) of a random-init model."""
    overrides = [f"input.min_size={SIDE}", f"input.max_size={SIDE}", f"eval.score_threshold={threshold}",
                 "eval.max_dets=12"]
    recipe = apply_overrides(load_recipe(recipe_name), overrides)
    torch.manual_seed(0)
    model = build_model(recipe, 3, weights="none").eval()
    example = example_inputs(model.input_spec, dynamic)
    plain = export_onnx_bytes(DetectorGraph(model), example, dynamic)
    deferred = defer_mask_branch(onnx.load_from_string(plain), model.mask_stride)
    onnx.checker.check_model(deferred)
    return plain, deferred.SerializeToString(), tuple(t.numpy() for t in example)


def _run_ort(data: bytes, feed: tuple) -> list[np.ndarray]:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(list(OUTPUT_NAMES), dict(zip(names, feed, strict=True)))


def _run_openvino(data: bytes, feed: tuple, tmp_path, name: str) -> list[np.ndarray]:
    ov = pytest.importorskip("openvino")
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(data)
    # read_model: the ONNX reader whose quirks mask_branch works around, without convert_model's ~5 s of
    # pre-processing set-up per graph
    compiled = ov.Core().compile_model(ov.Core().read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = [i.get_any_name() for i in compiled.inputs]
    result = compiled(dict(zip(names, feed, strict=True)))
    return [np.asarray(result[n]) for n in OUTPUT_NAMES]


def _assert_same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    for name, g, w in zip(OUTPUT_NAMES, got, want, strict=True):
        assert g.shape == w.shape, (name, g.shape, w.shape)
        assert g.dtype == w.dtype, (name, g.dtype, w.dtype)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=name)


CASES = [
    ("rtmdet_ins_tiny", False),
    ("rtmdet_ins_tiny", True),
    ("ppyoloe_seg_s", False),
    ("ppyoloe_seg_s", True),
]


@pytest.mark.parametrize("case", ["found", "none"])
@pytest.mark.parametrize(("recipe_name", "dynamic"), CASES)
def test_deferred_masks_equal_plain_graph(recipe_name, dynamic, case, tmp_path):
    plain, deferred, feed = _graphs(recipe_name, THRESHOLDS[case], dynamic)
    kinds = [n.op_type for n in onnx.load_from_string(deferred).graph.node]
    assert "If" in kinds  # the branch was made: the mask features are not on the detection path
    assert all(n.op_type != "If" for n in onnx.load_from_string(plain).graph.node)

    want = _run_ort(plain, feed)
    count = len(want[1])
    assert (count > 0) == (case == "found"), count
    _assert_same(_run_ort(deferred, feed), want)
    ov_plain = _run_openvino(plain, feed, tmp_path, "plain")
    _assert_same(_run_openvino(deferred, feed, tmp_path, "deferred"), ov_plain)


def test_detection_nodes_stay_outside_the_branch():
    """Nothing boxes, scores or labels need is moved, and the branch holds the mask features' convolutions."""
    plain, _, _ = _graphs("rtmdet_ins_tiny", THRESHOLDS["found"], dynamic=False)
    graph = onnx.load_from_string(plain).graph
    moved = set(mask_only_nodes(graph))
    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    todo = [producer[name] for name in OUTPUT_NAMES[:3]]
    seen: set[int] = set()
    while todo:
        index = todo.pop()
        if index not in seen:
            seen.add(index)
            todo.extend(producer[i] for i in nodes[index].input if i in producer)
    assert not moved & seen
    assert sum(nodes[i].op_type == "Conv" for i in moved) >= 2
