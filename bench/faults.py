"""Kill -9 at random moments, then check that nothing was lost: the tallies of reliability under faults.

    python bench/faults.py [--kills 20] [--epochs 12] [--seed 0] [--predict-files 10000] [--work DIR]

1. Training: one uninterrupted reference run, then the same run killed with SIGKILL ``--kills`` times at seeded
   random moments (start-up, steps, validation, checkpoint writing) and continued with ``--resume`` each time
   (started afresh while no last.ckpt exists yet). After every kill best.ckpt and last.ckpt must load; at the end
   metrics.csv and train.log must hold each epoch exactly once, in order, and the final mask AP is printed
   beside the reference's (equal within noise: the resumed run redoes at most the epoch it lost).
2. `instaseg export` and `instaseg data convert` killed midway: the output is absent or complete, never a
   half-written file or folder that looks finished; the same command then succeeds.
3. `instaseg predict` over a folder of ``--predict-files`` files with zero-byte, truncated, 16-bit, CMYK,
   non-image and one 50-megapixel file mixed in, plus a corrupt video: it must finish, skip exactly the broken
   ones, and its peak memory is printed beside that of a run over 100 files (bounded: it does not grow with N).

Everything runs on the CPU with `maskrcnn_fast` shrunk to 64 px; the training part takes a few minutes.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from instaseg.data.coco import load_dataset
from instaseg.data.synthetic import generate_synthetic
from instaseg.errors import UserError
from instaseg.models.checkpoint import load_checkpoint

TINY = [
    "input.min_size=64",
    "input.max_size=64",
    "model.fpn_channels=16",
    "model.representation_size=64",
    "model.mask_head_layers=[16]",
    "model.mask_dim_reduced=16",
    "train.batch_size=2",
    "train.base_batch=2",  # train.lr as written at this batch
    "train.num_workers=0",
    "train.warmup_iters=2",
    "train.lr=0.01",
    "train.early_stop_patience=null",
]
CLI = [sys.executable, "-m", "instaseg"]
ENV_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_cli(args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=_env())


def _env() -> dict[str, str]:
    import os

    return {**os.environ, **ENV_THREADS}


def kill_after(args: list[str], seconds: float) -> bool:
    """Start the command, SIGKILL it after ``seconds``; True when it was killed (False: it had finished)."""
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def train_args(data: Path, out: Path, epochs: int) -> list[str]:
    args = ["train", "--model", "maskrcnn_fast", "--data", str(data), "--out", str(out), "--device", "cpu"]
    args += ["--epochs", str(epochs), "--weights", "none"]
    if (out / "last.ckpt").is_file():
        args.append("--resume")
    return args + [a for o in TINY for a in ("-o", o)]


def checkpoints_load(out: Path) -> bool:
    for name in ("best.ckpt", "last.ckpt"):
        if (out / name).exists():
            try:
                load_checkpoint(out / name)
            except UserError as e:
                print(f"  broken checkpoint: {e}")
                return False
    return True


def epochs_in(out: Path) -> tuple[list[int], list[int]]:
    log = (out / "train.log").read_text() if (out / "train.log").exists() else ""
    logged = [int(m) for m in re.findall(r"instaseg\.train: epoch (\d+): ", log)]
    csv = (out / "metrics.csv").read_text().splitlines()[1:] if (out / "metrics.csv").exists() else []
    return logged, [int(line.split(",")[0]) for line in csv if line]


def final_ap(out: Path) -> float:
    import json

    metrics = json.loads((out / "train_result.json").read_text())["best_metrics"]
    return float(metrics.get("mask_AP") or 0.0)


def bench_training(data: Path, work: Path, kills: int, epochs: int, rng: random.Random) -> dict:
    reference = work / "reference"
    start = time.monotonic()
    done = run_cli(train_args(data, reference, epochs))
    duration = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"reference run failed:\n{done.stderr[-2000:]}")
    print(f"reference run: {epochs} epochs in {duration:.0f} s, best mask AP {final_ap(reference):.4f}")
    out = work / "killed"
    survived = tried = resumed = 0
    while tried < kills:
        resuming = (out / "last.ckpt").is_file()
        moment = rng.uniform(0.5, 15.0)  # start-up takes ~5 s: most kills land in steps, validation or saving
        if not kill_after(train_args(data, out, epochs), moment):
            print(f"run finished before its kill at {moment:.1f} s; going on with a new run folder")
            out = out.with_name(out.name + "+")
            continue
        tried += 1
        resumed += resuming
        stale = [p.name for p in out.glob(".*.tmp")]
        ok = checkpoints_load(out)
        survived += ok
        where = "while writing " + ", ".join(stale) if stale else ""
        verdict = "ok" if ok else "BROKEN"
        print(f"kill {tried:2d} after {moment:5.1f} s{' (resumed run)' if resuming else ''}: {verdict} {where}")
    finished = run_cli(train_args(data, out, epochs))
    resumed += 1
    logged, rows = epochs_in(out)
    expected = list(range(epochs))
    contiguous = logged == expected and rows == expected
    print(f"final resume: exit {finished.returncode}; train.log epochs {logged}; metrics.csv epochs {rows}")
    return {
        "kills_survived": survived,
        "kills_tried": tried,
        "runs_resumed": resumed,
        "epochs_intact": contiguous and finished.returncode == 0 and checkpoints_load(out),
        "ap_reference": final_ap(reference),
        "ap_killed": final_ap(out) if finished.returncode == 0 else float("nan"),
    }


def export_complete(folder: Path) -> bool | None:
    """None: nothing written; True: a whole, valid model; False: something that is neither."""
    import onnx

    visible = [p for p in folder.glob("*") if not p.name.startswith(".")] if folder.exists() else []
    if not visible:
        return None
    try:
        onnx.checker.check_model(onnx.load(str(folder / "model.onnx")))
        return True
    except Exception:
        return False


def dataset_complete(folder: Path) -> bool | None:
    """None: nothing (or an empty folder) written; True: a whole dataset; False: a partial one."""
    if not folder.exists() or not any(folder.iterdir()):
        return None
    try:
        splits = load_dataset(folder)
        return all(data.image_path(im).is_file() for data in splits.values() for im in data.images)
    except (UserError, OSError):
        return False


def bench_killed_writers(data: Path, big_data: Path, ckpt: Path, work: Path, count: int, rng: random.Random) -> dict:
    intact = tried = 0
    for i in range(count):
        out = work / f"export{i}"
        args = ["export", "--checkpoint", str(ckpt), "--out", str(out), "--img-size", "64"]
        killed = kill_after(args, rng.uniform(0.5, 8.0))
        state = export_complete(out)
        again = run_cli(args).returncode == 0 and export_complete(out) is True if state is not True else True
        tried += 1
        intact += state is not False and again
        print(f"export kill {i}: {'killed' if killed else 'finished first'}, output {_state(state)}, rerun ok: {again}")
    start = time.monotonic()
    run_cli(["data", "convert", str(big_data), "--from", "coco", "--out", str(work / "convert_timed")])
    convert_s = time.monotonic() - start
    for i in range(count):
        out = work / f"convert{i}"
        args = ["data", "convert", str(big_data), "--from", "coco", "--out", str(out)]
        killed = kill_after(args, rng.uniform(0.3, convert_s))
        state = dataset_complete(out)
        again = state is True or (run_cli(args).returncode == 0 and dataset_complete(out) is True)
        tried += 1
        intact += state is not False and again
        print(
            f"convert kill {i}: {'killed' if killed else 'finished first'}, output {_state(state)}, rerun ok: {again}"
        )
    return {"files_intact": intact, "files_tried": tried}


def _state(state: bool | None) -> str:
    return {None: "absent", True: "complete", False: "HALF-WRITTEN"}[state]


def broken_folder(folder: Path, files: int, rng: np.random.Generator) -> int:
    """``files`` files, three in ten broken (zero bytes, truncated, text named .jpg), plus a 16-bit, a CMYK and
    a 50-megapixel picture that must all be read; returns how many are broken."""
    folder.mkdir(parents=True)
    good = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(good).save(folder / "template.png")
    template = (folder / "template.png").read_bytes()
    broken = 0
    for i in range(files - 4):  # with the template and the three special pictures below: ``files`` in all
        kind = i % 10
        path = folder / f"{i:05d}.png"
        if kind == 0:
            path.write_bytes(b"")
        elif kind == 1:
            path.write_bytes(template[: len(template) // 3])
        elif kind == 2:
            path.with_suffix(".jpg").write_text("this is a text file named like an image")
        else:
            path.write_bytes(template)
        broken += kind in (0, 1, 2)
    Image.fromarray(good[..., 0].astype(np.uint16) * 200).save(folder / "deep16.png")
    Image.fromarray(good).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.zeros((7072, 7072, 3), np.uint8)).save(folder / "big50mp.png", compress_level=1)
    return broken


def bench_predict(ckpt: Path, work: Path, files: int) -> dict:
    rng = np.random.default_rng(0)
    video = work / "corrupt.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    results = {}
    for n in (100, files):
        folder = work / f"predict_in_{n}"
        broken = broken_folder(folder, n, rng) + 1  # + the corrupt video
        args = ["predict", "--checkpoint", str(ckpt), "--input", str(folder), str(video), "--device", "cpu"]
        args += ["--out", str(work / f"predict_out_{n}"), "--save-json"]
        start = time.monotonic()
        rss = _peak_rss_mb(args)
        done, skipped = rss["result"], _skipped(rss["result"].stdout)
        ok = done.returncode == 0 and skipped == broken
        print(
            f"predict over {n} files: exit {done.returncode}, skipped {skipped} of {broken} broken, "
            f"peak RSS {rss['mb']:.0f} MB, {time.monotonic() - start:.0f} s; {done.stdout.strip().splitlines()[-1]}"
        )
        results[n] = {"ok": ok, "rss_mb": rss["mb"]}
    return results


def _peak_rss_mb(args: list[str]) -> dict:
    """Run in a fresh child so RUSAGE_CHILDREN's high-water mark is this command's alone."""
    code = (
        "import resource, subprocess, sys, json;"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        "print(json.dumps([r.returncode, r.stdout, r.stderr, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    import json

    raw = subprocess.run([sys.executable, "-c", code, *CLI, *args], capture_output=True, text=True, env=_env())
    rc, stdout, stderr, maxrss = json.loads(raw.stdout)
    return {"result": subprocess.CompletedProcess(args, rc, stdout, stderr), "mb": maxrss / 1024}


def _skipped(stdout: str) -> int:
    found = re.search(r"(\d+) skipped", stdout)
    return int(found.group(1)) if found else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--predict-files", type=int, default=10000)
    parser.add_argument("--work", help="working folder (default: a temporary one, removed at the end)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="instaseg_faults_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        data = generate_synthetic(work / "shapes", num_images=10, img_size=64, seed=0)
        big = generate_synthetic(work / "shapes_big", num_images=2000, img_size=64, seed=1)
        train = bench_training(data, work, args.kills, args.epochs, rng)
        writers = bench_killed_writers(data, big, work / "reference" / "best.ckpt", work, max(2, args.kills // 4), rng)
        predict = bench_predict(work / "reference" / "best.ckpt", work, args.predict_files)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print("\n== tallies ==")
    print(f"kills survived / tried:   {train['kills_survived']} / {train['kills_tried']}")
    print(f"runs resumed:             {train['runs_resumed']} (epochs unique and contiguous: {train['epochs_intact']})")
    ap_killed, ap_reference = train["ap_killed"], train["ap_reference"]
    print(f"final mask AP:            {ap_killed:.4f} killed+resumed vs {ap_reference:.4f} uninterrupted")
    print(f"files intact / tried:     {writers['files_intact']} / {writers['files_tried']} (export and convert)")
    small, large = predict[100], predict[args.predict_files]
    print(
        f"predict finished:         {small['ok'] and large['ok']} (peak RSS {small['rss_mb']:.0f} MB over 100 files, "
        f"{large['rss_mb']:.0f} MB over {args.predict_files})"
    )


if __name__ == "__main__":
    main()
