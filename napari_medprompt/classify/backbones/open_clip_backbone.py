"""open_clip CLIP models (ViT-B-16/openai by default, BiomedCLIP via ``hf-hub:``) as frozen backbones.

Weights come through open_clip into the project's cache (``cache_dir("open_clip")``). ``pretrained``
may be a tag (``"openai"``), a local checkpoint file (``.safetensors``, or a torch file loaded with
``weights_only=True``), or ``None`` / ``"random"`` for random initialisation (``random_weights`` is
then True and a warning is logged). Missing weights raise :class:`WeightsUnavailable` with a message
that says how to fix it; nothing silently falls back to random weights unless asked.

Token API (see :mod:`.base`) for open_clip's own ``VisionTransformer`` and for timm ViT trunks
(BiomedCLIP): ``tokens`` = patch embedding + class token + positional embedding (+ patch dropout,
``ln_pre``), ``blocks`` = the residual attention blocks, ``head`` = open_clip's pooling (``ln_post``
on the class token for CLIP) and the projection. ``attention(block, x)`` returns a block's attention
probabilities (B, heads, T, T) for localization maps.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
from torch import nn

from napari_medprompt.classify.backbones.base import Backbone
from napari_medprompt.models.cache import WeightsUnavailable, cache_dir

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).with_name("configs")
RANDOM_TAGS = (None, "", "random", "none")

_configs_added = False


def _add_project_configs() -> None:
    """Make the project's small test configs (``configs/*.json``) known to open_clip by name."""
    global _configs_added
    if not _configs_added:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _configs_added = True


def _is_file(pretrained: str | None) -> bool:
    return bool(pretrained) and os.path.isfile(str(pretrained))


class OpenClipBackbone(Backbone):
    has_text = True

    def __init__(self, model_name: str = "ViT-B-16", pretrained: str | None = "openai", device="cpu") -> None:
        super().__init__()
        import open_clip

        _add_project_configs()
        self.name = model_name
        random = (pretrained in RANDOM_TAGS or str(pretrained).lower() in RANDOM_TAGS) and not model_name.startswith("hf-hub:")
        cdir = str(cache_dir("open_clip"))
        if pretrained is not None and not random and not _is_file(pretrained) and not model_name.startswith("hf-hub:"):
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            if pretrained not in tags:
                raise ValueError(
                    f"{pretrained!r} is neither a pretrained tag of {model_name} (known: {', '.join(tags) or 'none'}) "
                    "nor an existing checkpoint file; use 'random' for random weights"
                )
        if model_name.startswith("hf-hub:"):
            self._fetch_hf_weights(model_name, cdir)
        try:
            model = open_clip.create_model(
                model_name,
                pretrained=None if random else str(pretrained),
                cache_dir=cdir,
                weights_only=True,
                pretrained_text=False,
                pretrained_image=False,
            )
        except RuntimeError as err:
            if "not found in built-ins" in str(err):
                raise ValueError(f"unknown open_clip model {model_name!r}: {err}") from None
            raise WeightsUnavailable(
                f"could not load weights {pretrained!r} for {model_name} ({err}). If this machine is offline, "
                f"download them on a connected machine into {cdir} (or set MEDPROMPT_CACHE_DIR), or choose a "
                "local checkpoint file; pretrained='random' runs on random weights (not meaningful clinically)."
            ) from err
        if model_name.startswith("hf-hub:"):
            random = False  # hf-hub models ship their weights; create_model raised if it could not get them
        self.pretrained = "random" if random else (os.path.abspath(pretrained) if _is_file(pretrained) else pretrained)
        self.random_weights = random
        if random:
            log.warning("backbone %s runs on RANDOM weights: predictions are not meaningful", model_name)
        self.model = model
        self._tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cdir)
        visual = model.visual
        pcfg = open_clip.get_model_preprocess_cfg(model)
        size = pcfg.get("size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = tuple(float(v) for v in pcfg.get("mean", self.mean))
        self.std = tuple(float(v) for v in pcfg.get("std", self.std))
        self.embed_dim = int(getattr(visual, "output_dim", 0) or model.text_projection.shape[-1])
        self._trunk = getattr(visual, "trunk", None)  # timm ViT (BiomedCLIP)
        if self._trunk is not None and hasattr(self._trunk, "blocks"):
            t = self._trunk
            self.kind = "vit"
            self.width = int(t.embed_dim)
            self.patch_size = int(t.patch_embed.patch_size[0])
            self.num_heads = int(t.blocks[0].attn.num_heads)
        elif hasattr(visual, "transformer"):
            self.kind = "vit"
            self.width = int(visual.transformer.width)
            ps = visual.patch_size
            self.patch_size = int(ps[0] if isinstance(ps, (tuple, list)) else ps)
            self.num_heads = int(self._first_attn_heads(visual.transformer.resblocks[0]))
        else:
            self.kind = "cnn-clip"  # ModifiedResNet towers: encode_image only
        self.to(device)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _fetch_hf_weights(model_name: str, cdir: str) -> None:
        """open_clip only warns (and keeps random weights) when hf-hub weights are missing: fetch first."""
        from open_clip.pretrained import download_pretrained_from_hf

        repo = model_name.split(":", 1)[1]
        try:
            download_pretrained_from_hf(repo, cache_dir=cdir)
        except Exception as err:
            raise WeightsUnavailable(
                f"could not get the weights of {repo} from the Hugging Face hub ({type(err).__name__}: {err}). "
                f"If this machine is offline, copy the Hugging Face cache of {repo} into {cdir} "
                "(or set MEDPROMPT_CACHE_DIR to a folder that has it)."
            ) from err

    @staticmethod
    def _first_attn_heads(block) -> int:
        attn = block.attn
        return getattr(attn, "num_heads", None) or getattr(attn, "n_head")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # --- features ----------------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self._tokenizer(list(texts)).to(self.device)
        return self.model.encode_text(tokens)

    # --- ViT token API -----------------------------------------------------------------------------
    def _require_vit(self) -> None:
        if self.kind != "vit":
            raise NotImplementedError(f"{self.name} has no ViT image tower")

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        self._require_vit()
        if self._trunk is not None:
            t = self._trunk
            x = t.patch_embed(images)
            x = t._pos_embed(x)
            x = t.patch_drop(x)
            return t.norm_pre(x)
        return self.model.visual._embeds(images)

    def blocks(self) -> list[nn.Module]:
        self._require_vit()
        if self._trunk is not None:
            return list(self._trunk.blocks)
        return list(self.model.visual.transformer.resblocks)

    def run_block(self, block: nn.Module, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        if attn_bias is not None:
            attn_bias = attn_bias.to(x.dtype)
        if self._trunk is not None:
            if attn_bias is not None and attn_bias.ndim == 2:
                attn_bias = attn_bias[None, None]
            return block(x, attn_mask=attn_bias)
        if attn_bias is not None and attn_bias.ndim == 4 and isinstance(block.attn, nn.MultiheadAttention):
            b, h, t, s = attn_bias.shape
            attn_bias = attn_bias.expand(x.shape[0], self.num_heads, t, s).reshape(-1, t, s)
        if not self.model.visual.transformer.batch_first:
            return block(x.transpose(0, 1), attn_mask=attn_bias).transpose(0, 1)
        return block(x, attn_mask=attn_bias)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        self._require_vit()
        if self._trunk is not None:
            t = self._trunk
            return self.model.visual.head(t.forward_head(t.norm(x)))
        visual = self.model.visual
        pooled, _ = visual._pool(x)
        return pooled @ visual.proj if visual.proj is not None else pooled

    def attention(self, block: nn.Module, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Attention probabilities (B, heads, T, T) that ``block`` computes on input tokens ``x``."""
        self._require_vit()
        b, t, c = x.shape
        h = self.num_heads
        if self._trunk is not None:
            a = block.attn
            qkv = a.qkv(block.norm1(x)).reshape(b, t, 3, h, c // h).permute(2, 0, 3, 1, 4)
            q, k = a.q_norm(qkv[0]), a.k_norm(qkv[1])
            scale = a.scale
        else:
            y = block.ln_1(x)
            attn = block.attn  # nn.MultiheadAttention or open_clip's Attention: both pack q, k, v
            q, k, _ = torch.nn.functional.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
            q = q.reshape(b, t, h, -1).transpose(1, 2)
            k = k.reshape(b, t, h, -1).transpose(1, 2)
            scale = 1.0 / math.sqrt(c // h)
        logits = (q * scale) @ k.transpose(-1, -2)
        if attn_bias is not None:
            logits = logits + attn_bias.to(logits.dtype)
        return logits.softmax(dim=-1)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, pretrained={self.pretrained!r}, random_weights={self.random_weights}"
