"""SegPrompt (Wang et al., MIDL 2023, arXiv:2303.08303): the segmentation map, tokenised, prompts a frozen ViT.

**What the paper says** (its abstract, the text reachable for this project; the full text and code
were not available): the segmentation map is turned into *segmentation tokens* that, together with
the image tokens, form the token sequence of the pretrained ViT, so that "image and segmentation
tokens interact with each other" through the transformer's attention; the segmentation map acts as
a prompt, so only a few parameters train (far fewer than fine-tuning).

**Default here** (``mask_fusion="concat"``): the mask (B, 1, S, S) is tokenised by a patch embedding
aligned with the image patches, ``Conv2d(1, width, kernel=patch_size, stride=patch_size)``, and the
N segmentation tokens get **their own learnable position embeddings** (initialised from the
backbone's patch position embeddings, so token *j* starts at the place of image patch *j*) and the
backbone's frozen pre-norm (the same embedding path as the image tokens). They are **concatenated**
to the sequence as a stream of their own::

    [class, prompt_1..prompt_n, seg_1..seg_N, patch_1..patch_N]

In every frozen block the segmentation and image tokens attend to each other (the interaction); the
class token and the prompts read the image stream, not the segmentation tokens directly (an
attention mask; this implementation's choice: with it the class token summarises mask-aware image
tokens, without it the tiny test ViT did not learn the synthetic task, held-out accuracy 0.53-0.63
vs 0.78). The tokenizer starts at zero, so the mask's content enters as training learns to read it.
The segmentation outputs (and prompts) are dropped before the backbone's ``head``, which then sees
the usual ``[class, patches]`` layout; the last N tokens are always the image patches. The sequence
grows from 1 + N to 1 + n + 2N tokens (attention cost about 4x); ``seg_grid`` (tokens per side)
uses fewer, coarser segmentation tokens. ``n_prompts`` learnable prompt tokens (VPT-shallow, 0
disables them) are an addition of this project.

**Variant** ``mask_fusion="add"`` (the project's earlier form, not the paper's): the mask tokens are
*added* to the patch tokens (``e_j + T(m)_j``, tokenizer initialised at zero so training starts at
the frozen backbone); no extra tokens, no own position embeddings.

Only the tokenizer, the segmentation position embeddings, the prompts and the head train (the head
is linear or, on CLIP with ``head="auto"``, a text-initialised cosine classifier); the backbone stays
frozen; masks are required; ViT backbones only.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from napari_medprompt.classify.methods.base import AdapterMethod
from napari_medprompt.classify.methods.class_head import DEFAULT_TEMPLATES, ClassHead
from napari_medprompt.classify.methods.vpt import prompt_init, require_vit

FUSIONS = ("concat", "add")


@torch.no_grad()
def patch_position_embeddings(backbone) -> torch.Tensor:
    """(N, width) the backbone's position embeddings of the N image patches (class token excluded)."""
    visual = getattr(getattr(backbone, "model", None), "visual", None)
    pos = getattr(visual, "positional_embedding", None)
    if pos is None:  # timm trunk
        trunk = getattr(visual, "trunk", None)
        pos = getattr(trunk, "pos_embed", None)
        if pos is not None:
            pos = pos[0]
    n = backbone.grid_size**2
    if pos is None or pos.shape[-2] < n:
        return torch.zeros(n, backbone.width)
    return pos[-n:].detach().float().clone()


def pre_norm(backbone) -> nn.Module:
    """The norm the backbone applies to its embedded tokens before the first block (or identity)."""
    visual = getattr(getattr(backbone, "model", None), "visual", None)
    norm = getattr(visual, "ln_pre", None)
    if norm is None:
        norm = getattr(getattr(visual, "trunk", None), "norm_pre", None)
    return norm if norm is not None else nn.Identity()


class SegPrompt(AdapterMethod):
    name = "segprompt"
    uses_masks = True

    def __init__(self, backbone, classes, mask_fusion: str = "concat", seg_grid: int | None = None, n_prompts: int = 4,
                 head: str = "auto", templates=DEFAULT_TEMPLATES, **config):
        require_vit(backbone, self.name)
        g = backbone.grid_size if seg_grid is None else int(seg_grid)
        if mask_fusion == "add" and g != backbone.grid_size:
            raise ValueError(f"{self.name}: seg_grid applies to mask_fusion='concat' (the additive form has one token per patch)")
        if backbone.image_size % g:
            raise ValueError(f"{self.name}: seg_grid {g} does not divide the input size {backbone.image_size}")
        super().__init__(backbone, classes, mask_fusion=mask_fusion, seg_grid=seg_grid, n_prompts=int(n_prompts),
                         head=head, templates=list(templates), **config)
        k, w = backbone.image_size // g, int(backbone.width)
        self.mask_tokenizer = nn.Conv2d(1, w, kernel_size=k, stride=k)
        nn.init.zeros_(self.mask_tokenizer.weight)  # the mask's content enters as training learns to read it
        nn.init.zeros_(self.mask_tokenizer.bias)
        if mask_fusion == "add":
            self.seg_pos_embed = None
        else:
            pos = patch_position_embeddings(backbone)  # (N, width) on the patch grid
            if g != backbone.grid_size:  # pooled to the segmentation grid
                n = backbone.grid_size
                pos = F.adaptive_avg_pool2d(pos.t().reshape(1, w, n, n), g).reshape(w, g * g).t()
            self.seg_pos_embed = nn.Parameter(pos.contiguous())
        self.prompts = nn.Parameter(prompt_init(1, int(n_prompts), backbone)) if int(n_prompts) > 0 else None
        self.classifier = ClassHead(backbone, self.classes, head, templates=templates)
        self.config["head"] = self.classifier.kind

    def mask_tokens(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, N, width) tokens of the mask, one per image patch (row-major like the patch tokens)."""
        if self.seg_pos_embed is None:  # additive variant: the mask as coverage fractions (its earlier form)
            area = float(self.mask_tokenizer.kernel_size[0] * self.mask_tokenizer.kernel_size[1])
            return self.mask_tokenizer(masks.float() / area).flatten(2).transpose(1, 2)
        # the same path as the image tokens: patch embedding + position embedding + the backbone's
        # (frozen) pre-norm, so both streams enter the blocks at the same scale
        t = self.mask_tokenizer(masks.float()).flatten(2).transpose(1, 2)
        return pre_norm(self.backbone)(t + self.seg_pos_embed.to(t.dtype))

    def sequence(self, images: torch.Tensor, masks: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        """The token sequence entering the first block and the number of extra tokens after the class token."""
        masks = self.require_masks(masks)
        if masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"{self.name}: masks {tuple(masks.shape)} do not match images {tuple(images.shape)}")
        x = self.backbone.tokens(images)
        mt = self.mask_tokens(masks).to(x.dtype)
        b = x.shape[0]
        if self.seg_pos_embed is None:  # additive variant
            x = torch.cat([x[:, :1], x[:, 1:] + mt], dim=1)
            extra = []
        else:
            extra = [mt]
        if self.prompts is not None:
            extra = [self.prompts[0].to(x.dtype).expand(b, -1, -1)] + extra
        n_extra = sum(e.shape[1] for e in extra)
        return torch.cat([x[:, :1], *extra, x[:, 1:]], dim=1), n_extra

    def attention_bias(self, x: torch.Tensor, n_extra: int) -> torch.Tensor | None:
        """(B, heads, T, T): the class token and the prompts do not read the segmentation tokens directly;
        segmentation and image tokens attend to each other (the interaction), and the class token reads
        the mask-aware image tokens."""
        if self.seg_pos_embed is None:
            return None
        t, n_seg = x.shape[1], self.seg_pos_embed.shape[0]
        first = 1 + n_extra - n_seg
        bias = x.new_zeros(1, 1, t, t)
        bias[:, :, :first, first : first + n_seg] = -1e4
        return bias.expand(x.shape[0], self.backbone.num_heads, t, t)

    def features(self, images: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        x, n_extra = self.sequence(images, masks)
        bias = self.attention_bias(x, n_extra)
        for blk in self.backbone.blocks():
            x = self.backbone.run_block(blk, x, attn_bias=bias)
        if n_extra:
            x = torch.cat([x[:, :1], x[:, 1 + n_extra :]], dim=1)
        return self.backbone.head(x)

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.features(images, masks))
