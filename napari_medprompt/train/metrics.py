"""Classification metrics in numpy: accuracy, balanced accuracy, macro F1, one-vs-rest AUROC, confusion.

``y_true`` holds class indices (N,), ``probs`` class probabilities (N, C). AUROC is the mean of the
per-class one-vs-rest AUROCs (Mann-Whitney rank statistic, ties averaged) over the classes that have
both positives and negatives in ``y_true``; NaN when none has.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(C, C) counts; rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def _rankdata(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return ranks


def binary_auroc(y: np.ndarray, score: np.ndarray) -> float:
    y = np.asarray(y, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _rankdata(np.asarray(score, np.float64))
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auroc_ovr(y_true, probs) -> float:
    probs = np.asarray(probs, np.float64)
    y_true = np.asarray(y_true)
    vals = [binary_auroc(y_true == c, probs[:, c]) for c in range(probs.shape[1])]
    vals = [v for v in vals if not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def classification_metrics(y_true, probs, n_classes: int | None = None) -> dict:
    """accuracy, balanced_accuracy, macro_f1, auroc, confusion (list of lists), n."""
    probs = np.asarray(probs, np.float64)
    y_true = np.asarray(y_true, np.int64)
    n_classes = n_classes or probs.shape[1]
    y_pred = probs.argmax(1)
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(1)
    tp = np.diag(cm).astype(np.float64)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros(n_classes), where=present)
    pred_count = cm.sum(0)
    precision = np.divide(tp, pred_count, out=np.zeros(n_classes), where=pred_count > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(n_classes), where=denom > 0)
    n = len(y_true)
    return {
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "auroc": auroc_ovr(y_true, probs) if n else float("nan"),
        "confusion": cm.tolist(),
        "n": int(n),
    }


SCALAR_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc", "loss")


def mean_sd(runs: list[dict | None], keys=SCALAR_METRICS) -> dict:
    """Across runs (e.g. seeds): ``{"mean": {metric: ...}, "sd": {metric: ...}, "n": runs used}``.

    ``sd`` is the sample standard deviation (ddof=1), None with fewer than two runs. Runs that are
    None (no such split) are left out; NaN values of a metric are left out of that metric."""
    runs = [r for r in runs if r]
    mean, sd = {}, {}
    for k in keys:
        vals = np.asarray([r[k] for r in runs if k in r and r[k] is not None], np.float64)
        vals = vals[np.isfinite(vals)]
        if not len(vals):
            continue
        mean[k] = float(vals.mean())
        sd[k] = float(vals.std(ddof=1)) if len(vals) > 1 else None
    return {"mean": mean, "sd": sd, "n": len(runs)}


def format_mean_sd(summary: dict, key: str = "balanced_accuracy") -> str:
    """``"0.812 ± 0.031 (3 seeds)"``; ``"0.812 (1 seed)"`` when there is no spread to report."""
    m = summary["mean"].get(key)
    if m is None:
        return "n/a"
    s = summary["sd"].get(key)
    n = summary["n"]
    return f"{m:.3f} ± {s:.3f} ({n} seeds)" if s is not None else f"{m:.3f} ({n} seed{'s' if n != 1 else ''})"
