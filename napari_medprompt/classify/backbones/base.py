"""The interface every frozen backbone offers to the adapter methods.

Methods that only need features call :meth:`Backbone.encode_image`. Methods that work inside a ViT
(VPT, SegPrompt, attention-biased mask guidance, localization maps) use the token-level API:

    x = bb.tokens(images)                  # (B, 1 + N, width): patch embed + class token + pos + ln_pre
    for blk in bb.blocks():                # each block maps (B, T, width) -> (B, T, width)
        x = bb.run_block(blk, x, attn_bias=None)   # attn_bias: additive float (B, heads, T, T) or (T, T)
    feats = bb.head(x)                      # (B, embed_dim): ln_post on the class token, projection

CNN backbones (ResNet) instead offer ``feature_map(images) -> (B, C, h, w)`` and
``pool(fmap) -> (B, embed_dim)`` so Grad-CAM can hook the last stage.

Every backbone is frozen after construction (``requires_grad_(False)``, ``eval()``); only
``full-finetune`` unfreezes it explicitly. ``random_weights`` is True when no pretrained weights were
loaded, and everything downstream says so.
"""

from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    name: str = ""
    pretrained: str | None = None
    kind: str = "vit"  # "vit" | "cnn"
    embed_dim: int = 0  # size of encode_image's output
    image_size: int = 224
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    random_weights: bool = True
    has_text: bool = False

    # ViT geometry (kind == "vit")
    width: int = 0
    patch_size: int = 0
    num_heads: int = 0

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size if self.patch_size else 0

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} has no text tower")

    # --- ViT token API -------------------------------------------------------------------------
    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} is not a ViT")

    def blocks(self) -> list[nn.Module]:
        raise NotImplementedError(f"{self.name} is not a ViT")

    def run_block(self, block: nn.Module, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} is not a ViT")

    def head(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} is not a ViT")

    # --- CNN API -------------------------------------------------------------------------------
    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} is not a CNN")

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} is not a CNN")

    def state_hash(self) -> str:
        """SHA-256 over all parameters and buffers: tests assert it does not change in training."""
        import hashlib

        h = hashlib.sha256()
        for k, v in sorted(self.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()
