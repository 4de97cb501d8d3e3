"""Reference side (paddle venv): the dumped R-CNN's weights and input tensors run again in float64, to ref64.npz in
the run's folder (the same keys as ref.npz). With both sides in float64 the per-instance mask comparison is no longer
at the mercy of float32 rounding (see float_floor.py).

    PADDLE_PYTHON tools/paddle_rcnn_full/ref_float64.py RUNS/maskrcnn_r101vd_fpn_cv51

PaddleDetection's `generate_proposals` has only a float32 kernel: it runs on float32 copies of its inputs and its
proposals come back as float64, so the proposals alone carry float32 rounding (about 1e-4 px at 1000 px).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
CWD = os.getcwd()
import ref_dump_rcnn as R  # noqa: E402  (sets PaddleDetection's path and working folder)

paddle = R.paddle


def float32_proposals() -> None:
    """generate_proposals on float32 copies, its boxes and scores returned in float64."""
    ops = paddle.vision.ops
    gen = ops.generate_proposals

    def wrapped(scores, deltas, img_size, anchors, variances, *a, **kw):
        f32 = [x.astype("float32") for x in (scores, deltas, img_size, anchors, variances)]
        rois, probs, num = gen(*f32, *a, **kw)
        return rois.astype("float64"), probs.astype("float64"), num

    ops.generate_proposals = wrapped


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    args = ap.parse_args()
    run = os.path.abspath(os.path.join(CWD, args.run))
    with open(os.path.join(run, "meta.json")) as f:
        meta = json.load(f)
    arch = "cascade" if "cascade" in meta["model"] else "maskrcnn"
    assert not meta["model"].startswith("solov2"), "R-CNN runs only"
    R.patch_aligned(meta["aligned"])
    float32_proposals()
    paddle.set_default_dtype("float64")
    cfg = R.load_config(meta["config"])
    R.configure(cfg, argparse.Namespace(fpn_channels=meta["fpn_channels"]), arch)
    model = R.create(cfg.architecture)
    model.eval()
    weights = np.load(os.path.join(run, "weights.npz"))
    sd = model.state_dict()
    missing = sorted(set(sd) - set(weights.files))
    assert not missing, f"tensors the dump lacks: {missing[:5]}"
    model.set_state_dict({k: paddle.to_tensor(weights[k].astype(np.float64)) for k in sd})
    assert all(v.dtype == paddle.float64 for v in model.state_dict().values() if v.dtype.name != "INT64")
    ref = np.load(os.path.join(run, "ref.npz"))
    out: dict = {}
    t0 = time.time()
    with paddle.no_grad():
        for b in range(sum(1 for k in ref.files if k.endswith(".input"))):
            p = f"{b}."
            inputs = {"image": paddle.to_tensor(ref[p + "input"][None].astype(np.float64)),
                      "im_shape": paddle.to_tensor(ref[p + "im_shape"][None].astype(np.float64)),
                      "scale_factor": paddle.to_tensor(ref[p + "scale_factor"][None].astype(np.float64))}
            for k in ("input", "im_shape", "scale_factor"):
                out[p + k] = ref[p + k]
            R.run_rcnn(model, inputs, out, p, arch == "cascade")
    np.savez_compressed(os.path.join(run, "ref64.npz"), **out)
    print(f"float64 forward: {time.time() - t0:.1f}s -> {os.path.join(run, 'ref64.npz')}")


if __name__ == "__main__":
    main()
