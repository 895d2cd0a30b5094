"""``linear-probe``: a logistic-regression head on frozen image features (trained on cached features).

Features are standardised with the training set's per-dimension mean and std (computed once in
``prepare``, like a StandardScaler before logistic regression), or L2-normalised (``normalize="l2"``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from napari_medprompt.classify.methods.base import AdapterMethod


class FeatureScaler(nn.Module):
    """Per-dimension standardisation fitted on the training features (buffers, saved with the head)."""

    def __init__(self, dim: int, mode: str = "standardize") -> None:
        super().__init__()
        if mode not in ("standardize", "l2", "none"):
            raise ValueError(f"feature normalisation must be 'standardize', 'l2' or 'none', not {mode!r}")
        self.mode = mode
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, features: torch.Tensor) -> None:
        if self.mode == "standardize" and features is not None and len(features) > 1:
            f = features.float()
            self.mean.copy_(f.mean(0))
            self.std.copy_(f.std(0).clamp_min(1e-6))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        f = f.float()
        if self.mode == "standardize":
            return (f - self.mean) / self.std
        if self.mode == "l2":
            return F.normalize(f, dim=-1)
        return f


class LinearProbe(AdapterMethod):
    name = "linear-probe"
    cached_features = True

    def __init__(self, backbone, classes, normalize: str = "standardize", **config):
        super().__init__(backbone, classes, normalize=normalize, **config)
        self.scaler = FeatureScaler(backbone.embed_dim, normalize)
        self.fc = nn.Linear(backbone.embed_dim, self.n_classes)

    def prepare(self, features, targets) -> None:
        self.scaler.fit(features)

    def forward_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.scaler(features))

    def forward(self, images, masks=None):
        return self.forward_features(self.backbone.encode_image(images))
