"""Class text embeddings shared by the CLIP methods that classify with text (zero-shot, Tip-Adapter)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

DEFAULT_TEMPLATES = (
    "a radiology image of {}.",
    "a medical image showing {}.",
    "a scan with {}.",
)


def require_text(method_name: str, backbone) -> None:
    if not getattr(backbone, "has_text", False):
        raise ValueError(
            f"method {method_name!r} classifies with CLIP text prompts, but backbone {backbone.name!r} has no "
            "text tower; choose a CLIP backbone (e.g. ViT-B-16) or a method without text (linear-probe)"
        )


@torch.no_grad()
def class_text_features(backbone, classes, templates=DEFAULT_TEMPLATES, class_prompts=None) -> torch.Tensor:
    """(C, D) unit vectors: each class's prompts ("a radiology image of {}") embedded and averaged.

    ``class_prompts`` optionally maps a class name to its own list of phrases (used instead of the
    class name inside the templates)."""
    out = []
    for c in classes:
        phrases = (class_prompts or {}).get(c) or [c]
        texts = [t.format(p) for t in templates for p in phrases]
        emb = F.normalize(backbone.encode_text(texts).float(), dim=-1).mean(0)
        out.append(F.normalize(emb, dim=-1))
    return torch.stack(out)
