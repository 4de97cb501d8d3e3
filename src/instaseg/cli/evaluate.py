"""`instaseg eval`: COCO box and mask AP of a checkpoint on a dataset, or of any COCO results file."""

from __future__ import annotations

import argparse

from instaseg.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="COCO box/mask AP of a checkpoint, or of a results json")
    p.add_argument("--checkpoint", help="instaseg checkpoint to evaluate on --data")
    p.add_argument("--data", help="COCO dataset folder")
    p.add_argument("--split", default="val")
    p.add_argument("--gt", help="ground-truth COCO annotations json (with --pred)")
    p.add_argument("--pred", help="COCO results json (with --gt)")
    p.add_argument("--max-dets", type=int, default=100, help="detections per image considered")
    p.add_argument(
        "--area-from",
        choices=("mask", "box"),
        default="mask",
        help="what sizes a detection for mask APs/APm/APl: its mask area (detectron2, torchvision; default) or its "
        "box area (pycocotools' COCOeval on a results file with boxes)",
    )
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--out", help="folder for evaluate_result.json")
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from instaseg.engine.evaluate import evaluate, print_metrics
    from instaseg.evaluation.files import evaluate_files

    if args.gt or args.pred:
        if not (args.gt and args.pred):
            raise UserError("--gt and --pred go together")
        result = evaluate_files(args.gt, args.pred, max_dets=args.max_dets, out=args.out, area_from=args.area_from)
    elif args.checkpoint and args.data:
        result = evaluate(
            args.checkpoint,
            args.data,
            split=args.split,
            max_dets=args.max_dets,
            batch_size=args.batch_size,
            device=args.device,
            out=args.out,
            area_from=args.area_from,
        )
    else:
        raise UserError("give --checkpoint and --data, or --gt and --pred")
    print_metrics(result)
    return 0
