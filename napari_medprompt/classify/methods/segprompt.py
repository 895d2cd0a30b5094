"""SegPrompt (MIDL 2023): the segmentation mask, tokenised, prompts a frozen ViT.

The mask (B, 1, S, S) is tokenised by a small patch embedding aligned with the image patches: a
``Conv2d(1, width, kernel=patch_size, stride=patch_size)``, so mask token *j* describes exactly the
image patch *j*. Interaction chosen here: **the mask tokens are added to the image patch tokens**
(after the backbone's patch + positional embedding and ``ln_pre``), i.e. patch token *j* becomes
``e_j + T(m)_j``, and the frozen blocks then mix this mask-aware content into every token through
their own attention. Reasons: the 1:1 spatial alignment of mask and image patches is kept without
having to learn positions for extra tokens, the sequence length (hence the cost of every block) does
not grow with the N mask tokens, and with the tokenizer initialised at zero the model starts exactly at
the frozen backbone (plus prompts). In addition ``n_prompts`` learnable prompt tokens (VPT-shallow,
inserted after the class token; 0 disables them) give the class token free slots to gather the
evidence. The head is linear or, on CLIP (``head="auto"``), a text-initialised cosine classifier.

Only the mask tokenizer, the prompts and the head train; masks are required; ViT backbones only.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_medprompt.classify.methods.base import AdapterMethod
from napari_medprompt.classify.methods.class_head import DEFAULT_TEMPLATES, ClassHead
from napari_medprompt.classify.methods.vpt import prompt_init, require_vit, run_prompted_vit


class SegPrompt(AdapterMethod):
    name = "segprompt"
    uses_masks = True

    def __init__(self, backbone, classes, n_prompts: int = 4, head: str = "auto", templates=DEFAULT_TEMPLATES, **config):
        require_vit(backbone, self.name)
        if int(n_prompts) < 0:
            raise ValueError(f"{self.name}: n_prompts must be >= 0, got {n_prompts}")
        super().__init__(backbone, classes, n_prompts=int(n_prompts), head=head, templates=list(templates), **config)
        p, w = int(backbone.patch_size), int(backbone.width)
        self.mask_tokenizer = nn.Conv2d(1, w, kernel_size=p, stride=p)
        nn.init.zeros_(self.mask_tokenizer.weight)
        nn.init.zeros_(self.mask_tokenizer.bias)
        self.prompts = nn.Parameter(prompt_init(1, int(n_prompts), backbone)) if int(n_prompts) > 0 else None
        self.classifier = ClassHead(backbone, self.classes, head, templates=templates)
        self.config["head"] = self.classifier.kind

    def mask_tokens(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, N, width) tokens of the mask, one per image patch (row-major like the patch tokens)."""
        area = float(self.mask_tokenizer.kernel_size[0] * self.mask_tokenizer.kernel_size[1])
        return self.mask_tokenizer(masks.float() / area).flatten(2).transpose(1, 2)

    def features(self, images: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        masks = self.require_masks(masks)
        if masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"{self.name}: masks {tuple(masks.shape)} do not match images {tuple(images.shape)}")
        x = self.backbone.tokens(images)
        mt = self.mask_tokens(masks).to(x.dtype)
        x = torch.cat([x[:, :1], x[:, 1:] + mt], dim=1)
        return run_prompted_vit(self.backbone, x, self.prompts)

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.features(images, masks))
