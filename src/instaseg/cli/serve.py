"""`instaseg serve`: the model behind an HTTP API (PaddleX-compatible), on uvicorn or Ray Serve."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP (PaddleX-compatible /instance-segmentation)")
    p.add_argument("--model", required=True, help="instaseg checkpoint or exported model (.onnx, .xml, .engine)")
    p.add_argument("--backend", choices=("auto",), help="auto: the fastest backend within 0.5 mask AP of fp32 "
                   "on --val-data, measured once and cached (see `instaseg benchmark --backend auto`)")
    p.add_argument("--val-data", help="dataset root whose val split --backend auto measures accuracy on")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    p.add_argument("--threshold", type=float, help="default score threshold (a request's own wins)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=1, help="worker processes, each with its own model")
    p.add_argument("--threads", type=int, help="torch CPU threads per worker (default: the cores split over workers)")
    batching = p.add_argument_group("batching and limits")
    batching.add_argument("--max-batch-size", type=int, default=8, help="requests per backend call (1: no batching)")
    batching.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits to fill")
    batching.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond this get 503")
    batching.add_argument("--timeout", type=float, default=30.0, help="seconds before a request gets 504")
    batching.add_argument("--max-body-mb", type=float, default=20.0, help="larger request bodies get 413")
    batching.add_argument("--max-megapixels", type=float, default=30.0, help="larger images get 413")
    safety = p.add_argument_group("safety")
    safety.add_argument("--allow-url-host", action="append", default=[], metavar="HOST",
                        help="let image fields be http(s) URLs on HOST (repeatable; *.example.com for subdomains); "
                        "URL inputs are off without it")
    safety.add_argument("--api-key-file", help="file holding the API key the prediction endpoints require "
                        "(or set INSTASEG_API_KEY)")
    safety.add_argument("--no-visualize", action="store_true", help="PaddleX answers omit the overlay image unless "
                        "a request asks for it")
    ray = p.add_argument_group("Ray Serve (--engine ray; pip install 'instaseg[ray]')")
    ray.add_argument("--engine", choices=("uvicorn", "ray"), default="uvicorn")
    ray.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas, each with its own model")
    ray.add_argument("--autoscale", metavar="MIN:MAX", help="Ray Serve autoscaling between MIN and MAX replicas")
    ray.add_argument("--ray-address", help="an existing Ray cluster; default a local one")
    p.set_defaults(func=_serve)


def _api_key(args: argparse.Namespace) -> str | None:
    from instaseg.deploy.serve.config import API_KEY_ENV
    from instaseg.errors import UserError

    if args.api_key_file:
        path = Path(args.api_key_file)
        if not path.is_file():
            raise UserError("API key file not found", path)
        key = path.read_text(encoding="utf-8").strip()
        if not key:
            raise UserError("API key file is empty", path)
        return key
    return os.environ.get(API_KEY_ENV) or None


def _model(args: argparse.Namespace) -> tuple[str, str]:
    """(model file, device) to serve: the given one, or the one --backend auto chooses (once, here)."""
    from instaseg.errors import UserError
    from instaseg.utils.device import resolve_device

    if args.backend != "auto":
        return args.model, resolve_device(args.device).type
    if not args.val_data:
        raise UserError("--backend auto needs --val-data: a dataset root whose val split measures accuracy")
    from instaseg.deploy.autobackend import choose_backend

    choice = choose_backend(args.model, args.val_data, device=args.device)["choice"]
    print(f"backend auto: {choice.label} ({choice.model})", file=sys.stderr)
    return choice.model, choice.device


def _serve(args: argparse.Namespace) -> int:
    from instaseg.deploy.serve.config import ServeConfig
    from instaseg.deploy.serve.server import is_loopback
    from instaseg.inference.predictor import create_model

    autoscale = _autoscale(args.autoscale)
    model, device = _model(args)
    config = ServeConfig(
        model=str(Path(model).resolve()), device=device, threshold=args.threshold, host=args.host,
        port=args.port, workers=args.workers, threads=args.threads, max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, timeout_s=args.timeout, max_body_mb=args.max_body_mb,
        max_megapixels=args.max_megapixels, url_hosts=args.allow_url_host, api_key=_api_key(args),
        visualize=not args.no_visualize,
    )
    create_model(config.model, device=config.device)  # a bad model file fails here in one line, not in N workers
    if not is_loopback(config.host) and not config.api_key:
        print(f"warning: listening on {config.host} without an API key: anyone who reaches it may call it",
              file=sys.stderr)
    if args.engine == "ray":
        from instaseg.deploy.serve.ray_app import run_ray

        run_ray(config, replicas=args.replicas, autoscale=autoscale, address=args.ray_address)
        return 0
    from instaseg.deploy.serve.server import run

    print(f"serving {Path(config.model).name} on http://{config.host}:{config.port} "
          f"({config.workers} worker(s); API docs at /docs, a page to try it at /)", file=sys.stderr)
    run(config)
    return 0


def _autoscale(value: str | None) -> tuple[int, int] | None:
    from instaseg.errors import UserError

    if value is None:
        return None
    try:
        low, high = (int(v) for v in value.split(":"))
    except ValueError:
        raise UserError(f"--autoscale expects MIN:MAX replicas, got {value!r}") from None
    if not 0 <= low <= high or high < 1:
        raise UserError(f"--autoscale expects 0 <= MIN <= MAX and MAX >= 1, got {value!r}")
    return low, high
