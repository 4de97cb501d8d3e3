"""INT8 quantization settings as part of the detector contract, and their translation into NNCF's arguments.

Every registered architecture states its `QuantizationSettings` (`Detector.quantization`) with the reason; what
the settings say must reach NNCF: only the stated operation types quantized, the stated patterns and the preset,
model type and range estimator passed on. The export with accuracy control, its report and the calibration fix
are tested in tests/test_export.py (whose slow test holds a trained tiny Mask R-CNN's INT8 to 1 mask AP point);
every architecture's INT8 export of a model overfitted on two pictures keeps its masks (the slow test of
tests/test_conformance.py); bench/int8_accuracy.py measures them on trained models.
"""

from __future__ import annotations

import pytest

from instaseg.models.detector import COMPUTE_OPS, Detector, QuantizationSettings
from instaseg.models.registry import ARCHITECTURES, architecture

pytest.importorskip("nncf")


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_states_its_quantization_settings(name: str) -> None:
    from instaseg.export.quantize import quantizable_types
    from instaseg.models.factory import build_model
    from instaseg.models.recipes import load_recipe

    model = build_model(load_recipe(architecture(name).small_recipe), 2, weights="none")
    settings = model.quantization
    assert isinstance(settings, QuantizationSettings)
    assert set(settings.quantized_ops) <= quantizable_types()
    assert settings.why, f"{name} states no reason for its quantization settings"
    assert "quantization" in type(model).__dict__ or any(
        "quantization" in vars(base) for base in type(model).__mro__ if base is not Detector
    )


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="preset"):
        QuantizationSettings(preset="fast")
    with pytest.raises(ValueError, match="range_estimator"):
        QuantizationSettings(range_estimator="median")
    with pytest.raises(ValueError, match="transformer"):
        QuantizationSettings(smooth_quant=0.5)


def _small_graph():
    """An OpenVINO model with a convolution, an addition, a multiplication and a matrix product."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 3, 8, 8], np.float32, name="images")
    conv = ops.convolution(x, ops.constant(np.ones((4, 3, 3, 3), np.float32)), [1, 1], [1, 1], [1, 1], [1, 1])
    summed = ops.add(conv, conv)
    scaled = ops.multiply(summed, ops.constant(np.float32(0.5)))
    flat = ops.reshape(scaled, ops.constant(np.array([1, 256], np.int64)), False)
    out = ops.matmul(flat, ops.constant(np.ones((256, 2), np.float32)), False, False)
    return ov.Model([out], [x], "small")


def test_settings_become_nncf_options() -> None:
    import nncf

    from instaseg.export.quantize import nncf_options

    model = _small_graph()
    plain = nncf_options(QuantizationSettings(), model)
    assert plain["preset"] == nncf.QuantizationPreset.PERFORMANCE and plain["model_type"] is None
    assert {"Add", "Multiply"} <= set(plain["ignored_scope"].types)  # arithmetic stays in float
    assert not set(COMPUTE_OPS) & set(plain["ignored_scope"].types)
    custom = QuantizationSettings(
        quantized_ops=("Convolution", "MatMul", "Add"),
        float_patterns=(".*/head/.*",),
        preset="mixed",
        transformer=True,
        range_estimator="quantile",
    )
    options = nncf_options(custom, model)
    assert options["preset"] == nncf.QuantizationPreset.MIXED and options["model_type"] == nncf.ModelType.TRANSFORMER
    assert options["ignored_scope"].types == ["Multiply"] and options["ignored_scope"].patterns == [".*/head/.*"]
    advanced = options["advanced_parameters"]
    assert advanced.smooth_quant_alphas.matmul == -1.0  # SmoothQuant off unless an alpha is stated
    assert advanced.activations_range_estimator_params.min.quantile_outlier_prob > 0


def test_range_rules_differ_on_a_picture_far_past_the_usual_range() -> None:
    """NNCF's default per-tensor activation range is the mean of the pictures' extremes, so one picture ten times
    brighter than the rest saturates; "extremes" keeps it. This is why an under-trained model whose layers run
    far past their usual range on a few pictures can score higher in INT8 than in fp32."""
    import numpy as np

    from instaseg.export.quantize import nncf_options, quantize_openvino

    model = _small_graph()
    extremes = nncf_options(QuantizationSettings(range_estimator="extremes"), model)["advanced_parameters"]
    assert extremes.activations_range_estimator_params.max.aggregator_type.value == "max"
    rng = np.random.default_rng(0)
    feeds = [{"images": rng.uniform(0, 1, size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(9)]
    feeds.append({"images": feeds[0]["images"] * 10})

    def input_bound(rule: str) -> float:
        quantized = quantize_openvino(_small_graph(), feeds, QuantizationSettings(range_estimator=rule))
        (first,) = [op for op in quantized.get_ops() if op.get_type_name() == "FakeQuantize"
                    and op.input_value(0).get_node().get_type_name() == "Parameter"]  # fmt: skip
        return float(np.abs(first.input_value(2).get_node().get_data()).max())

    assert input_bound("extremes") >= 9.9  # the bright picture's maximum
    assert input_bound("minmax") < 2.5  # about (9 x 1 + 10) / 10


def test_only_the_stated_operations_are_quantized() -> None:
    import numpy as np

    from instaseg.export.quantize import float_layers, quantize_openvino

    rng = np.random.default_rng(0)
    feeds = [{"images": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    quantized = quantize_openvino(_small_graph(), feeds, QuantizationSettings())
    fake = [op for op in quantized.get_ops() if op.get_type_name() == "FakeQuantize"]
    consumers = {t.get_node().get_type_name() for op in fake for t in op.output(0).get_target_inputs()}
    assert fake and not consumers & {"Add", "Multiply"}  # (a quantizer may sit before the reshape of the product)
    assert float_layers(quantized, COMPUTE_OPS) == ([], 2)
    convolution_only = quantize_openvino(_small_graph(), feeds, QuantizationSettings(quantized_ops=("Convolution",)))
    in_float, total = float_layers(convolution_only, COMPUTE_OPS)
    assert total == 2 and len(in_float) == 1


def test_products_of_two_computed_operands_stay_in_float_when_asked() -> None:
    """Per-instance kernels x mask features: both operands come from the picture (no weight)."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    from instaseg.export.quantize import computed_products, float_layers, nncf_options, quantize_openvino

    x = ops.parameter([1, 3, 8, 8], np.float32, name="images")
    conv = ops.convolution(x, ops.constant(np.ones((4, 3, 3, 3), np.float32)), [1, 1], [1, 1], [1, 1], [1, 1])
    features = ops.reshape(conv, ops.constant(np.array([4, 64], np.int64)), False)
    kernels = ops.matmul(features, ops.constant(np.ones((64, 64), np.float32)), False, False)
    masks = ops.matmul(kernels, features, False, True)
    masks.set_friendly_name("masks")
    model = ov.Model([masks], [x], "dynamic_kernels")
    assert computed_products(model, COMPUTE_OPS) == ["masks"]
    settings = QuantizationSettings(float_computed_products=True)
    assert nncf_options(settings, model)["ignored_scope"].names == ["masks"]
    assert nncf_options(QuantizationSettings(), model)["ignored_scope"].names == []
    rng = np.random.default_rng(0)
    feeds = [{"images": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    assert float_layers(quantize_openvino(model, feeds, settings), COMPUTE_OPS) == (["masks"], 3)


def _input_quantizer_range(model) -> tuple[float, float]:
    (first,) = [op for op in model.get_ops() if op.get_type_name() == "FakeQuantize"
                and op.input_value(0).get_node().get_type_name() == "Parameter"]  # fmt: skip
    return tuple(float(first.input_value(i).get_node().get_data().ravel()[0]) for i in (1, 2))


def test_picture_bounds_follow_the_normalisation() -> None:
    from instaseg.export.quantize import picture_bounds
    from instaseg.inference.preprocess import InputSpec

    assert picture_bounds(InputSpec(256, 256, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))) == (0.0, 1.0)
    low, high = picture_bounds(InputSpec(256, 256))  # ImageNet: black red is the lowest, white blue the highest
    assert low == pytest.approx(-0.485 / 0.229, abs=1e-5) and high == pytest.approx((1 - 0.406) / 0.225, abs=1e-5)


def test_picture_range_lets_every_grey_level_through() -> None:
    """Calibrated on dim pictures, the input quantizer clips every brighter pixel; with ``picture_range`` it
    spans [0, 1] in 256 steps, exactly one grey level each, in plain and accuracy-controlled quantization."""
    import nncf
    import numpy as np

    from instaseg.export.quantize import after_each_nncf_quantization, quantize_openvino, settings_finish
    from instaseg.inference.preprocess import InputSpec

    spec = InputSpec(8, 8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    rng = np.random.default_rng(0)
    feeds = [{"images": (rng.integers(0, 128, size=(1, 3, 8, 8)) / 255).astype(np.float32)} for _ in range(4)]
    calibrated = quantize_openvino(_small_graph(), feeds, QuantizationSettings(), spec)
    assert _input_quantizer_range(calibrated)[1] < 0.51  # grey level 127 at most
    settings = QuantizationSettings(picture_range=True)
    assert _input_quantizer_range(quantize_openvino(_small_graph(), feeds, settings, spec)) == (0.0, 1.0)
    with pytest.raises(ValueError, match="input spec"):
        quantize_openvino(_small_graph(), feeds, settings)
    with after_each_nncf_quantization(settings_finish(settings, spec)):  # NNCF's accuracy control quantizes inside
        controlled = nncf.quantize_with_accuracy_control(
            _small_graph(), nncf.Dataset(feeds), nncf.Dataset(feeds), lambda compiled, data: (1.0, None),
            subset_size=len(feeds),
        )  # fmt: skip
    assert _input_quantizer_range(controlled) == (0.0, 1.0)


def _table_graph(in_branch: bool):
    """Rows of a constant coordinate table picked by the picture (top-k of a convolution), added to a computed
    tensor, as a one-stage detector's prior points; ``in_branch``: under an If, as the exported mask branch."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 3, 8, 8], np.float32, name="images")
    conv = ops.convolution(x, ops.constant(np.ones((1, 3, 3, 3), np.float32)), [1, 1], [1, 1], [1, 1], [1, 1])
    scores = ops.reshape(conv, ops.constant(np.array([64], np.int64)), False)
    top = ops.topk(scores, ops.constant(np.int64(4)), 0, "max", "value").output(1)
    table = ops.constant(np.stack(np.meshgrid(np.arange(8), np.arange(8)), -1).reshape(64, 2).astype(np.float32) * 32)
    if not in_branch:
        points = ops.gather(table, top, ops.constant(np.int64(0)))
        points.set_friendly_name("prior_points")
        return ov.Model([ops.multiply(points, ops.constant(np.float32(0.5)))], [x], "table")
    inner_top = ops.parameter([4], np.int64)
    inner = ops.gather(table, inner_top, ops.constant(np.int64(0)))
    inner.set_friendly_name("prior_points")
    then_body = ov.Model([ops.result(inner)], [inner_top])
    else_top = ops.parameter([4], np.int64)
    else_body = ov.Model([ops.result(ops.constant(np.zeros((4, 2), np.float32)))], [else_top])
    found = ops.greater(ops.reduce_max(scores, ops.constant(np.int64(0))), ops.constant(np.float32(-1e9)))
    branch = ops.if_op(found.output(0))  # (given the node, if_op makes an If without its condition)
    branch.set_then_body(then_body)
    branch.set_else_body(else_body)
    branch.set_input(top, inner_top, else_top)
    model = ov.Model([branch.set_output(then_body.get_results()[0], else_body.get_results()[0])], [x], "table_if")
    for i, op in enumerate(model.get_ordered_ops()):  # NNCF reads an If's inputs by their tensor names
        for port in op.outputs():
            port.get_tensor().set_names(port.get_tensor().get_names() or {f"t{i}_{port.get_index()}"})
    return model


@pytest.mark.parametrize("in_branch", [False, True], ids=["graph", "if_branch"])
def test_constant_tables_stay_in_float(in_branch: bool) -> None:
    """NNCF quantizes a Gather's float constant table as an embedding's weights, which no ignored type prevents:
    in RTMDet-Ins the prior points, quantized, cost every mask."""
    import numpy as np

    from instaseg.export.quantize import all_ops, constant_tables, nncf_options, quantize_openvino

    model = _table_graph(in_branch)
    assert constant_tables(model) == ["prior_points"]
    assert "prior_points" in nncf_options(QuantizationSettings(), model)["ignored_scope"].names
    rng = np.random.default_rng(0)
    feeds = [{"images": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    quantized = quantize_openvino(model, feeds, QuantizationSettings())
    (gather,) = [op for op in all_ops(quantized) if op.get_friendly_name() == "prior_points"]
    assert gather.input_value(0).get_node().get_type_name() == "Constant"
