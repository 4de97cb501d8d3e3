"""`instaseg export`: a checkpoint -> a self-contained ONNX, OpenVINO (optionally INT8) or TensorRT model."""

from __future__ import annotations

import argparse

from instaseg.export.defaults import DEFAULT_CALIB_SIZE, DEFAULT_MAX_AP_DROP, DEFAULT_VAL_IMAGES


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
    p.add_argument(
        "--calib-size",
        type=int,
        default=DEFAULT_CALIB_SIZE,
        help=f"calibration images used (default {DEFAULT_CALIB_SIZE})",
    )
    p.add_argument(
        "--val-data",
        help="INT8: annotated images (a dataset root's val split, or an annotation file) to keep mask AP on; "
        "default: the val split of --calib-data when it is a dataset root",
    )
    p.add_argument(
        "--max-ap-drop",
        type=float,
        default=DEFAULT_MAX_AP_DROP,
        help=f"INT8: mask AP points (0-100) the model may lose; layers return to float until it holds "
        f"(default {DEFAULT_MAX_AP_DROP})",
    )
    p.add_argument(
        "--val-images",
        type=int,
        default=DEFAULT_VAL_IMAGES,
        help=f"INT8: validation images used (default {DEFAULT_VAL_IMAGES})",
    )
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
        val_data=args.val_data,
        max_ap_drop=args.max_ap_drop,
        val_images=args.val_images,
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
    if "report" in result:
        _print_report(result["report"], result["path"])
    return 0


def _print_report(report: dict, path: str) -> None:
    from instaseg.export.exporter import report_path

    sizes, speed = report["size_bytes"], report["network_ms"]
    accuracy = report["accuracy"]
    if accuracy is None:
        print("INT8 accuracy not measured (no validation images: --val-data, or --calib-data with a val split)")
    else:
        before, after = accuracy["fp32"], accuracy["int8"]
        verdict = "within" if report["holds"] else "NOT within"
        print(
            f"mask AP {before['mask_AP']:.1f} -> {after['mask_AP']:.1f}, box AP {before['box_AP']:.1f} -> "
            f"{after['box_AP']:.1f} on {accuracy['images']} validation images "
            f"({verdict} the allowed drop of {report['max_ap_drop']} points)"
        )
    print(
        f"{len(report['float_layers'])} of {report['quantizable_layers']} convolutions / matrix products in float; "
        f"{sizes['fp32'] / 2**20:.1f} MB -> {sizes['int8'] / 2**20:.1f} MB; network {speed['fp32']:.1f} -> "
        f"{speed['int8']:.1f} ms ({report['speedup']:.2f}x); report: {report_path(path)}"
    )
