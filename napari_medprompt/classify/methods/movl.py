"""MoVL: a pixel-space visual prompt and a linear probe trained jointly on a frozen backbone.

The prompt is Bahng et al.'s padding frame (:class:`~.visual_prompt.PadPrompter`, width ``pad``,
default 30 px at 224 px); the linear probe reads the frozen encoder's features of the prompted image.
Training loss (MoVL's exact discrepancy formula is not published; this is the form used here):

    L = CE(W f(x + p) + b, y) + discrepancy_weight * mean_i [1 - cos(f(x_i + p), f(x_i))]

with ``f`` the frozen encoder (``encode_image``) and ``f(x)`` computed without gradients. The
discrepancy term is the per-image cosine distance between the features of the prompted and the plain
image: it keeps the prompt from pushing the features away from what the pretrained encoder sees
(MoVL's motivation: the prompt adapts, the pretrained representation is preserved, which is where its
out-of-distribution robustness comes from). A per-image cosine was chosen over a batch-level
statistic (e.g. an MMD between the two feature batches) because few-shot batches are small (a
handful of images), where a batch MMD is noisy, and because it is scale-free, so the same weight
works on CLIP (unnormalised projection output) and ResNet (post-ReLU pooled) features.
``discrepancy_weight`` defaults to 0.1. The prompt starts at zero (``init_std=0``), so training starts
from the plain linear probe with a discrepancy of 0. Works on CLIP ViTs and ResNets.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from napari_medprompt.classify.methods.base import AdapterMethod
from napari_medprompt.classify.methods.visual_prompt import PadPrompter, default_pad


class MoVL(AdapterMethod):
    name = "movl"

    def __init__(self, backbone, classes, pad: int | None = None, discrepancy_weight: float = 0.1, init_std: float = 0.0, **config):
        pad = default_pad(backbone.image_size) if pad is None else int(pad)
        if float(discrepancy_weight) < 0:
            raise ValueError(f"{self.name}: discrepancy_weight must be >= 0, got {discrepancy_weight}")
        super().__init__(
            backbone, classes, pad=pad, discrepancy_weight=float(discrepancy_weight), init_std=float(init_std), **config
        )
        self.discrepancy_weight = float(discrepancy_weight)
        self.prompter = PadPrompter(backbone.image_size, pad, init_std)
        self.classifier = nn.Linear(int(backbone.embed_dim), self.n_classes)
        self.last_terms: dict[str, float] = {}

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.backbone.encode_image(self.prompter(images)))

    def discrepancy(self, prompted: torch.Tensor, plain: torch.Tensor) -> torch.Tensor:
        return (1.0 - F.cosine_similarity(prompted.float(), plain.float(), dim=-1)).mean()

    def training_loss(self, images, masks, targets):
        prompted = self.backbone.encode_image(self.prompter(images))
        logits = self.classifier(prompted)
        ce = F.cross_entropy(logits, targets)
        if self.discrepancy_weight == 0:
            self.last_terms = {"ce": float(ce.detach()), "discrepancy": float("nan")}
            return ce, logits
        with torch.no_grad():
            plain = self.backbone.encode_image(images)
        disc = self.discrepancy(prompted, plain)
        self.last_terms = {"ce": float(ce.detach()), "discrepancy": float(disc.detach())}
        return ce + self.discrepancy_weight * disc, logits
