"""``zero-shot``: CLIP with class text prompts, no training (templates editable)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from napari_medprompt.classify.methods._text import DEFAULT_TEMPLATES, class_text_features, require_text
from napari_medprompt.classify.methods.base import AdapterMethod


class ZeroShot(AdapterMethod):
    """logits = logit_scale * cos(image feature, class text feature); nothing trains."""

    name = "zero-shot"

    def __init__(self, backbone, classes, templates=DEFAULT_TEMPLATES, class_prompts=None, logit_scale: float = 100.0, **config):
        require_text(self.name, backbone)
        templates = [str(t) for t in templates]
        bad = [t for t in templates if "{}" not in t]
        if bad:
            raise ValueError(f"zero-shot: every template needs a '{{}}' for the class name, got {bad!r}")
        super().__init__(backbone, classes, templates=templates, class_prompts=class_prompts, logit_scale=logit_scale, **config)
        self.logit_scale = float(logit_scale)
        self.register_buffer("text_features", class_text_features(backbone, self.classes, templates, class_prompts))

    def forward_features(self, features: torch.Tensor) -> torch.Tensor:
        f = F.normalize(features.float(), dim=-1)
        return self.logit_scale * f @ self.text_features.t()

    def forward(self, images, masks=None):
        return self.forward_features(self.backbone.encode_image(images))
