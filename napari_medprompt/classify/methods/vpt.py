"""Visual Prompt Tuning (Jia et al., ECCV 2022): learnable prompt tokens inside a frozen ViT.

Tokens are laid out as ``[class, prompt_1..prompt_n, patch_1..patch_N]``: the prompts are inserted
right after the class token, after the backbone's patch embedding (+ positional embedding and
``ln_pre``), so the patch tokens keep their positions and the last N tokens are always the patches.

- ``vpt-shallow``: one set of ``n_prompts`` tokens inserted at the input; they flow through all
  blocks like any other token.
- ``vpt-deep``: a fresh set per block; before block *i* the prompt outputs of block *i-1* are replaced
  by block *i*'s own prompts (VPT-deep).

The prompt outputs are dropped before the backbone's ``head`` (pooling + projection), which then
sees the same token layout as without prompts. Prompts are initialised uniform(-v, v) with
v = sqrt(6 / (3 * patch_size**2 + width)) (the paper's Xavier-style init). The classifier on the
``embed_dim`` features is a linear head, or (``head="text"``, the default on CLIP backbones) a
cosine classifier initialised from the class-name text embeddings (:mod:`.class_head`).

Only the prompts and the head train; ViT backbones only.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from napari_medprompt.classify.methods.base import AdapterMethod
from napari_medprompt.classify.methods.class_head import DEFAULT_TEMPLATES, ClassHead


def require_vit(backbone, method: str) -> None:
    if getattr(backbone, "kind", "") != "vit":
        raise ValueError(
            f"method {method!r} works inside a ViT; backbone {backbone.name!r} is a {backbone.kind!r} "
            "(choose a CLIP ViT backbone)"
        )


def prompt_init(n_layers: int, n_prompts: int, backbone) -> torch.Tensor:
    v = math.sqrt(6.0 / float(3 * backbone.patch_size**2 + backbone.width))
    return torch.empty(n_layers, n_prompts, backbone.width).uniform_(-v, v)


def run_prompted_vit(
    backbone,
    x: torch.Tensor,
    prompts: torch.Tensor | None = None,
    *,
    deep: bool = False,
    attn_bias: torch.Tensor | None = None,
    bias_layers: int | None = None,
) -> torch.Tensor:
    """Run ``tokens`` ``x`` (B, 1 + N, width) through the backbone's blocks with prompt tokens.

    ``prompts`` is (L, n, width): L = 1 inserts them once at the input; with ``deep`` there is one set
    per block, replacing the previous block's prompt outputs. ``attn_bias`` (B, heads, T, T) with
    T = 1 + n + N is added to the attention logits of the last ``bias_layers`` blocks (all when None).
    Returns the backbone's ``head`` features (prompt tokens removed first).
    """
    n = 0 if prompts is None else prompts.shape[1]
    b = x.shape[0]
    if n:
        x = torch.cat([x[:, :1], prompts[0].to(x.dtype).expand(b, -1, -1), x[:, 1:]], dim=1)
    blocks = backbone.blocks()
    first_biased = 0 if bias_layers is None else max(0, len(blocks) - int(bias_layers))
    for i, blk in enumerate(blocks):
        if n and deep and i > 0:
            x = torch.cat([x[:, :1], prompts[i].to(x.dtype).expand(b, -1, -1), x[:, 1 + n :]], dim=1)
        x = backbone.run_block(blk, x, attn_bias=attn_bias if (attn_bias is not None and i >= first_biased) else None)
    if n:
        x = torch.cat([x[:, :1], x[:, 1 + n :]], dim=1)
    return backbone.head(x)


class VPTShallow(AdapterMethod):
    name = "vpt-shallow"
    deep = False

    def __init__(self, backbone, classes, n_prompts: int = 8, head: str = "auto", templates=DEFAULT_TEMPLATES, **config):
        require_vit(backbone, self.name)
        if int(n_prompts) < 1:
            raise ValueError(f"{self.name}: n_prompts must be at least 1, got {n_prompts}")
        super().__init__(backbone, classes, n_prompts=int(n_prompts), head=head, templates=list(templates), **config)
        n_layers = len(backbone.blocks()) if self.deep else 1
        self.prompts = nn.Parameter(prompt_init(n_layers, int(n_prompts), backbone))
        self.classifier = ClassHead(backbone, self.classes, head, templates=templates)
        self.config["head"] = self.classifier.kind

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return run_prompted_vit(self.backbone, self.backbone.tokens(images), self.prompts, deep=self.deep)

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.features(images))


class VPTDeep(VPTShallow):
    name = "vpt-deep"
    deep = True
