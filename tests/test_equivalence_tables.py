"""The table tools/mmdet_equivalence.py prints (tools/equivalence_tables.py, no MMDetection needed): every row has
as many cells as its header, with or without the column of ``--reference-channels rgb`` runs."""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from equivalence_tables import HEADER, compare_instances, header, table_row, worst  # noqa: E402


def _result(drift: dict | None = None) -> dict:
    box = np.array([[1.0, 2.0, 9.0, 12.0]])
    masks = np.zeros((1, 16, 16), bool)
    masks[0, 2:12, 1:9] = True
    one = {"boxes": box, "scores": np.array([0.5]), "labels": np.array([3]), "masks": masks}
    instances = worst([compare_instances(one, one)])
    out = {
        "model": "rtmdet_ins_l",
        "pictures": ["a.jpg"],
        "features": 0.0,
        "head": 0.0,
        "same_input": instances,
        "own_processing": instances,
        "reference_input_our_post_processing": instances,
        "losses": {"loss_cls": {"reference": 2.0, "ours": 2.0, "rel": 0.0}},
        "assignment": "same (1 positives)",
    }
    if drift:
        out["channel_order_drift"] = drift
    return out


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_rows_match_their_header_with_and_without_the_channel_order_column():
    assert header() == HEADER
    plain, rgb = _cells(header().split("\n")[0]), _cells(header(True).split("\n")[0])
    assert len(rgb) == len(plain) + 1 and rgb[:-1] == plain
    assert len(_cells(header(True).split("\n")[1])) == len(rgb)
    assert len(_cells(table_row(_result()))) == len(plain)
    row = _cells(table_row(_result({"features": 6.8e-3, "head": 7.9e-3})))
    assert len(row) == len(rgb) and row[-1] == "6.8e-03, 7.9e-03"
