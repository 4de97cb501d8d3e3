"""How the INT8 activation ranges change a trained model's AP: the architecture's own settings against the same
settings with each other range rule, on the held-out pictures of `bench/int8_accuracy.py`.

    python bench/int8_activation_ranges.py WORK --recipe ppyoloe_seg_fast [--seed 0]
        [--rules minmax extremes quantile] [--max-ap-drop 1.0]

WORK is an `int8_accuracy.py` work folder: its data, its held-out set and the checkpoint it trained for the recipe
and seed (run that first). Each rule exports INT8 as `instaseg export --int8` does (calibrated on the train split,
under accuracy control on the val split) into WORK/<recipe>/seed<N>/ranges/<rule>, the fp32 export beside it;
exports already there are reused. Besides AP it prints, per rule, how many of the INT8 graph's activation ranges
the fp32 graph's largest value on the held-out pictures overruns 2x or more, and the worst such ratio with its
place: where pictures run past the calibrated range.

"minmax" is NNCF's default: a per-tensor activation range is the mean over calibration pictures of each picture's
extremes, so pictures that drive a layer far beyond its usual range are clipped there; "extremes" takes the
extremes over all pictures. A model that answers such pictures with confident false objects scores higher in INT8
under "minmax" than in fp32.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from int8_accuracy import datasets, holdout_ap  # noqa: E402

from instaseg.models.detector import RANGE_ESTIMATORS  # noqa: E402


def export_with(ckpt: Path, data: Path, out: Path, rule: str | None, max_drop: float) -> dict:
    """The INT8 export of ``ckpt`` with the architecture's settings, its range rule replaced by ``rule``; one
    already in ``out`` is reused (delete the folder to export again)."""
    from instaseg.export import export_model
    from instaseg.models.factory import model_from_checkpoint

    if (out / "model_int8.report.json").is_file() and (out / "model_int8.xml").is_file():
        return {"path": str(out / "model_int8.xml"), "report": json.loads((out / "model_int8.report.json").read_text())}

    settings = model_from_checkpoint(ckpt)[0].quantization
    if rule is not None:
        settings = dataclasses.replace(settings, range_estimator=rule)
    return export_model(
        ckpt, format="openvino", out=out, int8=True, calib_data=data, max_ap_drop=max_drop, quantization=settings
    )


def overruns(int8_path: str, fp32_path: str, images: list) -> list[tuple[float, str]]:
    """Per quantized activation of the INT8 graph, (the fp32 graph's largest magnitude there on ``images`` / the
    calibrated range's bound, the activation's name), largest first."""
    import numpy as np
    import openvino as ov

    import instaseg
    from instaseg.export.quantize import calibration_feeds

    core = ov.Core()
    bounds: dict[str, float] = {}
    for op in core.read_model(int8_path).get_ops():
        source = op.input_value(0).get_node() if op.get_type_name() == "FakeQuantize" else None
        if source is not None and source.get_type_name() != "Constant":
            limits = [np.abs(op.input_value(i).get_node().get_data()).max() for i in (1, 2)]
            bounds[source.get_friendly_name()] = float(max(limits))
    model = core.read_model(fp32_path)
    taps = {op.get_friendly_name(): op for op in model.get_ops() if op.get_friendly_name() in bounds}
    names = sorted(taps)
    first = len(model.outputs)  # the taps become outputs after the model's own, in this order
    model.add_outputs([taps[name].output(0) for name in names])
    request = core.compile_model(model, "CPU").create_infer_request()
    backend = instaseg.create_model(fp32_path).backend
    peaks = dict.fromkeys(names, 0.0)
    for feed in calibration_feeds(images, backend.spec, backend.graph):
        values = list(request.infer(feed).values())[first:]
        for name, value in zip(names, values, strict=True):
            peaks[name] = max(peaks[name], float(np.abs(value).max()) if value.size else 0.0)
    return sorted(((peaks[n] / max(bounds[n], 1e-12), n) for n in names), reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rules", nargs="+", default=list(RANGE_ESTIMATORS), choices=RANGE_ESTIMATORS)
    parser.add_argument("--max-ap-drop", type=float, default=1.0)
    args = parser.parse_args()
    from instaseg.data.coco import split_file
    from instaseg.evaluation.parity import validation_subset
    from instaseg.export import export_model

    data, holdout = datasets(args.work)
    folder = args.work / args.recipe / f"seed{args.seed}"
    ckpt = folder / "last.ckpt"
    if not ckpt.is_file():
        raise SystemExit(f"{ckpt}: no checkpoint; run bench/int8_accuracy.py {args.work} --recipes {args.recipe}")
    from instaseg.utils.images import read_image

    gt = validation_subset(split_file(holdout, "train"))
    images = [read_image(gt.image_path(record)) for record in gt.images]
    fp32 = folder / "ranges" / "fp32" / "model.xml"
    fp32 = str(fp32) if fp32.is_file() else export_model(ckpt, format="openvino", out=fp32.parent)["path"]
    rows = {"fp32": (holdout_ap(fp32, gt), None, None)}
    for rule in args.rules:
        result = export_with(ckpt, data, folder / "ranges" / rule, rule, args.max_ap_drop)
        rows[f"INT8 {rule}"] = (holdout_ap(result["path"], gt), result["report"], result["path"])
    print(f"{args.recipe} seed {args.seed}: AP on {len(gt.images)} held-out pictures; overrun: the fp32 graph's "
          "largest activation on them / the INT8 range there")
    print(f"{'model':<16} {'mask AP':>8} {'box AP':>7} {'left in float':>14}  {'ranges overrun 2x+':>18}  worst")
    for name, (ap, report, path) in rows.items():
        line = f"{name:<16} {ap['mask_AP']:>8.1f} {ap['box_AP']:>7.1f}"
        if report is not None:
            over = overruns(path, fp32, images)
            wide = sum(ratio >= 2 for ratio, _ in over)
            line += f" {len(report['float_layers']):>6} of {report['quantizable_layers']:<4}"
            line += f"  {wide:>8} of {len(over):<7}  {over[0][0]:.1f}x at {over[0][1]}"
        print(line)


if __name__ == "__main__":
    main()
