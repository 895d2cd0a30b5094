"""Results tables: mean ± sd over seeds (sample sd), classification and segmentation columns, CSV and
Markdown written together, nothing invented for a missing value."""

from __future__ import annotations

import csv
import io

import pytest

from napari_medprompt.train.results import results_table, write_results


def test_classification_table_mean_sd():
    runs = [{"accuracy": 0.5, "balanced_accuracy": 0.6, "macro_f1": 0.4, "auroc": 0.7},
            {"accuracy": 0.7, "balanced_accuracy": 0.8, "macro_f1": 0.6, "auroc": float("nan")}]
    c, md = results_table([{"label": "linear-probe 16-shot", "runs": runs},
                           {"label": "zero-shot", "runs": [{"accuracy": 0.3, "balanced_accuracy": 0.5}]}])
    rows = list(csv.DictReader(io.StringIO(c)))
    assert rows[0]["n_seeds"] == "2" and float(rows[0]["accuracy_mean"]) == pytest.approx(0.6)
    assert float(rows[0]["accuracy_sd"]) == pytest.approx(0.1414213, abs=1e-6)  # ddof=1
    assert rows[0]["auroc_mean"] == "0.7" and rows[0]["auroc_sd"] == ""  # the NaN seed is left out
    assert rows[1]["macro_f1_mean"] == "" and rows[1]["accuracy_sd"] == ""
    assert "| linear-probe 16-shot | 2 | 0.600 ± 0.141 | 0.700 ± 0.141 | 0.500 ± 0.141 | 0.700 |" in md
    assert "| zero-shot | 1 | 0.300 | 0.500 | n/a | n/a |" in md
    assert md.startswith("| Method / protocol | Seeds | Accuracy | Balanced accuracy | Macro F1 | AUROC |")


def test_segmentation_columns_and_files(tmp_path):
    runs = [{"dice": 0.8, "iou": 0.7, "hd95": 3.0}, {"dice": 0.6, "iou": 0.5, "hd95": 5.0}]
    a, b = write_results(tmp_path / "t", [{"label": "vlsm", "runs": runs, "note": "RANDOM weights"}])
    md = b.read_text()
    assert "| Dice | IoU | HD95 |" in md and "0.700 ± 0.141" in md and "4.000 ± 1.414" in md
    assert "- RANDOM weights" in md and a.read_text().startswith("label,n_seeds,dice_mean,dice_sd")
