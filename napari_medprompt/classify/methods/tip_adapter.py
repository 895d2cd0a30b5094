"""``tip-adapter`` (training-free) and ``tip-adapter-f`` (learnable cache keys), Zhang et al. 2022.

``prepare(features, targets)`` builds the cache from the few-shot training set: keys = L2-normalised
image features (N, D), values = one-hot labels (N, C). For a test feature f (normalised):

    logits = text_weight * logit_scale * f W_text^T  +  alpha * exp(-beta * (1 - f K^T)) V

with W_text the class prompts' text features. ``alpha`` (residual weight, default 1.0) and ``beta``
(sharpness, default 5.5) are configurable; ``text_weight`` (default 1) can be set to 0 to use the cache
alone. ``tip-adapter`` trains nothing; ``tip-adapter-f`` makes the keys a parameter, initialised from
the cache, and fine-tunes them on cached features.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from napari_medprompt.classify.methods._text import DEFAULT_TEMPLATES, class_text_features, require_text
from napari_medprompt.classify.methods.base import AdapterMethod


class TipAdapter(AdapterMethod):
    name = "tip-adapter"
    cached_features = True
    learnable_keys = False

    def __init__(self, backbone, classes, alpha: float = 1.0, beta: float = 5.5, text_weight: float = 1.0,
                 templates=DEFAULT_TEMPLATES, logit_scale: float = 100.0, **config):
        require_text(self.name, backbone)
        templates = [str(t) for t in templates]
        super().__init__(backbone, classes, alpha=float(alpha), beta=float(beta), text_weight=float(text_weight),
                         templates=templates, logit_scale=float(logit_scale), **config)
        self.alpha, self.beta, self.text_weight = float(alpha), float(beta), float(text_weight)
        self.logit_scale = float(logit_scale)
        d = int(backbone.embed_dim)
        self.register_buffer("text_features", class_text_features(backbone, self.classes, templates))
        if self.learnable_keys:
            self.cache_keys = nn.Parameter(torch.zeros(0, d))
        else:
            self.register_buffer("cache_keys", torch.zeros(0, d))
        self.register_buffer("cache_values", torch.zeros(0, self.n_classes))

    @property
    def ready(self) -> bool:
        return self.cache_keys.shape[0] > 0

    @torch.no_grad()
    def prepare(self, features, targets) -> None:
        if features is None or targets is None or len(features) == 0:
            raise ValueError(f"{self.name}: the cache needs at least one labelled training image")
        keys = F.normalize(features.float(), dim=-1).to(self.text_features.device)
        values = F.one_hot(targets.long(), self.n_classes).float().to(keys.device)
        if self.learnable_keys:
            self.cache_keys = nn.Parameter(keys.clone())
        else:
            self.cache_keys = keys
        self.cache_values = values

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the cache's size depends on the training set: take the saved shape before loading
        for name in ("cache_keys", "cache_values"):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                fresh = torch.zeros_like(saved, device=getattr(self, name).device)
                if name == "cache_keys" and self.learnable_keys:
                    self.cache_keys = nn.Parameter(fresh)
                else:
                    setattr(self, name, fresh)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward_features(self, features: torch.Tensor) -> torch.Tensor:
        if not self.ready:
            raise RuntimeError(f"{self.name}: the cache is empty; call prepare(features, labels) (training does)")
        f = F.normalize(features.float(), dim=-1)
        logits = self.text_weight * self.logit_scale * f @ self.text_features.t()
        keys = F.normalize(self.cache_keys, dim=-1) if self.learnable_keys else self.cache_keys
        affinity = f @ keys.t()
        return logits + self.alpha * torch.exp(-self.beta * (1.0 - affinity)) @ self.cache_values

    def forward(self, images, masks=None):
        return self.forward_features(self.backbone.encode_image(images))


class TipAdapterF(TipAdapter):
    name = "tip-adapter-f"
    learnable_keys = True
