"""Trained prompt-method models shared by the prompt-method and localization tests (trained once per run).

Training goes through the project's one loop (``train_iter``) on the synthetic lesion-texture task
(:mod:`tests.classify.synthetic`) with the tiny random-weight backbones.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from napari_medprompt.classify.backbones.registry import create_backbone
from napari_medprompt.classify.base import method_class
from napari_medprompt.train.data import from_annotations
from napari_medprompt.train.loop import TrainConfig, train_iter
from tests.classify.synthetic import blob_task

EPOCHS, LR = 15, 1e-2
# a linear probe on the tiny random ViT's features learns slowly: MoVL on it gets more epochs
EPOCHS_FOR = {("movl", "test-vit-tiny"): 25}


@functools.lru_cache(maxsize=None)
def task():
    train, test = blob_task(24, seed=0), blob_task(30, seed=1)
    return from_annotations(train.as_items(), classes=train.classes), test


@functools.lru_cache(maxsize=None)
def backbone(name: str):
    torch.manual_seed(0)
    return create_backbone(name)


@dataclass
class Trained:
    model: object
    losses: list[float]
    done: object
    hash_before: str


def train(model, data, *, epochs: int = EPOCHS, lr: float = LR):
    """Train ``model`` with train_iter; returns (per-epoch training losses, the ``done`` event)."""
    config = TrainConfig(method=model.name, backbone=model.backbone.name, batch_size=16, val_fraction=0.2,
                         patience=0, lr=lr, epochs=epochs)
    losses, done = [], None
    for ev in train_iter(config, data, model):
        if ev.kind == "epoch" and ev.loss is not None:
            losses.append(ev.loss)
        if ev.kind == "done":
            done = ev
    return losses, done


@functools.lru_cache(maxsize=None)
def trained(name: str, bb_name: str, options: tuple = ()) -> Trained:
    """``name`` on ``bb_name`` with ``options`` (a tuple of (key, value) pairs), trained on the task."""
    torch.set_num_threads(2)
    bb = backbone(bb_name)
    before = bb.state_hash()
    data, _ = task()
    torch.manual_seed(0)
    model = method_class(name)(bb, data.classes, **dict(options))
    losses, done = train(model, data, epochs=EPOCHS_FOR.get((name, bb_name), EPOCHS))
    return Trained(model, losses, done, before)
