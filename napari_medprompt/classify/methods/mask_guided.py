"""Mask-guided CLIP after MedFocusCLIP (Arora & Namboodiri, ICASSP 2025, arXiv:2501.03839).

**What the paper says** (sources reachable for this project: the abstract, the authors' project
README at github.com/AADYA-ARORA/MedFocusClip, which has no code, and a published summary of the
method section; the full text and code were not available): the SAM2 mask is a visual prompt that
guides CLIP's visual encoder to the region of interest by *pixel-wise attention* (the title); the
encoder sees the *segmented image*, which keeps the region's texture and colour (the README's
ablation: a binary mask instead of the segmented image loses accuracy); a *multimodal fusion module*
combines the class text embeddings with the ROI-aware image features; training minimises
``L = lambda * L_c + (1 - lambda) * L_e`` (classification and image-text alignment).

**What runs here by default** (``guidance="segment"``, ``head="fusion"`` on CLIP):

1. Pixel-wise attention on the input: ``x' = m * x + (1 - m) * (outside * x + (1 - outside) * black)``
   with ``m`` the mask in [0, 1] and ``outside`` the fraction of the image kept outside the mask
   (default 0: the segmented image, the background turned black). It is applied in the backbone's
   normalised space in the exactly equivalent form (black = ``-mean / std``). An image whose mask is
   empty is left unchanged (no region to attend to).
2. The frozen CLIP image encoder on ``x'`` gives the ROI-aware feature ``f``.
3. Fusion (:class:`FusionHead`, this implementation's choice, the paper's module is not published):
   ``a = s * cos(f, t_c)`` are the image-text alignment logits against the class text embeddings
   ``t_c`` (initialised from the class-name prompts, trainable); the text context
   ``t* = softmax(a) @ T`` is fused with the image feature, ``z = [std(f), t*]`` (``std``: per-dimension
   standardisation fitted on the training features, as for the linear probe), and a linear layer on
   ``z`` gives the class logits.
4. Loss ``L = loss_weight * CE(class logits, y) + (1 - loss_weight) * CE(a, y)`` (the paper's form
   with ``L_c`` = classification cross-entropy and ``L_e`` = image-to-text alignment cross-entropy
   over the class prompts, CLIP's contrastive loss restricted to the classes); ``loss_weight``
   (lambda) defaults to 0.5: the paper's value is not in the reachable text.

Because the mask acts before the frozen encoder and only the head trains, the default trains on
cached features: ``encode_for_cache(images, masks)`` runs the encoder once per image.

**Named variants / options** (all honest about what they are):

- ``guidance="overlay"``: the earlier form, a colour tint of the region (``colour``, ``alpha``):
  ``rgb' = rgb * (1 - alpha*m) + alpha*m*colour``; the rest of the image untouched. With
  ``head="text"`` and ``loss_weight=1`` this is the old "overlay + cross-entropy" variant (not the
  paper's method).
- ``attention_bias`` (ViT only, off by default: an extension, not described in the reachable text):
  an additive bias on the class token's attention logits towards the patch tokens in the last
  ``bias_layers`` blocks, from the mask pooled to the patch grid (fraction ``m_j`` of patch *j*):
  ``"restrict"`` = ``log(max(m_j, 1e-4))`` (patches outside the mask effectively excluded),
  ``"upweight"`` = ``bias_strength * m_j``. With a bias (or ``n_prompts`` > 0, VPT-shallow prompt
  tokens) the encoder runs every step (no cached features).
- ``head="text"``: a cosine classifier initialised from the class text embeddings (CE only);
  ``head="linear"``: a linear head (CE only; the default on backbones without a text tower).

Masks are required (:class:`MissingMaskError` otherwise).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from napari_medprompt.classify.methods._text import DEFAULT_TEMPLATES, class_text_features
from napari_medprompt.classify.methods.base import AdapterMethod
from napari_medprompt.classify.methods.class_head import DEFAULT_LOGIT_SCALE, ClassHead
from napari_medprompt.classify.methods.linear_probe import FeatureScaler
from napari_medprompt.classify.methods.vpt import prompt_init, require_vit, run_prompted_vit

BIAS_MODES = ("none", "restrict", "upweight")
GUIDANCE = ("segment", "overlay", "none")
HEADS = ("auto", "fusion", "text", "linear")
RESTRICT_FLOOR = 1e-4


def overlay_normalised(images, masks, colour, alpha, mean, std) -> torch.Tensor:
    """Tint the masked region of normalised ``images`` (B, 3, S, S) in ``colour`` at opacity ``alpha``."""
    dev, dt = images.device, images.dtype
    colour = torch.as_tensor(colour, device=dev, dtype=dt).view(1, 3, 1, 1)
    mean = torch.as_tensor(mean, device=dev, dtype=dt).view(1, 3, 1, 1)
    std = torch.as_tensor(std, device=dev, dtype=dt).view(1, 3, 1, 1)
    a = float(alpha) * masks.to(dt).clamp(0, 1)
    return images * (1 - a) + a * (colour - mean) / std


def segment_normalised(images, masks, outside, mean, std) -> torch.Tensor:
    """Pixel-wise attention: keep the masked region, fade the rest to black (``outside`` of it kept).

    Equivalent to ``rgb * w`` on the unnormalised image with ``w = m + (1 - m) * outside``; images
    whose mask is empty are returned unchanged."""
    dev, dt = images.device, images.dtype
    mean = torch.as_tensor(mean, device=dev, dtype=dt).view(1, 3, 1, 1)
    std = torch.as_tensor(std, device=dev, dtype=dt).view(1, 3, 1, 1)
    m = masks.to(dt).clamp(0, 1)
    w = m + (1 - m) * float(outside)
    w = torch.where(m.flatten(1).amax(1).view(-1, 1, 1, 1) > 0, w, torch.ones_like(w))
    black = -mean / std
    return black + w * (images - black)


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


class FusionHead(nn.Module):
    """Image-text fusion classifier with an alignment branch (see the module docstring, step 3)."""

    def __init__(self, backbone, classes, templates=DEFAULT_TEMPLATES, logit_scale: float | None = None) -> None:
        super().__init__()
        self.text = nn.Parameter(class_text_features(backbone, classes, templates).float())
        d, c = self.text.shape[1], len(classes)
        if logit_scale is None:
            model_scale = getattr(getattr(backbone, "model", None), "logit_scale", None)
            use_model = model_scale is not None and not backbone.random_weights
            logit_scale = float(model_scale.exp()) if use_model else DEFAULT_LOGIT_SCALE
        self.logit_scale = float(logit_scale)
        self.scaler = FeatureScaler(d)  # standardises the image feature for the class branch (fitted in prepare)
        self.fc = nn.Linear(2 * d, c)

    def both(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits, image-text alignment logits), each (B, C)."""
        f = F.normalize(features.float(), dim=-1)
        t = F.normalize(self.text, dim=-1)
        align = self.logit_scale * f @ t.t()
        ctx = align.softmax(-1) @ t
        return self.fc(torch.cat([self.scaler(features), ctx], dim=-1)), align

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.both(features)[0]


class MaskGuidedClip(AdapterMethod):
    name = "mask-guided-clip"
    uses_masks = True

    def __init__(
        self,
        backbone,
        classes,
        guidance: str = "segment",
        outside: float = 0.0,
        colour=(1.0, 0.0, 0.0),
        alpha: float = 0.5,
        attention_bias: str = "none",
        bias_strength: float = 2.0,
        bias_layers: int | None = None,
        n_prompts: int = 0,
        head: str = "auto",
        loss_weight: float = 0.5,
        templates=DEFAULT_TEMPLATES,
        **config,
    ):
        if guidance == "none" and attention_bias == "none":
            raise ValueError(f"{self.name}: with guidance 'none', choose an attention_bias, or the mask would be unused")
        if attention_bias != "none" or int(n_prompts) > 0:
            require_vit(backbone, f"{self.name} (attention_bias / prompts)")
        has_text = bool(getattr(backbone, "has_text", False))
        if head == "auto":
            head = "fusion" if has_text else "linear"
        if head in ("fusion", "text") and not has_text:
            raise ValueError(f"{self.name}: head {head!r} needs a backbone with a text tower; {backbone.name!r} has none (use 'linear')")
        super().__init__(
            backbone, classes, guidance=guidance, outside=float(outside), colour=[float(c) for c in colour],
            alpha=float(alpha), attention_bias=attention_bias, bias_strength=float(bias_strength),
            bias_layers=bias_layers, n_prompts=int(n_prompts), head=head, loss_weight=float(loss_weight),
            templates=list(templates), **config,
        )
        self.prompts = nn.Parameter(prompt_init(1, int(n_prompts), backbone)) if int(n_prompts) > 0 else None
        if head == "fusion":
            self.classifier = FusionHead(backbone, self.classes, templates)
        else:
            self.classifier = ClassHead(backbone, self.classes, head, templates=templates)
        # the mask acts before the frozen encoder and only the head trains: train on cached features
        self.cached_features = attention_bias == "none" and self.prompts is None

    # --- the mask, before and inside the encoder ---------------------------------------------------
    def _check(self, images: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        masks = self.require_masks(masks)
        if masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"{self.name}: masks {tuple(masks.shape)} do not match images {tuple(images.shape)}")
        return masks

    def guided_images(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The image the encoder sees: segmented (pixel-wise attention), tinted, or unchanged."""
        g, bb = self.config["guidance"], self.backbone
        if g == "segment":
            return segment_normalised(images, masks, self.config["outside"], bb.mean, bb.std)
        if g == "overlay":
            return overlay_normalised(images, masks, self.config["colour"], self.config["alpha"], bb.mean, bb.std)
        return images

    def encode_for_cache(self, images: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        """Frozen-encoder features of the mask-guided images (what the head trains on)."""
        masks = self._check(images, masks)
        if not self.cached_features:
            return self.features(images, masks)
        return self.backbone.encode_image(self.guided_images(images, masks))

    def features(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        masks = self._check(images, masks)
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

    # --- head and loss -------------------------------------------------------------------------------
    def prepare(self, features, targets) -> None:
        if isinstance(self.classifier, FusionHead) and features is not None:
            self.classifier.scaler.fit(features)

    def forward_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.features(images, masks))

    def loss_from_features(self, features: torch.Tensor, targets: torch.Tensor):
        """``lambda * CE(class logits) + (1 - lambda) * CE(alignment logits)`` (fusion head), else CE."""
        if not isinstance(self.classifier, FusionHead):
            logits = self.classifier(features)
            return F.cross_entropy(logits, targets), logits
        logits, align = self.classifier.both(features)
        lam = self.config["loss_weight"]
        loss = lam * F.cross_entropy(logits, targets) + (1 - lam) * F.cross_entropy(align, targets)
        return loss, logits

    def training_loss(self, images, masks, targets):
        return self.loss_from_features(self.features(images, masks), targets)

    def training_loss_from_features(self, features, targets):
        return self.loss_from_features(features, targets)
