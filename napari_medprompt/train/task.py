"""What the training loop needs to know about the task: loss, metrics, model selection, sampling.

:class:`ClassificationTask` is the one task today. The loop (:mod:`.loop`) calls only these methods,
so another task (segmentation) can slot in with its own loss, metrics and sampling.
"""

from __future__ import annotations

import math

import numpy as np

#: metrics a run may select its model on; all higher-is-better except ``loss``
MONITORS = ("balanced_accuracy", "accuracy", "macro_f1", "auroc", "loss")


class ClassificationTask:
    name = "classification"

    def __init__(self, n_classes: int, monitor: str = "balanced_accuracy"):
        if monitor not in MONITORS:
            raise ValueError(f"unknown monitor {monitor!r}; choose one of {', '.join(MONITORS)}")
        self.n_classes = int(n_classes)
        self.monitor = monitor

    # --- loss --------------------------------------------------------------------------------
    @staticmethod
    def loss(model, batch_x, batch_m, y, *, cached: bool):
        """The method's training loss on one batch (cached features or images + masks)."""
        if cached:
            return model.training_loss_from_features(batch_x, y)[0]
        return model.training_loss(batch_x, batch_m, y)[0]

    # --- metrics -----------------------------------------------------------------------------
    def metrics(self, logits, targets) -> dict:
        """accuracy, balanced accuracy, macro F1, AUROC, confusion, n, and the cross-entropy loss."""
        import torch

        from napari_medprompt.train.metrics import classification_metrics

        y = targets.to(logits.device)
        m = classification_metrics(targets.cpu().numpy(), logits.softmax(-1).cpu().numpy(), self.n_classes)
        m["loss"] = float(torch.nn.functional.cross_entropy(logits, y))
        return m

    # --- model selection ---------------------------------------------------------------------
    def better(self, new: dict, best: dict | None) -> bool:
        """Whether ``new`` validation metrics beat ``best``: the monitored metric (higher is better,
        lower for loss), ties broken by the lower loss. A NaN never wins over a number."""
        if best is None:
            return True
        a, b = new.get(self.monitor, math.nan), best.get(self.monitor, math.nan)
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        if self.monitor == "loss":
            return a < b - 1e-9
        if a > b + 1e-9:
            return True
        return abs(a - b) <= 1e-9 and new.get("loss", math.inf) < best.get("loss", math.inf) - 1e-9

    def describe_selection(self, has_val: bool, epochs: int) -> str:
        if has_val:
            tie = "" if self.monitor == "loss" else ", ties broken by the lower loss"
            return f"model selection on the validation split: best {self.monitor}{tie}"
        return (f"no validation data: fixed schedule of {epochs} epoch(s), the last epoch's weights are kept "
                "(no early stopping, no model selection)")

    # --- sampling ----------------------------------------------------------------------------
    def epoch_order(self, labels, generator, *, balanced: bool):
        """Indices of one epoch: class-balanced draws (each class equally often) or a permutation."""
        import torch

        labels = torch.as_tensor(labels)
        n = len(labels)
        if not balanced:
            return torch.randperm(n, generator=generator)
        counts = np.bincount(labels.numpy(), minlength=self.n_classes)
        weights = torch.as_tensor(1.0 / np.maximum(counts, 1))[labels]
        return torch.multinomial(weights, n, replacement=True, generator=generator)
