"""The one training loop: ``train_iter(config, data, model, val=...)`` is a generator of :class:`TrainEvent`.

The GUI runs it in a worker thread and updates plots from the events; the CLI iterates it with a
progress bar. It never prints and never touches Qt. It stops cleanly when ``config.stop_event`` (a
``threading.Event``) is set, or when the generator is closed.

**Protocol.** ``data`` is the training set as given: k-shot trains on exactly those k images per
class (nothing is carved out of it). Model selection uses a *separate* validation split, ``val``
(the dataset's own split, or a fixed split the user made, e.g. with
:func:`~napari_medprompt.train.data.split_train_val` on a pool before sampling shots). The model is
selected on ``config.monitor`` (balanced accuracy by default; ``loss`` on request) with early
stopping after ``patience`` epochs without improvement. Without validation data the run trains a
fixed schedule (every epoch, the last epoch's weights) and says so in the ``start`` event and the
results. ``config.val_fraction > 0`` declares ``data`` a *pool*: a grouped, stratified validation
split is carved from it (said in the events, and ``n_train`` counts what is trained on).
Training-free methods (zero-shot, Tip-Adapter) report their metrics under ``val`` when there is a
validation split, else under ``train`` (labelled as training-set metrics), never the reverse.

Event kinds, in order: ``start`` (device, trainable parameter count, n_train/n_val per class, how the
model is selected, random-weight warning), ``features`` (cached-feature extraction progress),
``resumed`` (continuing from a resume state: after which epoch and step), ``step``
(loss, lr, eta), ``epoch`` (train loss, validation metrics, best so far), ``stopped`` (stop requested:
which epoch is kept, or that nothing was written), ``checkpoint`` (file written in ``out_dir``, never
over an existing one), ``version`` (the new version of the model store), ``done`` (final metrics;
``event.model`` is the trained method).

**No global trace.** Randomness comes from local generators: a ``numpy.random.Generator`` for
sampling, a ``torch.Generator`` for batch order, and a private torch RNG state swapped in only while
the loop computes (model construction, dropout), so the process-wide Python, numpy and torch random
states are unchanged after a run; cuDNN's deterministic/benchmark flags are set only while the loop
computes and restored (``finally``). The same seed gives the same model, whatever the caller did to
the global random state.

Methods whose trainable part sits after a fixed input transform (``cached_features``) train on
features computed once per image (``model.encode_for_cache(images, masks)`` when the method defines
it, else the backbone's ``encode_image``); the rest run the encoder every step (AMP on CUDA).

**Tasks.** What is classification- or segmentation-specific (data checks, tensors, loss, metrics,
sampling, model selection) lives in :mod:`.task`; the loop picks the task from the data
(:func:`~.task.task_for`): :class:`~.data.FewShotData` trains a classifier, :class:`~.seg_data.SegData`
(slices, masks, text prompts, groups) a segmenter (``vlsm-*``, ``clipseg-decoder``) with the same
events, cancel, checkpoints and model-store versions. Segmentation runs select on validation Dice.

**Resume.** With ``config.out_dir`` the loop writes a resume state after every epoch, and
``config.resume`` continues an interrupted run from it, refused when it is another recipe's
(:mod:`.resume`). Under ``torchrun`` the loop shards feature extraction and batches, wraps the loss
in DDP and writes from rank 0 only (:mod:`.distributed`).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from napari_medprompt.train.data import FewShotData
from napari_medprompt.train.resume import (  # noqa: F401  (RESUME_FILE, WRITTEN_FILE, ResumeError: importable here too)
    RESUME_FILE,
    WRITTEN_FILE,
    ResumeError,
    ResumeFile,
    Trainables,
    adapter_state,
)
from napari_medprompt.train.task import task_for

FALLBACK_SCHEDULE = {"optimizer": "adamw", "lr": 1e-3, "epochs": 20, "batch_size": 16, "weight_decay": 1e-4}


@dataclass
class TrainConfig:
    method: str = "linear-probe"
    backbone: str = "ViT-B-16"
    pretrained: str | None = "default"
    method_options: dict = field(default_factory=dict)
    # None: the method's own training defaults (its registry entry's TrainDefaults)
    optimizer: str | None = None  # adamw | adam | sgd
    lr: float | None = None
    epochs: int | None = None
    batch_size: int | None = None
    weight_decay: float | None = None
    seed: int = 0
    monitor: str = "balanced_accuracy"  # validation metric the model is selected on (or "loss"); segmentation: "dice"
    patience: int = 5  # epochs without validation improvement before stopping; 0 = never
    val_fraction: float = 0.0  # > 0: ``data`` is a pool; carve a grouped validation split from it
    balanced_sampling: bool = True
    device: str = "auto"  # auto | cuda | mps | cpu
    amp: bool = True  # mixed precision (CUDA only)
    preprocess: dict | None = None  # Preprocess.to_dict(); None: the model's own, else the backbone's default
    out_dir: str | None = None  # also write a checkpoint file here (a free name, never over a file)
    checkpoint_name: str = "adapter.safetensors"
    store: str | None = None  # model store folder: every run writes a new version there
    store_activate: bool = True  # make the new version the active one
    resume: bool = False  # continue from out_dir's resume state (written after every epoch) when there is one
    stop_event: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "stop_event"}


@dataclass
class TrainEvent:
    kind: str
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    loss: float | None = None
    lr: float | None = None
    eta_s: float | None = None
    metrics: dict | None = None
    path: str | None = None
    message: str = ""
    model: Any = field(default=None, repr=False)

    def as_dict(self) -> dict:
        """The event as plain data (without the model), e.g. for JSON logs."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "model"}


def resolve_device(name: str = "auto"):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use 'auto' or 'cpu'")
    return dev


def schedule(config: TrainConfig, method: str | None = None) -> dict:
    """The effective optimizer, lr, epochs, batch size and weight decay: the config's values where
    set, else the method's registry defaults."""
    info = method_info_any(method or config.method)
    d = getattr(info, "defaults", None)
    out = {}
    for k, fallback in FALLBACK_SCHEDULE.items():
        v = getattr(config, k)
        out[k] = v if v is not None else (getattr(d, k, fallback) if d is not None else fallback)
    if out["optimizer"] not in ("adamw", "adam", "sgd"):
        raise ValueError(f"unknown optimizer {out['optimizer']!r}; choose adamw, adam or sgd")
    return out


def method_info_any(name: str):
    """The registry entry of a classification or segmentation method (None when unknown)."""
    from napari_medprompt.classify.base import available_methods

    info = available_methods().get(name)
    if info is None:
        from napari_medprompt.seg_adapters.registry import available_seg_methods

        info = available_seg_methods().get(name)
    return info


class LocalRNG:
    """A private torch random state (CPU, and the CUDA device in use), swapped in by :meth:`active`.

    Inside ``with rng.active():`` torch's default generators run from the private state and cuDNN
    is deterministic; on exit the private state is saved and the caller's state and cuDNN flags are
    put back. Never yield inside it."""

    def __init__(self, seed: int, device):
        import torch

        self.cuda = device.type == "cuda"
        # states of fresh local generators: nothing global is seeded, not even for a moment
        self._cpu = torch.Generator().manual_seed(int(seed)).get_state()
        self._gpu = torch.Generator(device=device).manual_seed(int(seed)).get_state() if self.cuda else None
        self.device = device

    @contextlib.contextmanager
    def active(self):
        import torch

        cudnn = torch.backends.cudnn
        flags = (cudnn.deterministic, cudnn.benchmark)
        saved_cpu = torch.get_rng_state()
        saved_gpu = torch.cuda.get_rng_state(self.device) if self.cuda else None
        torch.set_rng_state(self._cpu)
        if self.cuda:
            torch.cuda.set_rng_state(self._gpu, self.device)
        cudnn.deterministic, cudnn.benchmark = True, False
        try:
            yield
        finally:
            self._cpu = torch.get_rng_state()
            torch.set_rng_state(saved_cpu)
            if self.cuda:
                self._gpu = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(saved_gpu, self.device)
            cudnn.deterministic, cudnn.benchmark = flags


def build_model(config: TrainConfig, classes: list[str], device=None):
    """The method named in ``config`` on a frozen backbone built from ``config``.

    Random initialisation draws from the global torch RNG: call it under :meth:`LocalRNG.active`
    (as :func:`train_iter` does) to keep the caller's random state untouched."""
    from napari_medprompt.classify.backbones.registry import create_backbone
    from napari_medprompt.classify.base import method_class

    backbone = create_backbone(config.backbone, config.pretrained, device=device or "cpu")
    return method_class(config.method)(backbone, classes, **config.method_options)


def _stopping(config) -> bool:
    ev = config.stop_event
    return ev is not None and ev.is_set()


def _spec(config: TrainConfig, model):
    from napari_medprompt.train.preprocess import Preprocess, preprocess_of

    if config.preprocess is not None:
        p = config.preprocess
        return p if isinstance(p, Preprocess) else Preprocess.from_dict(p)
    return preprocess_of(model)


def _store_of(config: TrainConfig, store):
    from napari_medprompt.train.store import ModelStore

    store = store if store is not None else config.store
    if store is None or isinstance(store, ModelStore):
        return store
    return ModelStore(store)


def train_iter(config: TrainConfig, data, model=None, *, val=None, store=None) -> Iterator[TrainEvent]:
    """Train on ``data`` (exactly as given), select on ``val`` (or train a fixed schedule without it).

    ``data``/``val``: :class:`~.data.FewShotData` (classification) or :class:`~.seg_data.SegData`
    (segmentation; see :mod:`.task`). ``store``: a :class:`~napari_medprompt.train.store.ModelStore`
    or its folder (default ``config.store``); the run then writes a new version there."""
    import torch

    from napari_medprompt.classify.snapshot import state_lock
    from napari_medprompt.train import distributed as dd

    task = task_for(config, data, model)  # checks the monitor and that method and data belong together
    dist = dd.info()  # one process unless started under torchrun (init_from_env)
    device = resolve_device(dd.device_for(config.device))
    method = config.method if model is None else model.name
    info = method_info_any(method)
    sched = schedule(config, method)
    uses_masks = bool(getattr(model, "uses_masks", False) or (info is not None and info.uses_masks))
    if val is not None and config.val_fraction and config.val_fraction > 0:
        raise ValueError("give either a validation set (val=...) or config.val_fraction (a split carved from the "
                         "pool), not both")
    task.validate(data, None, uses_masks=uses_masks)
    carved = ""
    if val is None and config.val_fraction and config.val_fraction > 0:
        data, val, carved = task.split(data, config.val_fraction, config.seed)
    task.validate(data, val, uses_masks=uses_masks)
    store = _store_of(config, store)
    if store is not None:
        store.list()  # a corrupt index is reported now, before any training
    rng = LocalRNG(config.seed, device)
    with rng.active():
        if model is None:
            model = task.build_model(config, data, device)
    task.check_model(model, data)
    model.to(device)
    bb = model.backbone
    spec = _spec(config, model)
    model.preprocess = spec  # predictions during and after training preprocess as the training did

    def tensors(ds):
        return None if ds is None else task.tensors(ds, spec, uses_masks)

    tr, va = tensors(data), tensors(val)
    amp = config.amp and device.type == "cuda"
    cached = bool(getattr(model, "cached_features", False))
    epochs = int(sched["epochs"])
    has_val = va is not None
    selection = task.describe_selection(has_val, epochs)
    counts = task.summary(data, val)
    n_per_class = counts["n_train_per_class"]
    yield TrainEvent(
        "start",
        epochs=epochs,
        metrics={"n_trainable": int(model.num_trainable()), "n_train": len(data), **counts,
                 "n_val": 0 if val is None else len(val), "task": task.name,
                 "device": str(device), "random_weights": bool(bb.random_weights), "cached_features": cached,
                 "selection": selection, "monitor": task.monitor if has_val else None,
                 "validation": carved or ("separate validation split" if has_val else "none"),
                 "schedule": sched},
        message=("backbone runs on RANDOM weights: results are not meaningful" if bb.random_weights else ""),
    )

    def autocast():
        return torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()

    bs = max(1, int(sched["batch_size"]))
    feats: dict = {}
    if cached:
        for split, t in (("train", tr), ("val", va)):
            if t is None:
                continue
            out = []
            mine = torch.as_tensor(dd.shard_indices(len(t.x)), dtype=torch.long)  # all of them in one process
            for i in range(0, len(mine), bs):
                with torch.no_grad(), autocast(), rng.active():  # never yield inside: grad mode is thread state
                    sel = mine[i : i + bs]
                    x = t.x[sel].to(device)
                    m = None if t.m is None else t.m[sel].to(device)
                    out.append(task.encode(model, x, m))
                yield TrainEvent("features", step=min(i + bs, len(mine)), steps=len(mine), message=split)
                if _stopping(config):
                    break
            feats[split] = torch.cat(out) if out else None
            if feats[split] is not None and dist.enabled and not _stopping(config):
                feats[split] = dd.gather_ordered(feats[split], len(t.x))  # computed sharded, gathered once
            if _stopping(config):
                break
    if _stopping(config):
        msg = "stopped while computing features, before any epoch completed; nothing was written"
        yield TrainEvent("stopped", message=msg)
        yield TrainEvent("done", message="stopped", model=model,
                         metrics={"status": "stopped-before-first-epoch", "written": False, "selection": selection})
        return
    with rng.active():
        model.prepare(feats.get("train"), tr.y.to(device))
    params = model.trainable_parameters()  # prepare() may create parameters (Tip-Adapter-F)

    def evaluate(t, split):
        if t is None:
            return None
        model.eval()
        with torch.no_grad(), rng.active():
            return task.evaluate(model, t, feats[split] if cached else None, bs, device, autocast)

    n_train = len(tr)
    steps_per_epoch = (n_train + bs - 1) // bs
    history: list[dict] = []
    best = {"metrics": None, "state": None, "epoch": 0, "train_loss": None}
    status = "finished"
    train_metrics = None
    resume = None
    resume_file = ResumeFile(config, task, data, val, sched)  # out_dir's resume state (none without out_dir)
    if not params:
        # training-free methods (zero-shot, Tip-Adapter): nothing to optimise, evaluate once
        if has_val:
            best["metrics"] = evaluate(va, "val")
            msg = "training-free method: nothing to train; metrics on the validation split"
        else:
            train_metrics = evaluate(tr, "train")
            msg = ("training-free method: nothing to train; no validation data, so the metrics are on the "
                   "training set itself (the support set the method memorised), reported under 'train'")
        selection = "training-free: nothing selected"
        epochs = 0
        yield TrainEvent("epoch", epoch=0, epochs=0, metrics=best["metrics"] or train_metrics, message=msg)
    else:
        lr, wd = float(sched["lr"]), float(sched["weight_decay"])
        groups = model.param_groups(lr) if hasattr(model, "param_groups") else [{"params": params, "lr": lr}]
        if sched["optimizer"] == "sgd":
            opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=wd)
        elif sched["optimizer"] == "adam":
            opt = torch.optim.Adam(groups, lr=lr, weight_decay=wd)
        else:
            opt = torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
        total = max(1, epochs * steps_per_epoch)
        lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, total) / total)))
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        gen = torch.Generator().manual_seed(int(config.seed))
        initial = adapter_state(model)
        weights_lock = state_lock(model)  # held while the weights change (classify.snapshot)
        t0, done_steps, bad_epochs = time.perf_counter(), 0, 0
        step_loss = dd.wrap_ddp(model, lambda mdl, i, g: task.loss(mdl, tr, i, feats["train"] if cached else None,
                                                                  device, g))
        trainables = Trainables(model, opt, lr_sched, scaler, gen, rng)
        resume = resume_file.load()
        start_epoch = 1
        if resume is not None:
            start_epoch, done_steps, bad_epochs = resume_file.restore(resume, trainables, best, history)
            yield TrainEvent("resumed", epoch=start_epoch - 1, epochs=epochs, step=done_steps, steps=total,
                             message=f"resumed after epoch {start_epoch - 1} ({done_steps} steps) from "
                                     f"{resume_file.path}")
        for epoch in range(start_epoch, epochs + 1):
            if resume is not None and resume.get("finished"):
                break
            order = task.epoch_order(tr, gen, balanced=config.balanced_sampling)
            losses = []
            for s in range(steps_per_epoch):
                if _stopping(config):
                    status = "stopped"
                    break
                idx = order[s * bs : (s + 1) * bs]
                local, weight = dd.split_batch(idx)
                with rng.active():
                    model.train()
                    with autocast():
                        if dist.enabled:  # the shared generator stays in step on every rank
                            g = dd.step_generator(config.seed, done_steps)
                            loss = step_loss(local, g) * weight
                        else:
                            loss = step_loss(idx, gen)
                    opt.zero_grad(set_to_none=True)
                    if amp:
                        scaler.scale(loss).backward()
                        with weights_lock:  # a snapshot (prediction while training) sees whole steps
                            scaler.step(opt)
                        scaler.update()
                    else:
                        loss.backward()
                        with weights_lock:
                            opt.step()
                    lr_sched.step()
                done_steps += 1
                losses.append(float(loss.detach()) / (weight or 1.0))
                dd.fault_point(done_steps)
                rate = (time.perf_counter() - t0) / done_steps
                yield TrainEvent("step", epoch=epoch, epochs=epochs, step=done_steps, steps=total,
                                 loss=losses[-1], lr=opt.param_groups[0]["lr"], eta_s=rate * (total - done_steps))
            if status == "stopped":
                break
            metrics = evaluate(va, "val")
            train_loss = float(np.mean(losses)) if losses else float("nan")
            if has_val:
                improved = task.better(metrics, best["metrics"])
            else:
                improved = True  # fixed schedule: the latest completed epoch is the one kept
            if improved:
                best.update(epoch=epoch, metrics=metrics, state=adapter_state(model), train_loss=train_loss)
                bad_epochs = 0
            else:
                bad_epochs += 1
            history.append({"epoch": epoch, "train_loss": train_loss, **({"val": metrics} if metrics else {})})
            if has_val:
                note = (f"best {task.monitor} so far" if improved
                        else f"no improvement in {task.monitor} for {bad_epochs} epoch(s)")
            else:
                note = "fixed schedule (no validation data)"
            stop_early = has_val and config.patience and bad_epochs >= config.patience and epoch < epochs
            resume_file.save(trainables, epoch=epoch, done_steps=done_steps, bad_epochs=bad_epochs, best=best,
                             history=history, finished=bool(stop_early or epoch == epochs),
                             status="early-stopped" if stop_early else "finished")
            yield TrainEvent("epoch", epoch=epoch, epochs=epochs, loss=train_loss, metrics=metrics,
                             lr=opt.param_groups[0]["lr"], eta_s=(time.perf_counter() - t0) / done_steps * (total - done_steps),
                             message=note)
            if stop_early:
                status = "early-stopped"
                yield TrainEvent("epoch", epoch=epoch, epochs=epochs,
                                 message=f"early stop after epoch {epoch}: no better {task.monitor} for {bad_epochs} epochs")
                break
        if resume is not None and resume.get("finished"):
            status = resume.get("status", status)
        with weights_lock:
            if best["state"] is not None:
                model.load_state_dict(best["state"], strict=False)
            else:
                model.load_state_dict(initial, strict=False)  # no epoch completed: undo the partial one
    model.eval()
    completed = not (status == "stopped" and best["epoch"] == 0 and params)
    if status == "stopped":
        if not completed:
            yield TrainEvent("stopped", message="training stopped before the first epoch completed; nothing was "
                                                "written (the model keeps its initial weights)")
        elif has_val:
            yield TrainEvent("stopped", epoch=best["epoch"], message=f"training stopped on request; keeping epoch "
                             f"{best['epoch']}, the best completed epoch by validation {task.monitor}")
        else:
            yield TrainEvent("stopped", epoch=best["epoch"], message=f"training stopped on request; keeping epoch "
                             f"{best['epoch']}, the last completed epoch (no validation data)")
    final = {
        "status": status if completed else "stopped-before-first-epoch",
        "selection": selection, "monitor": task.monitor if has_val and params else None, "task": task.name,
        "best_epoch": best["epoch"], "epochs_completed": len(history), "epochs_planned": epochs,
        "val": best["metrics"], "train": train_metrics, "train_loss": best["train_loss"], "history": history,
        "n_train": len(data), "n_train_per_class": n_per_class, "n_val": 0 if val is None else len(val),
        "n_trainable": int(model.num_trainable()), "train_set_sha256": data.fingerprint(),
        "val_set_sha256": None if val is None else val.fingerprint(), "random_weights": bool(bb.random_weights),
        "schedule": sched, "written": False,
    }
    path = vid = None
    written = resume_file.already_written() if params and resume is not None and resume.get("finished") else None
    if written:  # a resumed run that had finished and written its results: nothing new to write
        path, vid = written.get("checkpoint"), written.get("version")
        final["written"] = True
        completed = False
    if completed:
        saved = {k: v for k, v in final.items() if k not in ("written",)}
        if config.out_dir and dist.is_main:
            from napari_medprompt.train.checkpoints import free_path, save_checkpoint

            path = str(save_checkpoint(free_path(Path(config.out_dir), config.checkpoint_name), model,
                                       config=config.to_dict(), train_fingerprint=final["train_set_sha256"],
                                       metrics=saved, preprocess=spec))
            yield TrainEvent("checkpoint", path=path, message=f"adapter written to {path}")
        if store is not None and dist.is_main:
            parent = getattr(model, "store_version", True)
            vid = store.add(model, config=config.to_dict(), data_fingerprint=final["train_set_sha256"], metrics=saved,
                            preprocess=spec, parent=parent, activate=config.store_activate, status=final["status"])
            model.store_version = vid
            yield TrainEvent("version", path=str(store.weights_path(vid)), message=vid,
                             metrics={"version": vid, "store": str(store.root), "active": bool(config.store_activate)})
        final["written"] = bool(path or vid)
        if params and dist.is_main and resume_file.path is not None and final["written"]:
            resume_file.record_written(path, vid)
    final["version"] = vid
    yield TrainEvent("done", metrics=final, path=path, model=model, message=status)
