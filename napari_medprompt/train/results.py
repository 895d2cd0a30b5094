"""Results tables as the papers report them: one row per method / protocol, mean ± sd over seeds.

``results_table(rows, metrics)`` takes rows ``{"label": str, "runs": [per-seed metric dicts]}`` and
returns ``(csv_text, markdown_text)``. Classification columns: accuracy, balanced accuracy, macro F1,
AUROC; segmentation columns: Dice, IoU, HD95 (MONAI's metrics, as the segmentation task computes
them). The CSV has ``<metric>_mean`` and ``<metric>_sd`` columns (sd: sample standard deviation,
ddof=1; empty with one seed) and ``n_seeds``; the Markdown shows ``mean ± sd``. A metric no run has
is left out of both. Values are never invented: a missing value is empty in the CSV and ``n/a`` in
the Markdown.
"""

from __future__ import annotations

import csv
import io
import math

CLASSIFICATION_COLUMNS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")
SEGMENTATION_COLUMNS = ("dice", "iou", "hd95")
TITLES = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "macro_f1": "Macro F1",
          "auroc": "AUROC", "dice": "Dice", "iou": "IoU", "hd95": "HD95"}


def columns_for(runs) -> tuple[str, ...]:
    """The table's metric columns: segmentation ones when the runs carry Dice, else classification."""
    if any(r and "dice" in r for r in runs):
        return SEGMENTATION_COLUMNS
    return CLASSIFICATION_COLUMNS


def _stats(values):
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None, 0
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return m, sd, len(vals)


def results_table(rows: list[dict], metrics: tuple[str, ...] | None = None, digits: int = 3) -> tuple[str, str]:
    """``(csv_text, markdown_text)`` of ``rows`` (``{"label", "runs": [metric dicts], ...}``)."""
    all_runs = [r for row in rows for r in row["runs"] if r]
    metrics = tuple(metrics or columns_for(all_runs))
    metrics = tuple(k for k in metrics if any(k in r and r[k] is not None for r in all_runs))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["label", "n_seeds"] + [f"{k}_{s}" for k in metrics for s in ("mean", "sd")])
    md = ["| " + " | ".join(["Method / protocol", "Seeds"] + [TITLES.get(k, k) for k in metrics]) + " |",
          "|" + "---|" * (2 + len(metrics))]
    for row in rows:
        runs = [r for r in row["runs"] if r]
        cells, mcells = [row["label"], len(runs)], [row["label"], str(len(runs))]
        for k in metrics:
            m, sd, n = _stats([r.get(k) for r in runs])
            cells += ["" if m is None else f"{m:.6g}", "" if sd is None else f"{sd:.6g}"]
            mcells.append("n/a" if m is None else (f"{m:.{digits}f} ± {sd:.{digits}f}" if sd is not None
                                                   else f"{m:.{digits}f}"))
        w.writerow(cells)
        md.append("| " + " | ".join(mcells) + " |")
    notes = [row["note"] for row in rows if row.get("note")]
    text = "\n".join(md) + "\n"
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in dict.fromkeys(notes)) + "\n"
    return buf.getvalue(), text


def write_results(folder, rows: list[dict], stem: str = "results", metrics=None) -> tuple:
    """Write ``<stem>.csv`` and ``<stem>.md`` in ``folder`` (atomically, both or neither replaced)."""
    from pathlib import Path

    from napari_medprompt.io.atomic import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_text, md_text = results_table(rows, metrics)
    a = atomic_write_text(folder / f"{stem}.csv", csv_text)
    b = atomic_write_text(folder / f"{stem}.md", md_text)
    return a, b
