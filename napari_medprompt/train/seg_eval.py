"""Segmentation evaluation for ``medprompt-eval``: per-image Dice, IoU and HD95 (MONAI's metrics).

Dice and IoU are the training loop's own (:func:`napari_medprompt.train.task.seg_scores`: the
0.5-thresholded prediction at the model's input size, ``ignore_empty=False``). HD95 is MONAI's
``compute_hausdorff_distance(..., percentile=95)`` in pixels of the model input; it is undefined
when the mask or the prediction is empty, so those images are left out of its mean (``n_hd95``
counts the images it is averaged over). Under torchrun each rank scores its shard of the images
and the per-image scores are gathered in order, so the metrics are those of one process.
"""

from __future__ import annotations

import math

import numpy as np


def hd95_scores(logits, target):
    """(B,) HD95 of ``logits > 0`` against ``target`` (B, 1, H, W); NaN where either is empty."""
    import torch
    from monai.metrics import compute_hausdorff_distance

    pred = (logits > 0).float()
    empty = (pred.flatten(1).sum(1) == 0) | (target.flatten(1).sum(1) == 0)
    out = torch.full((len(pred),), float("nan"))
    keep = (~empty).nonzero().reshape(-1)
    if len(keep):
        h = compute_hausdorff_distance(pred[keep].cpu(), target[keep].float().cpu(), include_background=True,
                                       percentile=95).reshape(-1).float()
        out[keep] = torch.where(torch.isfinite(h), h, torch.full_like(h, float("nan")))
    return out


def evaluate_segmentation(model, data, *, device="cpu", batch_size: int = 8) -> dict:
    """Dice, IoU, HD95 (means over images), Dice over foreground images, Dice per structure, n."""
    import torch

    from napari_medprompt.train import distributed as dd
    from napari_medprompt.train.preprocess import preprocess_of
    from napari_medprompt.train.task import SegmentationTask, seg_scores

    task = SegmentationTask()
    data.validate()
    t = task.tensors(data, preprocess_of(model))
    mine = dd.shard_indices(len(t))
    rows = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(mine), batch_size):
            idx = mine[i : i + batch_size]
            prompts = [t.extra[j][0] for j in idx]
            logits = model.seg_logits(t.x[idx].to(device), prompts).float().cpu()
            y = t.y[idx].float()
            d, j = seg_scores(logits, y)
            rows.append(torch.stack([d.cpu().float(), j.cpu().float(), hd95_scores(logits, y)], 1))
    scores = dd.gather_ordered(torch.cat(rows), len(t))
    m = task.metrics_from_scores(scores[:, 0], scores[:, 1], t, float("nan"))
    m.pop("loss", None)
    h = scores[:, 2].numpy()
    ok = np.isfinite(h)
    m["hd95"] = float(h[ok].mean()) if ok.any() else math.nan
    m["n_hd95"] = int(ok.sum())
    return m
