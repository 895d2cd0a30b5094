"""Contracts shared by backbones and adapter methods, and the method registry.

A *backbone* wraps a frozen pretrained image encoder (open_clip ViT / ResNet, torchvision ResNet).
A *method* (zero-shot, linear-probe, clip-adapter, tip-adapter, vpt, visual-prompt, movl,
mask-guided-clip, segprompt, full-finetune) is an ``nn.Module`` built on a backbone; only its own
parameters train (except full-finetune). Methods register by name with an import path so listing
them imports no torch.

Tensor conventions: ``images`` are float (B, 3, S, S) already normalised with the backbone's mean/std
at its input size S; ``masks`` are float (B, 1, S, S) in [0, 1] aligned with the images.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    name: str
    target: str  # "module:Class"
    description: str
    uses_masks: bool = False  # the method requires masks
    cached_features: bool = False  # trainable part sits after the frozen encoder: train on cached features
    needs_text: bool = False  # needs a backbone with a text tower (CLIP)


_METHODS: dict[str, MethodInfo] = {}


def register_method(info: MethodInfo) -> None:
    _METHODS[info.name] = info


def available_methods() -> dict[str, MethodInfo]:
    _load_builtin()
    return dict(_METHODS)


def method_class(name: str):
    _load_builtin()
    try:
        info = _METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(sorted(_METHODS))}") from None
    module, _, attr = info.target.partition(":")
    return getattr(importlib.import_module(module), attr)


_loaded = False


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        importlib.import_module("napari_medprompt.classify.methods")
