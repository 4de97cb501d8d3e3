"""Each side's own pre-processing, compared at its output: the network input tensors (size, and the pixel
difference over their common area, in normalised units; 1 unit = one ImageNet std, about 58 grey levels)."""

from __future__ import annotations

import cv2
import numpy as np


def input_row(table, model, ref, meta) -> None:
    from instaseg.inference.preprocess import preprocess

    n = sum(1 for k in ref.files if k.endswith(".input"))
    sizes, diffs, means = [], [], []
    for b in range(n):
        img = cv2.cvtColor(cv2.imread(meta["images"][b]), cv2.COLOR_BGR2RGB)
        batch, (size,) = preprocess([img], model.input_spec)
        theirs = tuple(int(v) for v in ref[f"{b}.im_shape"])
        h, w = min(size[0], theirs[0]), min(size[1], theirs[1])
        d = np.abs(batch[0, :, :h, :w].numpy() - ref[f"{b}.input"][:, :h, :w])
        sizes.append(f"{size[0]}x{size[1]} vs {theirs[0]}x{theirs[1]}")
        diffs.append(float(d.max()))
        means.append(float(d.mean()))
    table.add("network input, each side's own pre-processing", max(diffs), float(np.mean(means)),
              all(s.split(" vs ")[0] == s.split(" vs ")[1] for s in sizes) and max(diffs) < 1e-3,
              f"sizes ours vs ref: {', '.join(sizes)}; mean abs diff {np.mean(means):.3g} (normalised units)")
