"""The resume state of a training run: written after every epoch, read back by ``config.resume``.

:func:`~.loop.train_iter` with ``config.out_dir`` writes ``out_dir/resume_state.pt`` after every
epoch (rank 0 only, atomically: a killed run leaves the last complete epoch's state or none). It
holds everything needed to continue exactly where that epoch ended: the method's tensors
(:func:`adapter_state`), the optimizer, learning-rate schedule, AMP scaler and batch-order generator
states, the loop's private torch RNG state, the best epoch so far, the history, the epoch, step and
early-stopping counters, and whether the run had finished. Numpy values are stored as Python
numbers, so the file loads with ``torch.load(weights_only=True)``.

The state also records the run's *recipe* (the config without the fields that only say where the
results go and how the run is executed, the effective schedule, the task, and the content
fingerprints of the training and validation data). A state of another recipe, or one that cannot
be read, is refused with a :class:`ResumeError` naming what differs. Under ``torchrun`` rank 0 reads
the state and every rank continues from rank 0's copy (or raises rank 0's error).

A run that finished and wrote its checkpoint / store version records them in
``out_dir/resume_written.json``: resuming that run again writes nothing new.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RESUME_FILE = "resume_state.pt"
WRITTEN_FILE = "resume_written.json"  # what a finished run wrote (a resume of it writes nothing again)
#: config fields that do not change what is trained (where it goes, how it is run)
NOT_RECIPE = ("out_dir", "checkpoint_name", "store", "store_activate", "resume", "device", "stop_event")


class ResumeError(ValueError):
    """A resume state that cannot be used for this run (another recipe, unreadable); the message says why."""


def adapter_state(model) -> dict:
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


@dataclass
class Trainables:
    """What a resume state saves and restores besides the loop's counters: the model (its
    :func:`adapter_state`), the optimizer, the learning-rate schedule, the AMP grad scaler, the
    batch-order ``torch.Generator`` and the loop's :class:`~.loop.LocalRNG`."""

    model: Any
    optimizer: Any
    lr_sched: Any
    scaler: Any
    generator: Any
    rng: Any


def _plain(x):
    """``x`` with numpy scalars and arrays turned into Python numbers and lists (tensors kept), so the
    resume state loads with ``torch.load(weights_only=True)``."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    if isinstance(x, (np.generic, np.ndarray)):
        return x.tolist()
    return x


class ResumeFile:
    """The resume state of one run (``config.out_dir``; none without it): its recipe, reading
    (checked against the recipe), restoring, writing, and the record of what a finished run wrote.

    ``task``, ``data``, ``val`` and ``sched``: the run's :mod:`.task`, training and validation data,
    and effective schedule (:func:`~.loop.schedule`)."""

    def __init__(self, config, task, data, val, sched: dict):
        self.config, self.task, self.data, self.val, self.sched = config, task, data, val, sched

    @property
    def path(self) -> Path | None:
        return Path(self.config.out_dir) / RESUME_FILE if self.config.out_dir else None

    def recipe(self) -> dict:
        """What a run trains: the config without output/device fields, the effective schedule, the task and
        the training / validation data's content fingerprints."""
        d = {k: v for k, v in self.config.to_dict().items() if k not in NOT_RECIPE}
        return {"config": json.loads(json.dumps(d, default=str)), "schedule": dict(self.sched), "task": self.task.name,
                "train_set_sha256": self.data.fingerprint(),
                "val_set_sha256": None if self.val is None else self.val.fingerprint()}

    def load(self) -> dict | None:
        """The saved state to continue from (``config.resume`` and a state in ``out_dir``), checked to be
        this recipe's; None to start from scratch. Under torchrun rank 0 reads it and every rank gets
        rank 0's state (or its error), so nodes without a shared file system resume together."""
        from napari_medprompt.train import distributed as dd

        return dd.from_main(self._read, ResumeError)

    def _read(self) -> dict | None:
        path = self.path
        if not self.config.resume or path is None or not path.exists():
            return None
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ResumeError(f"cannot read the resume state {path}: {err}; remove it to start afresh") from None
        mine, theirs = self.recipe(), state.get("recipe") or {}
        if mine != theirs:
            diff = []
            for k in sorted(set(mine) | set(theirs)):
                a, b = mine.get(k), theirs.get(k)
                if isinstance(a, dict) and isinstance(b, dict):
                    diff += [f"{k}.{j}: {b.get(j)!r} -> {a.get(j)!r}" for j in sorted(set(a) | set(b))
                             if a.get(j) != b.get(j)]
                elif a != b:
                    diff.append(f"{k}: {str(b)[:16]!r} -> {str(a)[:16]!r}")
            raise ResumeError(f"refusing to resume from {path}: it was written by another recipe ({'; '.join(diff)}); "
                              "use another output folder or remove the file to start afresh")
        return state

    @staticmethod
    def restore(state: dict, t: Trainables, best: dict, history: list) -> tuple[int, int, int]:
        """Put ``state`` (from :meth:`load`) into ``t``, ``best`` and ``history`` (in place); returns the
        epoch to start with, the steps done and the epochs without improvement."""
        t.model.load_state_dict(state["model"], strict=False)
        t.optimizer.load_state_dict(state["optimizer"])
        t.lr_sched.load_state_dict(state["lr_sched"])
        t.scaler.load_state_dict(state["scaler"])
        t.generator.set_state(state["generator"])
        t.rng._cpu = state["rng_cpu"]
        if t.rng.cuda and state.get("rng_gpu") is not None:
            t.rng._gpu = state["rng_gpu"]
        best.update(state["best"])
        history[:] = state["history"]
        return int(state["epoch"]) + 1, int(state["done_steps"]), int(state["bad_epochs"])

    def save(self, t: Trainables, *, epoch: int, done_steps: int, bad_epochs: int, best: dict, history: list,
             finished: bool, status: str) -> None:
        """After every epoch (rank 0, atomically): everything needed to continue exactly where this epoch ended."""
        from napari_medprompt.train import distributed as dd

        path = self.path
        if path is None or not dd.is_main():
            return
        import io

        import torch

        from napari_medprompt.io.atomic import atomic_write_bytes

        state = {"format": 1, "recipe": self.recipe(), "epoch": epoch, "done_steps": done_steps,
                 "bad_epochs": bad_epochs, "model": adapter_state(t.model), "optimizer": t.optimizer.state_dict(),
                 "lr_sched": t.lr_sched.state_dict(), "scaler": t.scaler.state_dict(),
                 "generator": t.generator.get_state(), "rng_cpu": t.rng._cpu, "rng_gpu": t.rng._gpu,
                 "best": dict(best), "history": list(history), "finished": finished, "status": status}
        buf = io.BytesIO()
        torch.save(_plain(state), buf)  # numpy scalars (metrics, cosine-schedule lrs) as Python numbers
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue())

    def already_written(self) -> dict | None:
        """``{"checkpoint", "version"}`` a finished run of this folder wrote (None: nothing recorded, or its
        checkpoint file is gone)."""
        p = Path(self.config.out_dir) / WRITTEN_FILE if self.config.out_dir else None
        try:
            w = json.loads(p.read_text()) if p is not None and p.exists() else None
        except (OSError, ValueError):
            return None
        if w and w.get("checkpoint") and not Path(w["checkpoint"]).exists():
            return None
        return w

    def record_written(self, checkpoint: str | None, version: str | None) -> None:
        """Record (atomically, in ``out_dir``) the checkpoint and store version the finished run wrote."""
        from napari_medprompt.io.atomic import atomic_write_text

        atomic_write_text(Path(self.config.out_dir) / WRITTEN_FILE,
                          json.dumps({"checkpoint": checkpoint, "version": version}))
