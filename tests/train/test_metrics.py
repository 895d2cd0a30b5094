"""Metrics against values worked out by hand."""

import math

import numpy as np

from napari_medprompt.train.metrics import binary_auroc, classification_metrics, confusion_matrix


def test_confusion_accuracy_balanced_accuracy_macro_f1():
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 2, 1])
    probs = np.eye(3)[pred] * 0.8 + 0.2 / 3
    m = classification_metrics(y, probs)
    assert m["confusion"] == [[3, 1, 0], [1, 1, 0], [0, 1, 1]]
    assert m["accuracy"] == 5 / 8
    assert math.isclose(m["balanced_accuracy"], (3 / 4 + 1 / 2 + 1 / 2) / 3)
    # per class F1: c0 P=3/4 R=3/4 -> .75; c1 P=1/3 R=1/2 -> .4; c2 P=1 R=1/2 -> 2/3
    assert math.isclose(m["macro_f1"], (0.75 + 0.4 + 2 / 3) / 3)
    assert m["n"] == 8


def test_auroc_with_ties_and_degenerate_classes():
    assert binary_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert binary_auroc([0, 1], [0.5, 0.5]) == 0.5
    assert math.isnan(binary_auroc([1, 1], [0.2, 0.3]))
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert classification_metrics([0, 1, 0, 1], probs)["auroc"] == 1.0
    assert confusion_matrix([1], [0], 2).tolist() == [[0, 0], [1, 0]]


def test_mean_sd_over_runs():
    from napari_medprompt.train.metrics import format_mean_sd, mean_sd

    s = mean_sd([{"accuracy": 0.5, "auroc": float("nan")}, {"accuracy": 0.7, "auroc": 0.9}, None])
    assert s["n"] == 2 and math.isclose(s["mean"]["accuracy"], 0.6) and math.isclose(s["sd"]["accuracy"], 0.1414213562, rel_tol=1e-6)
    assert s["mean"]["auroc"] == 0.9 and s["sd"]["auroc"] is None  # NaN left out: one value, no spread
    assert format_mean_sd(s, "accuracy") == "0.600 ± 0.141 (2 seeds)"
    assert format_mean_sd(mean_sd([{"accuracy": 1.0}]), "accuracy") == "1.000 (1 seed)"
