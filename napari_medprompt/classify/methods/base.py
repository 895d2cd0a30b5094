"""Base class of every adapter method.

A method wraps a frozen :class:`~napari_medprompt.classify.backbones.base.Backbone` and adds its own
small trainable part. The training loop only talks to this interface:

- ``forward(images, masks=None) -> logits (B, n_classes)``
- ``training_loss(images, masks, targets) -> (loss, logits)``: cross-entropy by default; a method
  with extra terms (MoVL's discrepancy) overrides it.
- methods with ``cached_features`` (their trainable part sits after the frozen encoder) also offer
  ``forward_features(features) -> logits`` and ``training_loss_from_features(features, targets)``, so
  the loop can encode each image once and train the head on cached features.
- ``prepare(features, targets)``: called once before training with the (cached) training features,
  for methods that initialise from data (Tip-Adapter's cache, text-initialised heads); default no-op.
- ``trainable_parameters()`` / ``num_trainable()``; ``method_config()`` for checkpoints (the complete
  option set, validated against the registry's schema: see :func:`~napari_medprompt.classify.base.validate_method_options`).

Masks (B, 1, S, S) in [0, 1] are required by methods whose registry info says ``uses_masks`` and
ignored by the others.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from napari_medprompt.classify.base import validate_method_options


class MissingMaskError(ValueError):
    pass


class AdapterMethod(nn.Module):
    name: str = ""
    uses_masks: bool = False
    cached_features: bool = False

    def __new__(cls, *args: Any, **options: Any):
        # options are checked against the registry's schema before any subclass code runs, so a
        # typo or a bad value fails with the list of valid options (and never lands in a checkpoint)
        if cls.name:
            validate_method_options(cls.name, options)
        return super().__new__(cls)

    def __init__(self, backbone, classes: list[str], **config: Any) -> None:
        super().__init__()
        if len(classes) < 2:
            raise ValueError(f"{self.name}: need at least two classes, got {classes!r}")
        self.backbone = backbone
        self.classes = list(classes)
        # the complete option set (defaults filled in, values as resolved by the method)
        self.config = validate_method_options(self.name, config) if self.name else dict(config)
        backbone.requires_grad_(False)
        backbone.eval()

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def train(self, mode: bool = True):  # the frozen backbone stays in eval mode (BN/dropout)
        super().train(mode)
        if not getattr(self, "trains_backbone", False):
            self.backbone.eval()
        return self

    def require_masks(self, masks: torch.Tensor | None) -> torch.Tensor:
        if masks is None:
            raise MissingMaskError(
                f"method {self.name!r} needs a mask for every image (segment the region first, or "
                "choose a method that does not use masks)"
            )
        return masks

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward_features(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} does not train on cached features")

    def prepare(self, features: torch.Tensor | None, targets: torch.Tensor | None) -> None:
        return None

    def training_loss(self, images, masks, targets):
        logits = self(images, masks)
        return F.cross_entropy(logits, targets), logits

    def training_loss_from_features(self, features, targets):
        logits = self.forward_features(features)
        return F.cross_entropy(logits, targets), logits

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def method_config(self) -> dict[str, Any]:
        return dict(self.config)
