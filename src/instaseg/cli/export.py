"""`instaseg export`: a checkpoint -> a self-contained ONNX, OpenVINO (optionally INT8) or TensorRT model."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint to ONNX, OpenVINO (fp32, fp16, bf16, INT8) or TensorRT (fp32, fp16)"
    )
    p.add_argument("--checkpoint", required=True, help="instaseg checkpoint (.ckpt/.pt)")
    p.add_argument(
        "--format", choices=("onnx", "openvino", "tensorrt"), default="onnx", help="tensorrt: an engine for this GPU"
    )
    p.add_argument("--out", help="output folder (default: export/ beside the checkpoint)")
    p.add_argument("--img-size", type=int, help="input size (min and max side); default the checkpoint's")
    p.add_argument("--dynamic", action="store_true", help="any input height and width (default: one fixed square)")
    p.add_argument(
        "--precision", choices=("fp32", "fp16", "bf16"), default="fp32", help="fp16: OpenVINO, TensorRT; bf16: OpenVINO"
    )
    p.add_argument("--int8", action="store_true", help="NNCF post-training INT8 quantization (OpenVINO)")
    p.add_argument(
        "--calib-data",
        help="images for INT8 calibration: a dataset root (its train split), a folder (searched recursively) or a glob",
    )
    p.add_argument("--calib-size", type=int, default=100, help="calibration images used (default 100)")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from instaseg.export import export_model

    result = export_model(
        args.checkpoint,
        format=args.format,
        out=args.out,
        img_size=args.img_size,
        dynamic=args.dynamic,
        precision=args.precision,
        int8=args.int8,
        calib_data=args.calib_data,
        calib_size=args.calib_size,
    )
    meta = result["metadata"]
    graph = meta["graph"]
    shape = "dynamic height and width" if graph["dynamic"] else f"fixed {graph['height']}x{graph['width']}"
    h, w = meta["gflops_input"]
    kind = meta["precision"] + (" + INT8" if meta["int8"] else "")
    print(
        f"exported {result['path']} ({result['format']}, {kind}, {shape}, "
        f"{len(meta['class_names'])} classes, {meta['gflops']:.1f} GFLOPs at {h}x{w})"
    )
    return 0
