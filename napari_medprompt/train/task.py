"""What the training loop needs to know about the task: data checks, tensors, loss, metrics, model
selection, sampling.

Two tasks share the one loop (:mod:`.loop`), which calls only the methods below:

- :class:`ClassificationTask`: :class:`~.data.FewShotData`, cross-entropy (the method's own loss),
  accuracy / balanced accuracy / macro F1 / AUROC, class-balanced sampling, selection on balanced
  accuracy.
- :class:`SegmentationTask`: :class:`~.seg_data.SegData` (slice, mask, prompt phrasings, group),
  per-pixel targets, MONAI ``DiceCELoss``, per-image Dice / IoU, sampling balanced by foreground
  presence, selection (and early stopping) on validation Dice. Methods: ``vlsm-*`` and
  ``clipseg-decoder`` (:mod:`napari_medprompt.seg_adapters`).

:func:`task_for` picks the task from the data (a :class:`SegData` means segmentation) and checks that
the method is one of that task's methods.

Interface (both tasks): ``validate(data, val, uses_masks)``, ``split(data, fraction, seed)``,
``build_model(config, data, device)``, ``check_model(model, data)``, ``summary(data, val)``,
``tensors(data, spec, uses_masks)`` -> :class:`Tensors`, ``encode(model, x, m)`` (cached features),
``epoch_order(t, generator, balanced)``, ``loss(model, t, idx, feats, device, generator)``,
``evaluate(model, t, feats, batch_size, device, autocast)`` -> metrics dict, ``better(new, best)``,
``describe_selection(has_val, epochs)``, ``headline`` (the metric printed in summaries). Model
selection (``better``, ``describe_selection``) is the same for both: the monitored validation metric,
ties broken by the lower loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: metrics a classification run may select its model on; all higher-is-better except ``loss``
MONITORS = ("balanced_accuracy", "accuracy", "macro_f1", "auroc", "loss")
#: metrics a segmentation run may select its model on
SEG_MONITORS = ("dice", "iou", "loss")


@dataclass
class Tensors:
    """A split as the loop sees it: inputs ``x`` (N, 3, S, S), masks ``m`` (classification methods
    that use them) or None, targets ``y`` (labels (N,) or masks (N, 1, S, S)), ``extra`` (per-sample
    prompt phrasings for segmentation) and ``strata`` (what balanced sampling balances: class labels,
    or foreground presence)."""

    x: Any
    m: Any
    y: Any
    extra: Any = None
    strata: Any = None

    def __len__(self) -> int:
        return len(self.x)

    # the classification code and tests unpack a split as (x, m, y)
    def __getitem__(self, i):
        return (self.x, self.m, self.y)[i]


def _balanced_order(strata, n_strata: int, generator, balanced: bool):
    import torch

    strata = torch.as_tensor(strata)
    n = len(strata)
    if not balanced:
        return torch.randperm(n, generator=generator)
    counts = np.bincount(strata.numpy(), minlength=n_strata)
    weights = torch.as_tensor(1.0 / np.maximum(counts, 1))[strata]
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def task_for(config, data, model=None):
    """The task of a run: segmentation for :class:`~.seg_data.SegData`, classification otherwise.

    Raises ``ValueError`` when the method belongs to the other task (a clear message, before any
    model is built)."""
    from napari_medprompt.train.seg_data import SegData

    method = config.method if model is None else model.name
    seg_method = is_seg_method(method)
    if isinstance(data, SegData):
        if not seg_method:
            raise ValueError(f"method {method!r} is a classification method; segmentation data (slices with masks "
                             f"and text prompts) trains one of: {', '.join(sorted(seg_method_names()))}")
        return SegmentationTask(config.monitor)
    if seg_method:
        raise ValueError(f"method {method!r} trains a segmenter: give segmentation data (slices, masks, prompts: "
                         "napari_medprompt.train.seg_data.SegData), not class-labelled images")
    return ClassificationTask(len(data.classes), config.monitor)


def seg_method_names() -> list[str]:
    from napari_medprompt.seg_adapters.registry import available_seg_methods

    return list(available_seg_methods())


def is_seg_method(name: str) -> bool:
    return name in seg_method_names()


class _SelectsOnMonitor:
    """Model selection, the same for both tasks: the best validation value of ``self.monitor``."""

    monitor: str

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


class ClassificationTask(_SelectsOnMonitor):
    name = "classification"
    headline = "balanced_accuracy"

    def __init__(self, n_classes: int, monitor: str = "balanced_accuracy"):
        if monitor not in MONITORS:
            raise ValueError(f"unknown monitor {monitor!r}; choose one of {', '.join(MONITORS)}")
        self.n_classes = int(n_classes)
        self.monitor = monitor

    # --- data --------------------------------------------------------------------------------
    @staticmethod
    def validate(data, val, *, uses_masks: bool) -> None:
        from napari_medprompt.train.data import DataError

        data.validate(require_masks=uses_masks)
        if val is not None:
            if list(val.classes) != list(data.classes):
                raise DataError(f"the validation data's classes {val.classes!r} differ from the training data's {data.classes!r}")
            if len(val) == 0:
                raise DataError("the validation data is empty; give images or no validation data (fixed schedule)")
            if uses_masks and not val.has_masks:
                raise DataError("this method needs a mask for every validation image too")

    @staticmethod
    def split(data, fraction: float, seed: int):
        from napari_medprompt.train.data import split_train_val

        data, val = split_train_val(data, fraction, seed)
        return data, val, (f"validation split carved from the given pool ({fraction:g} per class, grouped: "
                           "no group on both sides)")

    @staticmethod
    def build_model(config, data, device):
        from napari_medprompt.train.loop import build_model

        return build_model(config, data.classes, device)

    @staticmethod
    def check_model(model, data) -> None:
        if list(model.classes) != list(data.classes):
            raise ValueError(f"the model's classes {model.classes!r} differ from the data's {data.classes!r}")

    @staticmethod
    def summary(data, val) -> dict:
        return {"n_train_per_class": data.class_counts().tolist(),
                "n_val_per_class": None if val is None else val.class_counts().tolist()}

    @staticmethod
    def tensors(ds, spec, uses_masks: bool) -> Tensors:
        import torch

        from napari_medprompt.train.preprocess import images_to_tensor, masks_to_tensor

        x = images_to_tensor(ds.images, spec, ds.sources)
        m = masks_to_tensor(ds.masks, ds.images, spec, ds.sources) if uses_masks else None
        y = torch.as_tensor(ds.labels)
        return Tensors(x, m, y, strata=y)

    @staticmethod
    def encode(model, x, m):
        """Cached features of a batch (``model.encode_for_cache`` when the method defines it)."""
        encode = getattr(model, "encode_for_cache", None)
        if encode is not None:
            return encode(x, m).float()
        return model.backbone.encode_image(x).float()

    # --- loss --------------------------------------------------------------------------------
    @staticmethod
    def loss(model, t: Tensors, idx, feats, device, generator=None):
        """The method's training loss on the samples ``idx`` (cached features or images + masks)."""
        y = t.y[idx].to(device)
        if feats is not None:
            return model.training_loss_from_features(feats[idx.to(device)], y)[0]
        m = None if t.m is None else t.m[idx].to(device)
        return model.training_loss(t.x[idx].to(device), m, y)[0]

    def evaluate(self, model, t: Tensors, feats, bs: int, device, autocast) -> dict:
        import torch

        logits = []
        if feats is not None:
            logits.append(model.forward_features(feats).float())
        else:
            for i in range(0, len(t.x), bs):
                m = None if t.m is None else t.m[i : i + bs].to(device)
                with autocast():
                    logits.append(model(t.x[i : i + bs].to(device), m).float())
        return self.metrics(torch.cat(logits), t.y)

    # --- metrics -----------------------------------------------------------------------------
    def metrics(self, logits, targets) -> dict:
        """accuracy, balanced accuracy, macro F1, AUROC, confusion, n, and the cross-entropy loss."""
        import torch

        from napari_medprompt.train.metrics import classification_metrics

        y = targets.to(logits.device)
        m = classification_metrics(targets.cpu().numpy(), logits.softmax(-1).cpu().numpy(), self.n_classes)
        m["loss"] = float(torch.nn.functional.cross_entropy(logits, y))
        return m

    # --- sampling ----------------------------------------------------------------------------
    def epoch_order(self, t, generator, *, balanced: bool):
        """Indices of one epoch: class-balanced draws (each class equally often) or a permutation.
        ``t``: a :class:`Tensors` or the labels themselves."""
        labels = t.strata if isinstance(t, Tensors) else t
        return _balanced_order(labels, self.n_classes, generator, balanced)


class SegmentationTask(_SelectsOnMonitor):
    """Per-pixel binary segmentation conditioned on a text prompt.

    - **targets**: the masks through the images' geometry, thresholded at 0.5 (nearest-neighbour
      like), (N, 1, S, S) in {0, 1};
    - **loss**: MONAI ``DiceCELoss`` built by the model (:meth:`loss_function`; VLSM-Adapter: Dice 1.5,
      CE 1.0, the paper code's double sigmoid only on request);
    - **metrics**: per-image Dice and IoU of the 0.5-thresholded prediction at the model's input size
      (MONAI ``compute_dice`` / ``compute_iou``, ``ignore_empty=False``: an empty mask predicted empty
      scores 1, anything predicted on it 0), averaged over images; the loss; Dice over foreground
      slices only; Dice per structure;
    - **selection**: the best validation Dice (``monitor`` "dice", or "iou" / "loss"), early stopping
      after ``patience`` epochs without improvement;
    - **sampling**: ``balanced`` draws slices with and without foreground equally often (only when
      both kinds exist), otherwise a permutation;
    - **prompts**: each training sample uses one of its phrasings drawn at random per step (the loop's
      generator); evaluation uses the canonical (first) phrasing.
    """

    name = "segmentation"
    headline = "dice"

    def __init__(self, monitor: str = "dice"):
        if monitor == "balanced_accuracy":  # the loop's default, meaningless here
            monitor = "dice"
        if monitor not in SEG_MONITORS:
            raise ValueError(f"unknown monitor {monitor!r} for segmentation; choose one of {', '.join(SEG_MONITORS)}")
        self.monitor = monitor

    # --- data --------------------------------------------------------------------------------
    @staticmethod
    def validate(data, val, *, uses_masks: bool = True) -> None:
        from napari_medprompt.train.data import DataError

        data.validate()
        if val is not None:
            if len(val) == 0:
                raise DataError("the validation data is empty; give slices or no validation data (fixed schedule)")
            for m, src in zip(val.masks, val.sources):
                if m is None:
                    raise DataError(f"{src}: validation slice without a mask")

    @staticmethod
    def split(data, fraction: float, seed: int):
        from napari_medprompt.train.seg_data import split_seg

        data, val = split_seg(data, fraction, seed)
        return data, val, (f"validation split carved from the given slices (about {fraction:g} of them, grouped by "
                           "image/series: no image on both sides)")

    @staticmethod
    def build_model(config, data, device):
        from napari_medprompt.seg_adapters.registry import build_seg_model

        return build_seg_model(config, data.structures(), device)

    @staticmethod
    def check_model(model, data) -> None:
        if getattr(model, "task", None) != "segmentation":
            raise ValueError(f"model {getattr(model, 'name', model)!r} is not a segmentation model")

    @staticmethod
    def summary(data, val) -> dict:
        c = data.counts()
        v = None if val is None else val.counts()
        return {"n_train_per_class": [c["with_foreground"]], "n_val_per_class": None if v is None else [v["with_foreground"]],
                "n_train_empty": c["empty"], "n_val_empty": None if v is None else v["empty"],
                "structures": c["structures"], "n_train_groups": c["groups"],
                "n_val_groups": None if v is None else v["groups"]}

    @staticmethod
    def tensors(ds, spec, uses_masks: bool = True) -> Tensors:
        import torch

        from napari_medprompt.train.preprocess import images_to_tensor, masks_to_tensor

        x = images_to_tensor(ds.images, spec, ds.sources)
        y = (masks_to_tensor(ds.masks, ds.images, spec, ds.sources) > 0.5).float()
        strata = torch.as_tensor(ds.foreground().astype(np.int64))
        return Tensors(x, None, y, extra=[list(p) for p in ds.prompts], strata=strata)

    @staticmethod
    def encode(model, x, m=None):
        return model.encode_for_cache(x)

    # --- sampling ----------------------------------------------------------------------------
    @staticmethod
    def epoch_order(t: Tensors, generator, *, balanced: bool):
        import torch

        strata = torch.as_tensor(t.strata)
        both = bool(strata.min() != strata.max()) if len(strata) else False
        return _balanced_order(strata, 2, generator, balanced and both)

    # --- loss --------------------------------------------------------------------------------
    @staticmethod
    def draw_prompts(t: Tensors, idx, generator) -> list[str]:
        import torch

        out = []
        for i in idx.tolist():
            ps = t.extra[i]
            j = int(torch.randint(len(ps), (1,), generator=generator)) if len(ps) > 1 else 0
            out.append(ps[j])
        return out

    def loss(self, model, t: Tensors, idx, feats, device, generator=None):
        prompts = self.draw_prompts(t, idx, generator) if generator is not None else [t.extra[i][0] for i in idx.tolist()]
        y = t.y[idx].to(device)
        if feats is not None:
            logits = model.seg_logits_from_features(feats[idx.to(feats.device)].to(device), prompts)
        else:
            logits = model.seg_logits(t.x[idx].to(device), prompts)
        return model.loss_function()(logits.float(), y)

    # --- metrics -----------------------------------------------------------------------------
    def evaluate(self, model, t: Tensors, feats, bs: int, device, autocast) -> dict:
        import torch

        dice, iou, losses, weights = [], [], [], []
        loss_fn = model.loss_function()
        for i in range(0, len(t), bs):
            sl = slice(i, i + bs)
            prompts = [p[0] for p in t.extra[sl]]
            with autocast():
                if feats is not None:
                    logits = model.seg_logits_from_features(feats[sl].to(device), prompts)
                else:
                    logits = model.seg_logits(t.x[sl].to(device), prompts)
            logits = logits.float()
            y = t.y[sl].to(device)
            losses.append(float(loss_fn(logits, y)))
            weights.append(len(y))
            d, j = seg_scores(logits, y)
            dice.append(d)
            iou.append(j)
        dice_t, iou_t = torch.cat(dice), torch.cat(iou)
        return self.metrics_from_scores(dice_t, iou_t, t, float(np.average(losses, weights=weights)))

    @staticmethod
    def metrics_from_scores(dice, iou, t: Tensors, loss: float) -> dict:
        fg = np.asarray(t.strata, bool)
        d, j = dice.cpu().numpy(), iou.cpu().numpy()
        per = {}
        for name in dict.fromkeys(p[0] for p in t.extra):
            sel = np.asarray([p[0] == name for p in t.extra])
            per[name] = float(d[sel].mean())
        return {"dice": float(d.mean()), "iou": float(j.mean()), "loss": loss, "n": int(len(d)),
                "dice_foreground": float(d[fg].mean()) if fg.any() else float("nan"),
                "n_empty": int((~fg).sum()), "dice_per_structure": per}


def seg_scores(logits, target):
    """Per-image (Dice, IoU) of ``sigmoid(logits) > 0.5`` against binary ``target`` (B, 1, H, W), MONAI
    ``compute_dice`` / ``compute_iou`` with ``ignore_empty=False``."""
    import torch
    from monai.metrics import compute_dice, compute_iou

    pred = (logits > 0).float()  # sigmoid(l) > 0.5  <=>  l > 0
    d = compute_dice(pred, target, include_background=True, ignore_empty=False).reshape(-1)
    j = compute_iou(pred, target, include_background=True, ignore_empty=False).reshape(-1)
    return torch.nan_to_num(d, nan=1.0), torch.nan_to_num(j, nan=1.0)
