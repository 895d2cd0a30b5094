"""Classification heads shared by the prompt-based methods (VPT, visual prompt, mask-guided, SegPrompt).

Two kinds of head sit on the backbone's image features (``encode_image`` / ``head`` output, size
``embed_dim``):

- ``"linear"``: an ``nn.Linear(embed_dim, n_classes)`` (a linear probe);
- ``"text"``: a CLIP-style cosine classifier whose class weights start as the normalised text
  embeddings of the class prompts (``templates`` filled with each class name, averaged over
  templates; :func:`~._text.class_text_features`, shared with zero-shot), logits = ``logit_scale * cos(feature, class_weight)``. It is what zero-shot CLIP
  computes; ``trainable=False`` keeps it frozen (Bahng et al.'s visual prompting trains only the
  prompt against the frozen text classifier), otherwise the class weights fine-tune from the text
  initialisation.

``resolve_head_kind("auto", backbone)`` picks ``"text"`` when the backbone has a text tower and
``"linear"`` otherwise.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from napari_medprompt.classify.methods._text import DEFAULT_TEMPLATES, class_text_features

DEFAULT_LOGIT_SCALE = 100.0  # CLIP's trained temperature (exp(4.605))
HEAD_KINDS = ("auto", "linear", "text")


def resolve_head_kind(kind: str, backbone) -> str:
    if kind not in HEAD_KINDS:
        raise ValueError(f"unknown head {kind!r}; choose one of {', '.join(HEAD_KINDS)}")
    if kind == "auto":
        return "text" if getattr(backbone, "has_text", False) else "linear"
    if kind == "text" and not getattr(backbone, "has_text", False):
        raise ValueError(f"head 'text' needs a backbone with a text tower; {backbone.name!r} has none (use 'linear')")
    return kind


class ClassHead(nn.Module):
    """Linear or text-initialised cosine classifier on image features (see the module docstring)."""

    def __init__(
        self,
        backbone,
        classes: list[str],
        kind: str = "auto",
        *,
        templates=DEFAULT_TEMPLATES,
        trainable: bool = True,
        logit_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.kind = resolve_head_kind(kind, backbone)
        n, d = len(classes), int(backbone.embed_dim)
        if self.kind == "linear":
            self.linear = nn.Linear(d, n)
        else:
            w = class_text_features(backbone, classes, templates)
            if trainable:
                self.weight = nn.Parameter(w)
            else:
                self.register_buffer("weight", w)
            scale = logit_scale
            if scale is None:
                model_scale = getattr(getattr(backbone, "model", None), "logit_scale", None)
                scale = float(model_scale.exp()) if model_scale is not None and not backbone.random_weights else DEFAULT_LOGIT_SCALE
            self.logit_scale = float(scale)
        self.requires_grad_(trainable)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return self.linear(features)
        f = F.normalize(features.float(), dim=-1)
        return self.logit_scale * f @ F.normalize(self.weight, dim=-1).t()
