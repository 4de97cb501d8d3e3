"""Batch prediction over large image stores on Ray Data (`instaseg predict --engine ray`, the ``ray`` extra).

The inputs (a folder, a glob, a list file, or the same on an object store such as ``s3://bucket/images/``) are
listed once, sorted, and cut into shards of ``shard_size`` images. Ray Data hands shards to a pool of actors, each
holding one `Predictor` (any backend, CPU or GPU) for its lifetime; an actor reads its shard's images, predicts,
and writes the shard's results atomically as JSON lines or Parquet, one record per image in the schema of
`Result.json` (image path, size, boxes as ``{cls_id, label, score, coordinate}``, RLE masks). ``manifest.json``
records the job and every finished shard, so a rerun with the same job skips the shards already written: a job
killed halfway loses at most the shards in flight.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from instaseg.errors import UserError
from instaseg.utils.images import IMAGE_EXTENSIONS
from instaseg.utils.io import atomic_write, atomic_write_json, atomic_write_text

FORMATS = ("jsonl", "parquet")
MANIFEST = "manifest.json"
LIST_SUFFIXES = (".txt", ".lst")
SHARD_COUNTS = ("images", "skipped", "seconds")  # what each finished shard reports to the manifest


def _is_remote(spec: str) -> bool:
    return "://" in spec and not spec.startswith("file://")


def _remote_images(spec: str) -> list[str]:
    """Image URIs under an object-store folder, matching a glob, or the one object named."""
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(spec)
    except (pafs.ArrowInvalid, OSError, ValueError) as e:
        raise UserError(f"cannot open object store: {e}", spec) from None
    scheme = spec.split("://", 1)[0]
    pattern = path if any(c in path for c in "*?[") else None
    base = path.split("*", 1)[0].rsplit("/", 1)[0] if pattern else path
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.File:
        return [spec]
    if info.type != pafs.FileType.Directory:
        raise UserError("input not found", spec)
    found = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    names = sorted(f.path for f in found if f.type == pafs.FileType.File)
    names = [n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS]
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    if not names:
        raise UserError("no images found", spec)
    return [f"{scheme}://{n}" for n in names]


def list_inputs(inputs: list[str]) -> list[str]:
    """Every image the inputs name, in a stable order, each once: local paths (folders searched recursively, globs),
    list files (one path or URI per line), and object-store folders, globs or objects."""
    from instaseg.inference.sources import expand_paths, is_video

    found: list[str] = []
    for spec in map(str, inputs):
        if _is_remote(spec):
            found += _remote_images(spec)
        elif Path(spec).suffix.lower() in LIST_SUFFIXES and Path(spec).is_file():
            lines = Path(spec).read_text(encoding="utf-8").splitlines()
            found += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        else:
            paths = expand_paths(spec)
            videos = [p for p in paths if is_video(p)]
            if videos:
                raise UserError("the ray engine predicts images; run videos without --engine ray", videos[0])
            found += [str(p) for p in paths]
    return list(dict.fromkeys(found))


def read_bytes(uri: str) -> bytes:
    if _is_remote(uri):
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(uri)
        with fs.open_input_stream(path) as f:
            return f.read()
    return Path(uri.removeprefix("file://")).read_bytes()


def result_record(result: Any, path: str) -> dict:
    """One image's record in both output formats: `Result.json`, the schema of every instaseg result (``input_path``,
    ``height``, ``width``, ``boxes`` as ``[{cls_id, label, score, coordinate}]``, ``masks`` as COCO RLE), with the
    image's path or URI."""
    return {**result.json, "input_path": path}


def shard_file(out: Path, index: int, fmt: str) -> Path:
    return out / f"shard-{index:05d}.{fmt}"


def write_shard(path: Path, records: list[dict], fmt: str) -> None:
    if fmt == "jsonl":
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(records, schema=_parquet_schema())
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _parquet_schema() -> Any:
    import pyarrow as pa

    # the json records' own nesting: one schema for both formats (pyarrow's list_flatten unnests it for queries)
    fields = [("cls_id", pa.int64()), ("label", pa.string()), ("score", pa.float64())]
    box = pa.struct([*fields, ("coordinate", pa.list_(pa.float64()))])
    rle = pa.struct([("size", pa.list_(pa.int64())), ("counts", pa.string())])
    return pa.schema(
        [
            ("input_path", pa.string()),
            ("height", pa.int64()),
            ("width", pa.int64()),
            ("boxes", pa.list_(box)),
            ("masks", pa.list_(rle)),
            ("error", pa.string()),
        ]
    )


class ShardPredictor:
    """A Ray actor: one predictor for its lifetime; each call predicts whole shards and writes them."""

    def __init__(
        self,
        model: str,
        device: str,
        threshold: float | None,
        batch_size: int,
        threads: int,
        out: str,
        fmt: str,
        tile: str | int | None = "auto",
    ):
        import torch

        from instaseg.inference.predictor import create_model

        torch.set_num_threads(threads)
        self.predictor = create_model(model, device=device, threshold=threshold, tile=tile)
        self.batch_size, self.out, self.fmt = batch_size, Path(out), fmt

    def _predict(self, paths: list[str]) -> list[dict]:
        """Records of a few images, in order; only these images are held in memory at once."""
        from instaseg.utils.images import decode_image

        records: list[dict | None] = [None] * len(paths)
        images, slots = [], []
        for slot, path in enumerate(paths):
            try:
                images.append(decode_image(read_bytes(path), path))
                slots.append(slot)
            except (UserError, OSError) as e:  # unreadable: recorded with its reason, the shard goes on
                records[slot] = {"input_path": path, "error": str(e)}
        results = self.predictor.predict(images, batch_size=self.batch_size) if images else []
        for slot, result in zip(slots, results, strict=True):
            records[slot] = result_record(result, paths[slot])
        return records

    def _shard(self, index: int, paths: list[str]) -> dict:
        start = time.perf_counter()
        records: list[dict] = []
        for first in range(0, len(paths), self.batch_size):
            records += self._predict(paths[first : first + self.batch_size])
        write_shard(shard_file(self.out, index, self.fmt), records, self.fmt)
        skipped = sum("error" in r for r in records)
        return {"images": len(records) - skipped, "skipped": skipped, "seconds": time.perf_counter() - start}

    def __call__(self, batch: dict) -> dict:
        pairs = zip(batch["shard"], batch["paths"], strict=True)
        done = [self._shard(int(i), [str(p) for p in paths]) for i, paths in pairs]
        return {"shard": list(batch["shard"]), **{k: [d[k] for d in done] for k in SHARD_COUNTS}}


def plan_shards(paths: list[str], shard_size: int) -> list[list[str]]:
    if shard_size < 1:
        raise UserError(f"--shard-size must be at least 1, got {shard_size}")
    return [paths[i : i + shard_size] for i in range(0, len(paths), shard_size)]


def job_key(model: str, paths: list[str], settings: dict) -> str:
    """What makes two runs the same job: the model file, the inputs in order and the settings that change results."""
    stat = Path(model).stat()
    key = json.dumps([str(Path(model).resolve()), stat.st_size, stat.st_mtime_ns, paths, settings], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def _check_manifest(out: Path, key: str) -> dict:
    """The finished shards recorded by an earlier run of this job; another job's folder is refused."""
    path = out / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError("unreadable manifest of an earlier run (remove it to start over)", path) from None
    if manifest.get("job") != key:
        raise UserError("holds another job's results (other model, inputs or settings): use another --out", path)
    return {int(k): v for k, v in manifest.get("shards", {}).items()}


def _write_manifest(out: Path, key: str, settings: dict, shards: list[list[str]], done: dict) -> None:
    atomic_write_json(
        out / MANIFEST,
        {
            "job": key,
            "settings": settings,
            "total_images": sum(len(s) for s in shards),
            "total_shards": len(shards),
            "complete": len(done) == len(shards),
            "shards": {str(k): done[k] for k in sorted(done)},
        },
    )


def predict_ray(
    model: str | Path,
    inputs: list[str],
    out: str | Path,
    batch_size: int = 1,
    concurrency: int = 2,
    gpus_per_actor: float = 0.0,
    threshold: float | None = None,
    fmt: str = "jsonl",
    shard_size: int = 256,
    address: str | None = None,
    progress: Any = None,
    tile: str | int | None = "auto",
) -> dict:
    """Predict every image of ``inputs`` on Ray Data into shard files under ``out``; returns the manifest's totals.

    ``concurrency`` actors, each with one model (on a GPU share of ``gpus_per_actor`` when above 0, else on
    CPU threads split evenly), predicting ``batch_size`` images per call. ``address``: an existing Ray cluster
    ("auto", "ray://host:10001"); default a local instance. ``tile``: as `create_model`'s (large images on tiles)."""
    import ray

    if fmt not in FORMATS:
        raise UserError(f"unknown results format {fmt!r}; use {' or '.join(FORMATS)}")
    if concurrency < 1 or batch_size < 1:
        raise UserError("--concurrency and --batch-size must be at least 1")
    model = str(model)
    if not Path(model).is_file():
        raise UserError("model file not found", model)
    paths = list_inputs(inputs)
    shards = plan_shards(paths, shard_size)
    settings = {"threshold": threshold, "format": fmt, "shard_size": shard_size, "tile": tile}
    out = Path(out)
    key = job_key(model, paths, settings)
    done = _check_manifest(out, key)
    done = {k: v for k, v in done.items() if shard_file(out, k, fmt).is_file()}
    todo = [i for i in range(len(shards)) if i not in done]
    _write_manifest(out, key, settings, shards, done)
    start = time.perf_counter()
    if todo:
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        cpus = int(ray.available_resources().get("CPU", os.cpu_count() or 1))
        device = "cuda" if gpus_per_actor > 0 else "cpu"
        actor_args = (model, device, threshold, batch_size, max(1, cpus // concurrency), str(out), fmt, tile)
        items = [{"shard": i, "paths": shards[i]} for i in todo]
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ShardPredictor,
            fn_constructor_args=actor_args,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(concurrency, len(items))),
            num_gpus=gpus_per_actor or None,
            num_cpus=max(1, cpus // concurrency) if gpus_per_actor == 0 else 1,
            batch_format="numpy",
        )
        for row in dataset.iter_rows():  # shards come back as they finish
            done[int(row["shard"])] = {k: float(row[k]) if k == "seconds" else int(row[k]) for k in SHARD_COUNTS}
            _write_manifest(out, key, settings, shards, done)
            if progress is not None:
                progress(int(row["images"]) + int(row["skipped"]), time.perf_counter() - start)
    images = sum(d["images"] for d in done.values())
    return {
        "images": images,
        "skipped": sum(d["skipped"] for d in done.values()),
        "shards": len(shards),
        "shards_run": len(todo),
        "seconds": time.perf_counter() - start,
        "out": str(out),
    }
