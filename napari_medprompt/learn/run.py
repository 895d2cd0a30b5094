"""One training run on an example set: a generator of progress events, cancellable, stored as a version.

:class:`LearnRun` checks everything that can be checked before training starts (in its constructor,
so a bad request fails with a :class:`~napari_medprompt.learn.errors.LearnError` before any worker
starts): an empty set, an empty class, a class with one example, a mask method with examples
without masks, an unknown method/backbone or option. :meth:`LearnRun.events` then runs the project's
one training loop (:func:`napari_medprompt.train.loop.train_iter`) and yields :class:`LearnEvent` s;
napari's ``thread_worker`` can wrap it as it is (it is a plain generator; nothing here touches Qt).

:meth:`LearnRun.cancel` (any thread) sets the loop's stop event: the loop stops before its next step,
keeps the best completed epoch (by the validation metric, or the last completed one without a
validation split) and that becomes a version with status ``stopped``; when no epoch completed,
nothing is written. Every finished run becomes a new version of the model store (nothing is
overwritten); it becomes the active model only when no version is active (the first model): a
version the user activated or rolled back to stays active, and the ``done`` message says that the
new version is not active. The version's record carries, under ``learn``, the modality, the
training and validation example counts per class (``n_train_per_class``, ``n_val_per_class``, as
the loop split them), the examples with masks when the run started, and whether the backbone ran on
random weights.

When the backbone's pretrained weights are not available (no network, nothing cached) and
``allow_random_weights`` is true, the backbone is built with random weights: the ``start`` event's
message, the result and the version's record say so, and so does every prediction of that version.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from napari_medprompt.learn.errors import LearnError
from napari_medprompt.learn.loop_run import LearnEvent, LoopRun, done_event, end_message

__all__ = ["RANDOM_WARNING", "LearnEvent", "LearnRun", "RunResult"]

RANDOM_WARNING = "backbone runs on RANDOM weights (no pretrained weights available): results are not meaningful"


@dataclass
class RunResult:
    version: str | None  # the new version of the store (None: nothing was written)
    status: str  # finished | early-stopped | stopped | stopped-before-first-epoch | failed
    metrics: dict = field(default_factory=dict)
    random_weights: bool = False
    cancelled: bool = False
    message: str = ""


def _auto_val_fraction(data) -> float:
    """0.2 when every class has examples in at least two groups and four examples, else 0 (no split)."""
    import numpy as np

    gid = data.group_ids()
    for c in range(len(data.classes)):
        sel = data.labels == c
        if sel.sum() < 4 or len(np.unique(gid[sel])) < 2:
            return 0.0
    return 0.2


class LearnRun(LoopRun):
    """Train ``method`` on ``backbone`` from ``examples``; the result goes into ``store``.

    ``store``: a :class:`~napari_medprompt.train.store.ModelStore` or its folder. ``options``: the
    method's options (checked against its schema). ``epochs``/``lr``/``batch_size``: None = the
    method's defaults. ``val_fraction``: "auto" (a grouped 20% validation split when every class has
    four examples in two groups or more, else none), a fraction, or 0 (fixed schedule). ``modality``:
    "CT", "MR", ... (default: the examples' one when they agree); it sets the intensity preprocessing
    (CT: HU window) and is recorded, and predictions on another modality are refused.
    """

    def __init__(self, examples, store, *, method: str = "linear-probe", backbone: str = "ViT-B-16",
                 pretrained: str | None = "default", options: dict | None = None, epochs: int | None = None,
                 lr: float | None = None, batch_size: int | None = None, val_fraction="auto", seed: int = 0,
                 device: str = "auto", modality: str | None = None, allow_random_weights: bool = True,
                 patience: int = 5) -> None:
        from napari_medprompt.classify.base import method_info, validate_method_options
        from napari_medprompt.train.store import ModelStore

        try:
            self.info = method_info(method)
        except KeyError as err:
            raise LearnError(str(err.args[0])) from None
        try:
            self.options = validate_method_options(method, options)
        except ValueError as err:
            raise LearnError(str(err)) from None
        from napari_medprompt.learn.methods import method_choices

        choice = next(c for c in method_choices(examples, backbone) if c.name == method)
        examples.check(uses_masks=self.info.uses_masks)
        if not choice.enabled:
            raise LearnError(f"method {method!r} cannot train now: {choice.reason}")
        self.examples = examples
        self.data = examples.to_fewshot(uses_masks=self.info.uses_masks)
        self.n_with_masks = int(examples.n_with_masks)  # counted now: the set may change during training
        if val_fraction == "auto":
            val_fraction = _auto_val_fraction(self.data)
        self.val_fraction = float(val_fraction)
        if self.val_fraction > 0:
            from napari_medprompt.train.data import DataError, split_train_val

            try:
                split_train_val(self.data, self.val_fraction, seed)
            except DataError as err:
                raise LearnError(f"{err} (or train without a validation split: val_fraction=0)") from None
        mods = examples.modalities()
        if modality is None and len(mods) == 1:
            modality = next(iter(mods))
        elif modality is not None and mods and {modality.upper()} != mods:
            raise LearnError(f"the examples are {', '.join(sorted(mods))} images but the run was asked for "
                             f"{modality}; train one model per modality")
        self.modality = None if modality is None else modality.upper()
        self.store = store if isinstance(store, ModelStore) else ModelStore(store)
        from napari_medprompt.train.store import StoreError

        try:
            self.store.list()  # a corrupt store index is reported now, before any training
        except StoreError as err:
            raise LearnError(str(err)) from None
        self.method, self.backbone_name, self.pretrained = method, backbone, pretrained
        self.schedule = {"epochs": epochs, "lr": lr, "batch_size": batch_size}
        self.seed, self.device, self.patience = int(seed), device, int(patience)
        self.allow_random_weights = bool(allow_random_weights)
        self._stop = threading.Event()
        self.result: RunResult | None = None
        self.random_weights = False
        self.model = None
        self.activated = False  # whether the run's version became the active model

    # ---------------------------------------------------------------------------------------
    def _build(self, device):
        import torch

        from napari_medprompt.classify.backbones.registry import create_backbone
        from napari_medprompt.classify.base import method_class
        from napari_medprompt.models.cache import WeightsUnavailable

        try:
            bb = create_backbone(self.backbone_name, self.pretrained, device=device,
                                 fallback_random=self.allow_random_weights)
        except WeightsUnavailable as err:
            raise LearnError(f"the weights of backbone {self.backbone_name!r} are not available here ({err}); "
                             "download them, or allow random weights (results then are not meaningful)") from err
        except Exception as err:
            if self.allow_random_weights and self.pretrained not in (None, "random"):
                try:
                    bb = create_backbone(self.backbone_name, "random", device=device)
                except Exception:
                    raise LearnError(f"backbone {self.backbone_name!r} cannot be built: {err}") from err
            else:
                raise LearnError(f"backbone {self.backbone_name!r} cannot be built: {err}") from err
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = method_class(self.method)(bb, self.data.classes, **self.options)
        return model

    def config(self, device: str = "cpu"):
        from napari_medprompt.train.loop import TrainConfig

        return TrainConfig(method=self.method, backbone=self.backbone_name, pretrained=self.pretrained,
                           method_options=dict(self.options), seed=self.seed, patience=self.patience,
                           val_fraction=self.val_fraction, device=device, stop_event=self._stop,
                           **{k: v for k, v in self.schedule.items() if v is not None})

    def events(self):
        """Train; yields :class:`LearnEvent` s and ends with ``done`` (see :attr:`result`)."""
        from napari_medprompt.train.loop import resolve_device
        from napari_medprompt.train.preprocess import Preprocess

        device = resolve_device(self.device)
        model = self._build(device)
        self.random_weights = bool(model.backbone.random_weights)
        config = self.config(str(device))
        if self.modality:
            config.preprocess = Preprocess.for_modality(model.backbone, self.modality).to_dict()
        rw = self.random_weights
        t0 = time.perf_counter()
        features_share = 0.1 if getattr(model, "cached_features", False) else 0.0
        start: dict = {}

        def annotate(ev, out):
            if ev.kind == "start":
                start.update(ev.metrics or {})
                out.message = "; ".join(m for m in (RANDOM_WARNING if rw else "", ev.metrics.get("selection", ""))
                                        if m)
            elif ev.kind == "features":
                out.progress = features_share * ev.step / max(1, ev.steps)
            elif ev.kind in ("step", "epoch"):
                if ev.steps:
                    out.progress = features_share + (1 - features_share) * ev.step / ev.steps
                elif ev.epochs:
                    out.progress = features_share + (1 - features_share) * ev.epoch / ev.epochs
                if start.get("n_val") and ev.metrics and config.monitor in ev.metrics:  # validation only
                    out.val_metric = float(ev.metrics[config.monitor])

        final = yield from self._follow_loop(config, self.data, model, rw, annotate)
        model = self.model
        status = final.get("status", "failed")
        vid = None
        if status != "stopped-before-first-epoch":
            classes = list(self.data.classes)

            def per_class(key):
                n = start.get(key, final.get(key))
                return None if n is None else {c: int(k) for c, k in zip(classes, n)}

            train_pc = per_class("n_train_per_class")
            val_pc = per_class("n_val_per_class")
            notes = {"learn": {
                "modality": self.modality, "random_weights": rw, "n_examples": len(self.data),
                "n_train": int(start.get("n_train", final.get("n_train", len(self.data)))),
                "n_val": int(start.get("n_val", final.get("n_val", 0)) or 0),
                "n_train_per_class": train_pc, "n_val_per_class": val_pc,
                "n_groups": int(len(set(self.data.groups))),
                "n_with_masks": self.n_with_masks, "cancelled": self.cancelled,
                "seconds": round(time.perf_counter() - t0, 3),
            }}
            active_before = self.store.active
            activate = active_before is None  # the first model; never override the user's active choice
            vid = self._save_version(model, config, final, status, parent=True, activate=activate, notes=notes)
            self.activated = activate
            yield LearnEvent("version", progress=1.0, message=f"saved as version {vid}" +
                             (" (RANDOM weights)" if rw else ""), random_weights=rw, version=vid)
        msg = end_message(status, final, vid)
        if vid is not None and not self.activated:
            msg += (f"; version {vid} is NOT active: {active_before} stays the active model "
                    f"(activate {vid} in the Models tab to use it)")
        if rw:
            msg += " — " + RANDOM_WARNING
        self.result = RunResult(vid, status, final, rw, self.cancelled, msg)
        yield done_event(final, msg, rw, vid)
