"""``report.html``: one page that shows an analysis (`instaseg.evaluation.analysis`), its pictures inline and its
tables coloured by value, linking the CSV and JSON files beside it. Plain HTML, no scripts: it opens anywhere."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from instaseg.evaluation.coco import stat_names
from instaseg.evaluation.error_types import ERROR_TYPES
from instaseg.utils.io import atomic_write_text

# the per-class columns the page shows (per_class.csv and the json have the per-size recalls too)
PAGE_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR")
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f0f0f0; } td.name { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: 4px 0; }
.muted { color: #777; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 1.6em; }
"""


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _e(value: Any) -> str:
    return html.escape(str(value))


def _cell(value: Any) -> str:
    """A number cell shaded green by its value in [0, 1]; '-' for COCO's -1 (nothing of the kind to find)."""
    if not isinstance(value, (int, float)) or value < 0:
        return '<td class="muted">-</td>'
    shade = f"rgba(44, 160, 44, {0.08 + 0.5 * min(float(value), 1.0):.2f})"
    return f'<td style="background:{shade}">{value:.3f}</td>'


def _link(path: str, base: Path) -> str:
    rel = Path(path).relative_to(base).as_posix()
    return f'<a href="{_e(rel)}">{_e(rel)}</a>'


def _image(path: str, base: Path) -> str:
    rel = Path(path).relative_to(base).as_posix()
    return f'<a href="{_e(rel)}"><img src="{_e(rel)}" alt="{_e(rel)}"></a>'


def _summary_table(result: dict, kinds: list[str]) -> str:
    metrics = result["metrics"]
    rows = "".join(
        f"<tr><td class='name'>{n}</td>" + "".join(_cell(metrics.get(f"{k}_{n}")) for k in kinds) + "</tr>"
        for n in stat_names(int(result.get("max_dets", 100)))
    )
    return f"<table><tr><th></th>{''.join(f'<th>{k}</th>' for k in kinds)}</tr>{rows}</table>"


def _class_table(per_class: dict[str, dict], kinds: list[str]) -> str:
    head = "<tr><th>class</th><th>objects</th>" + "".join(f"<th>{k} {s}</th>" for k in kinds for s in PAGE_STATS)
    rows = []
    for name, row in per_class.items():
        cells = "".join(_cell(row.get(f"{k}_{s}")) for k in kinds for s in PAGE_STATS)
        rows.append(f"<tr><td class='name'>{_e(name)}</td><td>{row.get('instances', '')}</td>{cells}</tr>")
    return f"<table>{head}</tr>{''.join(rows)}</table>"


def _errors_section(summary: dict, base: Path) -> str:
    kinds = summary["kinds"]
    head = "<tr><th>error</th>" + "".join(f"<th>{k} count</th><th>{k} AP50 if fixed</th>" for k in kinds) + "</tr>"
    rows = ""
    for error in ERROR_TYPES:
        cells = "".join(
            f"<td>{kind['errors']['counts'][error]}</td><td>+{kind['errors']['delta_ap50'][error]:.3f}</td>"
            for kind in kinds.values()
        )
        rows += f"<tr><td class='name'>{error}</td>{cells}</tr>"
    base_ap = ", ".join(f"{k} {kind['errors']['ap50']:.3f}" for k, kind in kinds.items())
    per_class = ""
    for k, kind in kinds.items():
        head_k = "<tr><th>class</th>" + "".join(f"<th>{t}</th>" for t in ERROR_TYPES) + "<th>AP50</th></tr>"
        body = "".join(
            f"<tr><td class='name'>{_e(name)}</td>" + "".join(f"<td>{c[t]}</td>" for t in ERROR_TYPES)
            + _cell(c["ap50"]) + "</tr>"
            for name, c in kind["errors"]["per_class"].items()
        )  # fmt: skip
        per_class += f"<h3>{k} errors per class</h3><table>{head_k}{body}</table>"
    return (
        "<h2>Error types (TIDE)</h2><p>Each detection not matched at IoU 0.5 gets the first type that fits "
        "(foreground IoU 0.5, background IoU 0.1); the AP50 column is what fixing that type alone would add "
        f"(TIDE's oracle). AP50 before fixing: {base_ap}.</p>"
        f"<table>{head}{rows}</table>{_image(summary['errors_png'], base)}{per_class}"
    )


def _kind_sections(summary: dict, base: Path) -> str:
    parts = ["<h2>Confusion matrices</h2>"]
    for k, kind in summary["kinds"].items():
        parts.append(
            f"<p>{k}: detections scoring at least {kind['score_threshold']:.3f} ({_e(kind['score_threshold_from'])}), "
            f"matched at IoU 0.5; rows what the object was, columns what was predicted. "
            f"CSV: {_link(kind['confusion_csv'], base)}</p>{_image(kind['confusion_png'], base)}"
        )
    parts.append("<h2>Precision-recall per class</h2>")
    parts += [_image(kind["pr_png"], base) for kind in summary["kinds"].values()]
    return "".join(parts)


def _worst_section(summary: dict, base: Path) -> str:
    items = summary["worst_images"]
    if not items:
        return "<h2>Worst images</h2><p>No image has an error at the chosen score threshold.</p>"
    parts = [
        "<h2>Worst images</h2><p>Most wrong detections plus objects not found at the confusion matrix's threshold. "
        "Left the ground truth (dashed blue: not found), right the predictions (green correct; red cls, orange loc, "
        "purple both, pink dupe, brown bkg).</p>"
    ]
    for item in items:
        wrong, unfound = (
            plural(item["wrong_detections"], "wrong detection"),
            plural(item["objects_not_found"], "object"),
        )
        parts.append(f"<h3>{_e(item['file_name'])} (id {item['image_id']}): {wrong}, {unfound} not found</h3>")
        parts.append(_image(item["png"], base))
    return "".join(parts)


def write_report_page(path: Path, result: dict, summary: dict) -> Path:
    """The page for ``result`` (evaluate_result.json's content) and ``summary`` (`analyze`'s), written atomically."""
    base = path.parent
    kinds = list(summary["kinds"])
    source = result.get("pred") or result.get("checkpoint") or ""
    against = result.get("gt") or result.get("data") or ""
    body = (
        f"<h1>Where the model fails</h1><p>{_e(source)} on {_e(against)}: {result['num_images']} images, "
        f"{result['num_predictions']} detections. Files: {_link(str(base / 'analysis.json'), base)}, "
        f"{_link(summary['per_class_csv'], base)}.</p>"
        f"<h2>COCO metrics</h2>{_summary_table(result, kinds)}"
        f"<h2>Per class and size</h2><p>AP over IoU 0.50:0.95, AP50, AP75, AP of small/medium/large objects, AR "
        f"at {result.get('max_dets', 100)} detections; '-': no objects of that class or size.</p>"
        f"{_class_table(result['per_class'], kinds)}"
        + _errors_section(summary, base)
        + _kind_sections(summary, base)
        + _worst_section(summary, base)
    )
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>instaseg analysis</title><style>{_STYLE}</style>"
    return atomic_write_text(path, page + f"</head><body>{body}</body></html>\n")
