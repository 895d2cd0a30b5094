"""``clip-adapter`` (Gao et al. 2021): a bottleneck MLP on the frozen image features, blended residually.

    f' = ratio * A(f) + (1 - ratio) * f,   A(f) = ReLU(W2 ReLU(W1 f)),  W1: D -> D / reduction

then classified by the CLIP text classifier (cosine with the class prompts' text features, frozen, as
in the paper) when the backbone has a text tower, or by a linear head otherwise (``head="linear"``
forces it). ``ratio`` (the paper's alpha, default 0.2) and ``reduction`` (default 4) are configurable.
Trains on cached features.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from napari_medprompt.classify.methods._text import DEFAULT_TEMPLATES, class_text_features
from napari_medprompt.classify.methods.base import AdapterMethod


class ClipAdapter(AdapterMethod):
    name = "clip-adapter"
    cached_features = True

    def __init__(self, backbone, classes, ratio: float = 0.2, reduction: int = 4, head: str = "auto",
                 templates=DEFAULT_TEMPLATES, logit_scale: float = 100.0, **config):
        if not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"clip-adapter: ratio must be in [0, 1], got {ratio}")
        if head == "auto":
            head = "text" if getattr(backbone, "has_text", False) else "linear"
        if head not in ("text", "linear"):
            raise ValueError(f"clip-adapter: head must be 'auto', 'text' or 'linear', not {head!r}")
        if head == "text" and not getattr(backbone, "has_text", False):
            raise ValueError(f"clip-adapter: head 'text' needs a CLIP backbone; {backbone.name!r} has no text tower")
        templates = [str(t) for t in templates]
        super().__init__(backbone, classes, ratio=float(ratio), reduction=int(reduction), head=head,
                         templates=templates, logit_scale=float(logit_scale), **config)
        d = int(backbone.embed_dim)
        hidden = max(1, d // int(reduction))
        self.ratio = float(ratio)
        self.adapter = nn.Sequential(
            nn.Linear(d, hidden, bias=False), nn.ReLU(inplace=True), nn.Linear(hidden, d, bias=False), nn.ReLU(inplace=True)
        )
        self.head_kind = head
        self.logit_scale = float(logit_scale)
        if head == "text":
            self.register_buffer("text_features", class_text_features(backbone, self.classes, templates))
        else:
            self.fc = nn.Linear(d, self.n_classes)

    def forward_features(self, features: torch.Tensor) -> torch.Tensor:
        f = features.float()
        if self.head_kind == "text":
            f = F.normalize(f, dim=-1)
        x = self.ratio * self.adapter(f) + (1.0 - self.ratio) * f
        if self.head_kind == "text":
            return self.logit_scale * F.normalize(x, dim=-1) @ self.text_features.t()
        return self.fc(x)

    def forward(self, images, masks=None):
        return self.forward_features(self.backbone.encode_image(images))
