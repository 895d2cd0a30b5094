"""Backends register by name with an import path, so listing them imports no torch."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SegmenterInfo:
    name: str
    target: str  # "module:callable" returning a Segmenter
    description: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    needs_weights: bool = False


_REGISTRY: dict[str, SegmenterInfo] = {}


def register_segmenter(
    name: str, target: str, description: str = "", needs_weights: bool = False, **kwargs: Any
) -> None:
    _REGISTRY[name] = SegmenterInfo(name, target, description, dict(kwargs), needs_weights)


def available_segmenters() -> dict[str, SegmenterInfo]:
    _load_builtin()
    return dict(_REGISTRY)


def create_segmenter(name: str, **kwargs: Any):
    _load_builtin()
    try:
        info = _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown segmenter {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None
    module, _, attr = info.target.partition(":")
    factory = getattr(importlib.import_module(module), attr)
    return factory(**{**info.kwargs, **kwargs})


_loaded = False


def _load_builtin() -> None:
    """Register the built-in backends (cheap: only names and import paths)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    importlib.import_module("napari_medprompt.segment.builtin")
