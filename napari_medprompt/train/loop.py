"""The one training loop: ``train_iter(config, data, model)`` is a generator of :class:`TrainEvent`.

The GUI runs it in a worker thread and updates plots from the events; the CLI iterates it with a
progress bar. It never prints and never touches Qt. It stops cleanly when ``config.stop_event`` (a
``threading.Event``) is set — the best model so far is kept and, with ``out_dir``, saved — or when
the generator is closed.

Event kinds, in order: ``start`` (device, trainable parameter count, random-weight warning),
``features`` (cached-feature extraction progress, for cached-feature methods), ``step`` (loss, lr,
eta), ``epoch`` (train loss, validation metrics, best so far), ``checkpoint`` (path written),
``stopped`` (stop requested), ``done`` (final metrics; ``event.model`` is the trained method).

Methods whose trainable part sits after the frozen encoder (``cached_features``) are trained on
features computed once per image; the rest run the encoder every step (AMP on CUDA). Seeds are set
for Python, numpy and torch; cuDNN runs deterministic. Early stopping watches the validation loss
(``patience`` epochs without improvement) and restores the best weights. Class-balanced sampling
draws each class equally often per epoch.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from napari_medprompt.train.data import FewShotData, split_train_val


@dataclass
class TrainConfig:
    method: str = "linear-probe"
    backbone: str = "ViT-B-16"
    pretrained: str | None = "default"
    method_options: dict = field(default_factory=dict)
    lr: float = 1e-3
    epochs: int = 20
    batch_size: int = 16
    weight_decay: float = 1e-4
    seed: int = 0
    val_fraction: float = 0.2
    patience: int = 5  # epochs without validation improvement before stopping; 0 = never
    balanced_sampling: bool = True
    device: str = "auto"  # auto | cuda | mps | cpu
    amp: bool = True  # mixed precision (CUDA only)
    out_dir: str | None = None  # where the checkpoint is written (adapter.safetensors + .json)
    checkpoint_name: str = "adapter.safetensors"
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


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def build_model(config: TrainConfig, classes: list[str], device=None):
    """The method named in ``config`` on a frozen backbone built from ``config``."""
    from napari_medprompt.classify.backbones.registry import create_backbone
    from napari_medprompt.classify.base import method_class

    backbone = create_backbone(config.backbone, config.pretrained, device=device or "cpu")
    return method_class(config.method)(backbone, classes, **config.method_options)


def _adapter_state(model) -> dict:
    """A copy of the method's own tensors (the backbone's too when it trains), cheap for big backbones."""
    if getattr(model, "trains_backbone", False):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = {}
    for name, child in model.named_children():
        if name != "backbone":
            out.update({f"{name}.{k}": v.detach().clone() for k, v in child.state_dict().items()})
    for name, p in model.named_parameters(recurse=False):
        out[name] = p.detach().clone()
    for name, b in model.named_buffers(recurse=False):
        if name not in model._non_persistent_buffers_set:
            out[name] = b.detach().clone()
    return out


def _stopping(config) -> bool:
    ev = config.stop_event
    return ev is not None and ev.is_set()


def train_iter(config: TrainConfig, data: FewShotData, model=None) -> Iterator[TrainEvent]:
    import torch

    from napari_medprompt.classify.base import available_methods
    from napari_medprompt.train.preprocess import Preprocess, images_to_tensor, masks_to_tensor

    seed_everything(config.seed)
    device = resolve_device(config.device)
    info = available_methods().get(config.method if model is None else model.name)
    uses_masks = bool(getattr(model, "uses_masks", False) or (info is not None and info.uses_masks))
    data.validate(require_masks=uses_masks)
    if model is None:
        model = build_model(config, data.classes, device)
    if list(model.classes) != list(data.classes):
        raise ValueError(f"the model's classes {model.classes!r} differ from the data's {data.classes!r}")
    model.to(device)
    bb = model.backbone
    train_set, val_set = split_train_val(data, config.val_fraction, config.seed)
    spec = Preprocess.from_backbone(bb)

    def tensors(ds: FewShotData | None):
        if ds is None:
            return None
        x = images_to_tensor(ds.images, spec, ds.sources)
        m = masks_to_tensor(ds.masks, ds.images, spec, ds.sources) if uses_masks else None
        return x, m, torch.as_tensor(ds.labels)

    tr, va = tensors(train_set), tensors(val_set)
    amp = config.amp and device.type == "cuda"
    params = model.trainable_parameters()
    cached = bool(getattr(model, "cached_features", False))
    yield TrainEvent(
        "start",
        epochs=config.epochs,
        metrics={"n_trainable": int(model.num_trainable()), "n_train": len(train_set),
                 "n_val": 0 if val_set is None else len(val_set), "device": str(device),
                 "random_weights": bool(bb.random_weights), "cached_features": cached},
        message=("backbone runs on RANDOM weights: results are not meaningful" if bb.random_weights else ""),
    )

    def autocast():
        return torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()

    bs = max(1, int(config.batch_size))
    if cached:
        feats = {}
        for split, t in (("train", tr), ("val", va)):
            if t is None:
                continue
            out = []
            for i in range(0, len(t[0]), bs):
                with torch.no_grad(), autocast():  # never yield inside: grad mode is thread state
                    x = t[0][i : i + bs].to(device)
                    if hasattr(model, "encode_for_cache"):  # a fixed input transform (e.g. the mask) first
                        m = None if t[1] is None else t[1][i : i + bs].to(device)
                        out.append(model.encode_for_cache(x, m).float())
                    else:
                        out.append(bb.encode_image(x).float())
                yield TrainEvent("features", step=min(i + bs, len(t[0])), steps=len(t[0]), message=split)
                if _stopping(config):
                    break
            feats[split] = torch.cat(out) if out else None
        if _stopping(config):
            yield TrainEvent("stopped", message="stopped while computing features; nothing was trained")
            yield TrainEvent("done", message="stopped", model=model)
            return
        model.prepare(feats["train"], tr[2].to(device))
    else:
        model.prepare(None, tr[2].to(device))
    params = model.trainable_parameters()  # prepare() may create parameters (Tip-Adapter-F)

    def evaluate(t, split):
        if t is None:
            return None
        model.eval()
        logits = []
        with torch.no_grad():
            if cached:
                logits.append(model.forward_features(feats[split]).float())
            else:
                for i in range(0, len(t[0]), bs):
                    m = None if t[1] is None else t[1][i : i + bs].to(device)
                    with autocast():
                        logits.append(model(t[0][i : i + bs].to(device), m).float())
        logits = torch.cat(logits)
        y = t[2].to(device)
        loss = float(torch.nn.functional.cross_entropy(logits, y))
        from napari_medprompt.train.metrics import classification_metrics

        metrics = classification_metrics(t[2].numpy(), logits.softmax(-1).cpu().numpy(), model.n_classes)
        metrics["loss"] = loss
        return metrics

    def finish(stopped: bool, best_metrics):
        path = None
        if config.out_dir:
            from napari_medprompt.train.checkpoints import save_checkpoint

            path = str(save_checkpoint(
                __import__("pathlib").Path(config.out_dir) / config.checkpoint_name, model,
                config=config.to_dict(), train_fingerprint=data.fingerprint(), metrics=best_metrics,
            ))
        return path

    n_train = len(tr[2])
    steps_per_epoch = (n_train + bs - 1) // bs
    history: list[dict] = []
    best = {"loss": float("inf"), "state": None, "metrics": None, "epoch": 0}
    stopped = False
    if not params:
        # training-free methods (zero-shot, Tip-Adapter): nothing to optimise, just evaluate
        metrics = evaluate(va, "val") or evaluate(tr, "train")
        best["metrics"] = metrics
        yield TrainEvent("epoch", epoch=0, epochs=0, metrics=metrics, message="training-free method: nothing to train")
    else:
        groups = model.param_groups(config.lr) if hasattr(model, "param_groups") else [{"params": params, "lr": config.lr}]
        opt = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
        total = max(1, config.epochs * steps_per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, total) / total)))
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        gen = torch.Generator().manual_seed(config.seed)
        counts = np.bincount(tr[2].numpy(), minlength=model.n_classes)
        weights = torch.as_tensor(1.0 / np.maximum(counts, 1))[tr[2]]
        t0, done_steps, bad_epochs = time.perf_counter(), 0, 0
        for epoch in range(1, config.epochs + 1):
            model.train()
            if config.balanced_sampling:
                order = torch.multinomial(weights, n_train, replacement=True, generator=gen)
            else:
                order = torch.randperm(n_train, generator=gen)
            losses = []
            for s in range(steps_per_epoch):
                if _stopping(config):
                    stopped = True
                    break
                idx = order[s * bs : (s + 1) * bs]
                y = tr[2][idx].to(device)
                with autocast():
                    if cached:
                        loss, _ = model.training_loss_from_features(feats["train"][idx.to(device)], y)
                    else:
                        m = None if tr[1] is None else tr[1][idx].to(device)
                        loss, _ = model.training_loss(tr[0][idx].to(device), m, y)
                opt.zero_grad(set_to_none=True)
                if amp:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                sched.step()
                done_steps += 1
                losses.append(float(loss.detach()))
                rate = (time.perf_counter() - t0) / done_steps
                yield TrainEvent("step", epoch=epoch, epochs=config.epochs, step=done_steps, steps=total,
                                 loss=losses[-1], lr=opt.param_groups[0]["lr"], eta_s=rate * (total - done_steps))
            if stopped:
                break
            metrics = evaluate(va, "val") if va is not None else None
            train_loss = float(np.mean(losses)) if losses else float("nan")
            monitor = metrics["loss"] if metrics is not None else train_loss
            improved = monitor < best["loss"] - 1e-6
            if improved:
                best.update(loss=monitor, epoch=epoch, metrics=metrics, state=_adapter_state(model))
                bad_epochs = 0
            else:
                bad_epochs += 1
            history.append({"epoch": epoch, "train_loss": train_loss, **({"val": metrics} if metrics else {})})
            yield TrainEvent("epoch", epoch=epoch, epochs=config.epochs, loss=train_loss, metrics=metrics,
                             lr=opt.param_groups[0]["lr"], eta_s=(time.perf_counter() - t0) / done_steps * (total - done_steps),
                             message="improved" if improved else f"no improvement for {bad_epochs} epoch(s)")
            if va is not None and config.patience and bad_epochs >= config.patience:
                yield TrainEvent("epoch", epoch=epoch, epochs=config.epochs, message=f"early stop after epoch {epoch}")
                break
        if best["state"] is not None:
            model.load_state_dict(best["state"], strict=False)
    model.eval()
    if stopped:
        yield TrainEvent("stopped", message="training stopped on request; keeping the best weights so far")
    final = {"best_epoch": best["epoch"], "val": best["metrics"], "history": history,
             "n_trainable": int(model.num_trainable()), "train_set_sha256": data.fingerprint()}
    path = finish(stopped, best["metrics"])
    if path:
        yield TrainEvent("checkpoint", path=path, message="adapter written")
    yield TrainEvent("done", metrics=final, path=path, model=model, message="stopped" if stopped else "finished")
