"""Mask-guided CLIP (MedFocusCLIP, ICASSP 2025): the segmentation mask steers the frozen encoder to the region.

Two mechanisms, combinable:

1. **Colour overlay** (the paper's form, on by default): the masked region is tinted with ``colour``
   (RGB in [0, 1], default red) at opacity ``alpha`` on the image fed to CLIP:
   ``rgb' = rgb * (1 - alpha*m) + alpha*m*colour``. Images arrive normalised with the backbone's
   mean/std, so the overlay is applied in the normalised space in the exactly equivalent form
   ``x' = x * (1 - alpha*m) + alpha*m * (colour - mean) / std`` (no clipping, so nothing is lost).
2. **Attention bias** (``attention_bias``, ViT backbones only): the mask is average-pooled to the
   patch grid (fraction ``m_j`` of patch *j* inside the mask) and an additive bias is put on the
   **class token's** attention logits towards the patch tokens (the class token's row only; the other
   tokens attend as usual) in the last ``bias_layers`` blocks (all by default):

   - ``"restrict"``: bias ``log(max(m_j, 1e-4))``: patches outside the mask get -9.2 (their weight
     is scaled by 1e-4, i.e. effectively excluded), partly covered patches are down-weighted by their
     coverage, patches inside are untouched;
   - ``"upweight"``: bias ``bias_strength * m_j`` (default 2.0, i.e. up to e^2 = 7.4x more weight
     on patches inside the mask), the rest of the image stays visible.

   An image whose mask is empty gets no bias. With a bias (or ``n_prompts`` > 0) the encoder runs
   through the token API (``tokens`` / ``run_block(attn_bias=...)`` / ``head``).

On top of the frozen encoder trains a light head: linear, or (``head="text"``, the default on CLIP)
a cosine classifier initialised from the class-name text embeddings; optionally ``n_prompts``
VPT-shallow prompt tokens (ViT only). Masks are required (:class:`MissingMaskError` otherwise).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from napari_medprompt.classify.methods.base import AdapterMethod
from napari_medprompt.classify.methods.class_head import DEFAULT_TEMPLATES, ClassHead
from napari_medprompt.classify.methods.vpt import prompt_init, require_vit, run_prompted_vit

BIAS_MODES = ("none", "restrict", "upweight")
RESTRICT_FLOOR = 1e-4


def overlay_normalised(images, masks, colour, alpha, mean, std) -> torch.Tensor:
    """Tint the masked region of normalised ``images`` (B, 3, S, S) in ``colour`` at opacity ``alpha``."""
    dev, dt = images.device, images.dtype
    colour = torch.as_tensor(colour, device=dev, dtype=dt).view(1, 3, 1, 1)
    mean = torch.as_tensor(mean, device=dev, dtype=dt).view(1, 3, 1, 1)
    std = torch.as_tensor(std, device=dev, dtype=dt).view(1, 3, 1, 1)
    a = float(alpha) * masks.to(dt).clamp(0, 1)
    return images * (1 - a) + a * (colour - mean) / std


def class_token_bias(masks, grid: int, n_heads: int, n_prompts: int, mode: str, strength: float) -> torch.Tensor:
    """Additive attention bias (B, heads, T, T), T = 1 + n_prompts + grid**2, on the class token's row."""
    frac = F.adaptive_avg_pool2d(masks.float(), grid).flatten(1)  # (B, N) fraction of each patch in the mask
    if mode == "restrict":
        row = torch.log(frac.clamp_min(RESTRICT_FLOOR))
    elif mode == "upweight":
        row = float(strength) * frac
    else:
        raise ValueError(f"unknown attention_bias {mode!r}; choose one of {', '.join(BIAS_MODES)}")
    row = row * (frac.sum(1, keepdim=True) > 0)  # an empty mask gets no bias
    b, n = frac.shape
    t = 1 + n_prompts + n
    bias = frac.new_zeros(b, 1, t, t)
    bias[:, 0, 0, 1 + n_prompts :] = row
    return bias.expand(b, n_heads, t, t)


class MaskGuidedClip(AdapterMethod):
    name = "mask-guided-clip"
    uses_masks = True

    def __init__(
        self,
        backbone,
        classes,
        colour=(1.0, 0.0, 0.0),
        alpha: float = 0.5,
        overlay: bool = True,
        attention_bias: str = "none",
        bias_strength: float = 2.0,
        bias_layers: int | None = None,
        n_prompts: int = 0,
        head: str = "auto",
        templates=DEFAULT_TEMPLATES,
        **config,
    ):
        if attention_bias not in BIAS_MODES:
            raise ValueError(f"{self.name}: unknown attention_bias {attention_bias!r}; choose one of {', '.join(BIAS_MODES)}")
        if not overlay and attention_bias == "none":
            raise ValueError(f"{self.name}: with overlay off, choose an attention_bias, or the mask would be unused")
        if attention_bias != "none" or int(n_prompts) > 0:
            require_vit(backbone, f"{self.name} (attention_bias / prompts)")
        colour = tuple(float(c) for c in colour)
        if len(colour) != 3 or not all(0.0 <= c <= 1.0 for c in colour) or not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"{self.name}: colour must be 3 values in [0, 1] and alpha in [0, 1]; got {colour}, {alpha}")
        super().__init__(
            backbone, classes, colour=list(colour), alpha=float(alpha), overlay=bool(overlay),
            attention_bias=attention_bias, bias_strength=float(bias_strength), bias_layers=bias_layers,
            n_prompts=int(n_prompts), head=head, templates=list(templates), **config,
        )
        self.prompts = nn.Parameter(prompt_init(1, int(n_prompts), backbone)) if int(n_prompts) > 0 else None
        self.classifier = ClassHead(backbone, self.classes, head, templates=templates)
        self.config["head"] = self.classifier.kind

    def guided_images(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        if not self.config["overlay"]:
            return images
        bb = self.backbone
        return overlay_normalised(images, masks, self.config["colour"], self.config["alpha"], bb.mean, bb.std)

    def features(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        masks = self.require_masks(masks)
        if masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"{self.name}: masks {tuple(masks.shape)} do not match images {tuple(images.shape)}")
        x = self.guided_images(images, masks)
        mode = self.config["attention_bias"]
        if mode == "none" and self.prompts is None:
            return self.backbone.encode_image(x)
        bb = self.backbone
        n = 0 if self.prompts is None else self.prompts.shape[1]
        bias = None
        if mode != "none":
            bias = class_token_bias(masks, bb.grid_size, bb.num_heads, n, mode, self.config["bias_strength"])
        return run_prompted_vit(bb, bb.tokens(x), self.prompts, attn_bias=bias, bias_layers=self.config["bias_layers"])

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.features(images, masks))

