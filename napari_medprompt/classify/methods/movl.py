"""MoVL-style training (after Tian et al. 2024, "MoVL: Exploring Fusion Strategies for the
Domain-Adaptive Application of Pretrained Models in Medical Imaging Tasks", arXiv:2405.07411):
a pixel-space visual prompt and a linear probe trained jointly on a frozen backbone.

**What the paper says** (its abstract and a published summary; the full text and code were not
reachable for this project): visual prompting (VP) fills the gap between medical inputs and a
natural-image pretrained model, a linear probe (LP) reads the features, and both train jointly with
a loss "containing categorisation loss and discrepancy loss, which describe the variance of
prompted and plain images" (a term that keeps the original image's information); the summary also
mentions a dedicated initialisation. The discrepancy's exact formula, its weight and the prompt
initialisation are in the full text, which could not be checked here.

**This project's form** (named ``movl`` for the method family; the three points below are this
project's choices, NOT verified against the paper's text):

    L = CE(W f(x + p) + b, y) + discrepancy_weight * mean_i [1 - cos(f(x_i + p), f(x_i))]

- discrepancy: the per-image cosine distance between the frozen encoder's features of the prompted
  and the plain image (``f(x)`` without gradients). Per-image rather than a batch statistic (e.g.
  an MMD) because few-shot batches are small; scale-free, so one weight works for CLIP and ResNet.
- ``discrepancy_weight`` 0.1.
- the prompt (Bahng et al.'s padding frame, :class:`~.visual_prompt.PadPrompter`, width ``pad``,
  default 30 px at 224 px) starts at zero (``init_std=0``), so training starts from the plain linear
  probe with a discrepancy of 0; ``init_std=1`` gives Bahng et al.'s N(0, 1) frame.

Works on CLIP ViTs and ResNets (only ``encode_image`` is used).
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
