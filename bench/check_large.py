"""Time `instaseg data check` on a COCO-sized dataset: 100k images, 1M polygon instances (defaults).

What is generated (not timed): one annotation json with ``--images`` image records and ``--instances``
polygon annotations (6-30 points each, bbox and area filled in, 10 classes), and one real PNG file per image
record. The PNGs are flat-colour images at full size (640x480 and three other sizes, so the header size check
compares real numbers) that compress to ~2 KB each; the check reads only their headers, as it does for real
photos, so file size does not change what is timed. A few problems are planted (missing files, boxes leaving
the image, short polygons, an unknown category) so the problem paths run too.

What is timed: the whole `check_dataset(json, out=...)` call as the command line runs it -- json loading and
type validation, the existence + header check of every image file (warm page cache after generation), all
annotation checks, statistics, histogram, 4 sample pictures and the report. Loading alone is timed as well
to show the split. Run: ``python bench/check_large.py [--images N --instances M --dir DIR]``.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import time
from pathlib import Path

import numpy as np
from PIL import Image

from instaseg.data.check import check_dataset
from instaseg.data.coco import load_coco, split_file

SIZES = ((640, 480), (480, 640), (800, 600), (1024, 768))


def png_bytes(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (120, 130, 140)).save(buf, format="PNG")
    return buf.getvalue()


def polygons(rng: np.random.Generator, n: int, w: np.ndarray, h: np.ndarray) -> tuple[list, np.ndarray]:
    """n star-shaped polygons (one part each) inside their images, and their boxes [x, y, w, h]."""
    npts = rng.integers(6, 31, n)
    radius = rng.uniform(0.02, 0.45, n) * np.minimum(w, h)
    cx, cy = rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)
    owner = np.repeat(np.arange(n), npts)
    starts = np.cumsum(npts) - npts
    step = np.arange(len(owner)) - np.repeat(starts, npts)  # point index within its polygon
    angle = (step + rng.uniform(0, 0.5, len(owner))) * 2 * np.pi / npts[owner]  # increasing: a simple polygon
    r = radius[owner] * rng.uniform(0.5, 1.0, len(owner))
    xs = np.round(cx[owner] + r * np.cos(angle), 2)
    ys = np.round(cy[owner] + r * np.sin(angle), 2)
    flat = np.stack([xs, ys], axis=1).reshape(-1).tolist()
    ends = np.cumsum(npts * 2)
    segs, start = [], 0
    for end in ends.tolist():
        segs.append([flat[start:end]])
        start = end
    x0, x1 = np.minimum.reduceat(xs, starts), np.maximum.reduceat(xs, starts)
    y0, y1 = np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts)
    boxes = np.round(np.stack([x0, y0, x1 - x0, y1 - y0], axis=1), 2)
    return segs, boxes


def generate(folder: Path, n_images: int, n_instances: int, seed: int = 0) -> Path:
    ann_file = split_file(folder, "train")
    if ann_file.is_file():
        print(f"reusing {ann_file}")
        return ann_file
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    templates = [png_bytes(w, h) for w, h in SIZES]
    size_idx = rng.integers(0, len(SIZES), n_images)
    images = []
    for i in range(n_images):
        w, h = SIZES[size_idx[i]]
        name = f"{i:07d}.png"
        (folder / "images" / name).write_bytes(templates[size_idx[i]])
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
    image_of = np.sort(rng.integers(0, n_images, n_instances))
    wh = np.array(SIZES)[size_idx[image_of]]
    segs, boxes = polygons(rng, n_instances, wh[:, 0].astype(float), wh[:, 1].astype(float))
    cats = rng.integers(1, 11, n_instances)
    anns = [
        {"id": k + 1, "image_id": int(image_of[k]) + 1, "category_id": int(cats[k]), "segmentation": segs[k],
         "bbox": boxes[k].tolist(), "area": float(boxes[k, 2] * boxes[k, 3] / 2), "iscrowd": 0}
        for k in range(n_instances)
    ]  # fmt: skip
    plant_problems(folder, images, anns, rng)
    categories = [{"id": c, "name": f"class_{c}"} for c in range(1, 11)]
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    with open(ann_file, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": categories}, f)
    return ann_file


def plant_problems(folder: Path, images: list, anns: list, rng: np.random.Generator) -> None:
    for i in rng.choice(len(images), 20, replace=False):
        (folder / "images" / images[i]["file_name"]).unlink()
    for k in rng.choice(len(anns), 100, replace=False):
        anns[k]["bbox"][0] += 5000
    for k in rng.choice(len(anns), 50, replace=False):
        anns[k]["segmentation"].append([1.0, 1.0, 2.0, 2.0])
    anns[0]["category_id"] = 99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/instaseg_check_large"))
    args = parser.parse_args()
    data = args.dir / f"coco_{args.images}_{args.instances}"
    t0 = time.perf_counter()
    ann_file = generate(data, args.images, args.instances)
    print(f"generated in {time.perf_counter() - t0:.1f} s: {ann_file} ({ann_file.stat().st_size / 1e6:.0f} MB)")
    t0 = time.perf_counter()
    load_coco(ann_file)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = check_dataset(ann_file, out=args.dir / "report", num_samples=4)
    t_check = time.perf_counter() - t0
    attrs = report["attributes"]
    print(f"images {attrs['train_samples']}, instances {attrs['train_instances']}, problems {report['problem_counts']}")
    print(f"load_coco alone: {t_load:.1f} s")
    print(f"check_dataset total: {t_check:.1f} s (check_pass={report['check_pass']})")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.1f} GB")


if __name__ == "__main__":
    main()
