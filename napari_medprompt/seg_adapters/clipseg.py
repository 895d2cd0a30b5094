"""Frozen CLIPSeg (``CIDAS/clipseg-rd64-refined``): its real config, loading through the weight cache,
tokenisation, and the direct encoder/decoder calls the adapters train through.

:func:`clipseg_rd64_refined_config` writes the checkpoint's ``config.json`` values explicitly:
``CLIPSegConfig()`` defaults differ (patch 32, a plain transposed convolution, text ``eos_token_id``
49407) and give another network (152.40M parameters instead of 150,747,746).

:class:`CLIPSegBase` never runs the stock ``CLIPSegForImageSegmentation.forward`` for training (it runs
both encoders under ``torch.no_grad``): :meth:`CLIPSegBase.vision` / :meth:`CLIPSegBase.text` call the
encoders directly and :meth:`CLIPSegBase.decode` the decoder, so gradients reach adapters hooked
inside the encoders. :meth:`CLIPSegBase.stock_logits` runs the stock forward (reference only).

Tokenisation: the CLIP byte-pair vocabulary bundled with ``open_clip`` (the same 49,408-token BPE as
the checkpoint's ``CLIPTokenizer``; works offline), start token 49406, end token 49407, padded to
CLIP's context of 77 tokens (the paper code pads to ``max_length`` 77) with an attention mask over
the real tokens. A prompt longer than the context is an error (never silently cut).
"""

from __future__ import annotations

import hashlib
import logging

import torch
from torch import nn

from napari_medprompt.seg_adapters.registry import BASE_NAME, CLIPSEG_REPO

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONTEXT_LENGTH = 77
SOT, EOT = 49406, 49407
RANDOM_INIT_SEED = 0


class SegAdapterError(ValueError):
    """A segmentation adapter cannot be built, loaded or used as asked; the message says why."""


def check_base_name(name: str | None) -> None:
    """Accept CLIPSeg names (and the training config's classification default, meaning "the method's
    base"); anything else is another base model."""
    if name in (None, "", BASE_NAME, CLIPSEG_REPO, "ViT-B-16"):
        return
    raise SegAdapterError(f"VLSM adapters are trained on CLIPSeg ({CLIPSEG_REPO}); base model {name!r} is another "
                          "model. Leave the backbone unset or choose " + BASE_NAME)


def clipseg_rd64_refined_config():
    """The ``CLIPSegConfig`` of ``CIDAS/clipseg-rd64-refined`` (values from its config.json)."""
    from transformers import CLIPSegConfig

    text = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                attention_dropout=0.0, initializer_range=0.02, initializer_factor=1.0,
                pad_token_id=1, bos_token_id=0, eos_token_id=2)
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  num_channels=3, image_size=224, patch_size=16, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                  attention_dropout=0.0, initializer_range=0.02, initializer_factor=1.0)
    return CLIPSegConfig(text_config=text, vision_config=vision, projection_dim=512, logit_scale_init_value=2.6592,
                         extract_layers=[3, 6, 9], reduce_dim=64, decoder_num_attention_heads=4,
                         decoder_attention_dropout=0.0, decoder_hidden_act="quick_gelu",
                         decoder_intermediate_size=2048, conditional_layer=0,
                         use_complex_transposed_convolution=True)


def _resolve_pretrained(pretrained):
    """(weights file or None, tag). "default" -> the repository through the project's weight cache."""
    if pretrained in (None, "random", "none"):
        return None, "random"
    if pretrained in ("default", CLIPSEG_REPO, "openai"):
        from napari_medprompt.models.cache import WeightsUnavailable, fetch_hf_file

        try:
            return fetch_hf_file(CLIPSEG_REPO, "model.safetensors"), CLIPSEG_REPO
        except WeightsUnavailable as first:
            try:
                return fetch_hf_file(CLIPSEG_REPO, "pytorch_model.bin"), CLIPSEG_REPO
            except WeightsUnavailable:
                raise first from None
    from pathlib import Path

    p = Path(str(pretrained)).expanduser()
    if p.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (p / name).is_file():
                return p / name, str(pretrained)
    if p.is_file():
        return p, str(pretrained)
    raise SegAdapterError(f"CLIPSeg weights {pretrained!r}: no such file or folder (give 'default', 'random', or a "
                          "model.safetensors / pytorch_model.bin of CIDAS/clipseg-rd64-refined)")


def _load_state(path) -> dict:
    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


class CLIPSegBase(nn.Module):
    """Frozen CLIPSeg with the attributes the training loop, checkpoints and store read from a
    backbone (``name``, ``pretrained``, ``random_weights``, ``state_hash()``, ``image_size``, ``mean``,
    ``std``)."""

    name = BASE_NAME
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, model, pretrained: str = "random", random_weights: bool = True, image_size: int = 352):
        super().__init__()
        self.model = model
        self.pretrained = pretrained
        self.random_weights = bool(random_weights)
        self.image_size = int(image_size)
        self.model.requires_grad_(False)
        self.model.eval()
        self._hash: str | None = None
        self._tokenizer = None

    # nn.Module.train() would switch dropout on in the frozen model; it has no dropout (p = 0), but
    # keep it in eval mode anyway
    def train(self, mode: bool = True):
        super().train(False)
        return self

    @property
    def config(self):
        return self.model.config

    @property
    def extract_layers(self) -> list[int]:
        return list(self.model.config.extract_layers)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def state_hash(self) -> str:
        """SHA-256 of the base weights as loaded (computed once, before any training touches them)."""
        if self._hash is None:
            h = hashlib.sha256()
            for k, v in sorted(self.model.state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
            self._hash = h.hexdigest()
        return self._hash

    # --- text ---------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]):
        """(input_ids, attention_mask), each (B, 77) on the model's device."""
        if self._tokenizer is None:
            from open_clip.tokenizer import SimpleTokenizer

            self._tokenizer = SimpleTokenizer()
        ids = torch.zeros(len(texts), CONTEXT_LENGTH, dtype=torch.long)
        mask = torch.zeros(len(texts), CONTEXT_LENGTH, dtype=torch.long)
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise SegAdapterError("empty text prompt: name the structure to segment (e.g. 'liver')")
            toks = [SOT] + self._tokenizer.encode(t) + [EOT]
            if len(toks) > CONTEXT_LENGTH:
                raise SegAdapterError(
                    f"text prompt is too long for CLIP's text encoder: {len(toks) - 2} tokens, at most "
                    f"{CONTEXT_LENGTH - 2} fit its context of {CONTEXT_LENGTH}; shorten it: {t[:60]!r}...")
            ids[i, : len(toks)] = torch.tensor(toks)
            ids[i, len(toks):] = EOT  # pad with the end token, like CLIPTokenizer's pad token
            mask[i, : len(toks)] = 1
        dev = self.device
        return ids.to(dev), mask.to(dev)

    def text(self, input_ids, attention_mask):
        """Text encoder output with hidden states (runs whatever hooks are attached)."""
        return self.model.clip.text_model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)

    def project(self, pooled):
        return self.model.clip.text_projection(pooled)

    # --- vision -------------------------------------------------------------------------------
    def vision(self, pixel_values):
        """The vision encoder's hidden states (embeddings, then one per layer)."""
        out = self.model.clip.vision_model(pixel_values=pixel_values, output_hidden_states=True,
                                           interpolate_pos_encoding=True)
        return out.hidden_states

    def activations(self, pixel_values) -> list:
        hs = self.vision(pixel_values)
        return [hs[i + 1] for i in self.extract_layers]

    # --- decoder ------------------------------------------------------------------------------
    def decode(self, activations, cond):
        """Decoder logits as (B, 1, H, W)."""
        logits = self.model.decoder(list(activations), cond).logits
        b = cond.shape[0]
        return logits.reshape(b, 1, *logits.shape[-2:])

    def stock_logits(self, pixel_values, texts: list[str]):
        """The stock ``CLIPSegForImageSegmentation.forward`` (encoders under no_grad), (B, 1, H, W)."""
        ids, mask = self.tokenize(texts)
        logits = self.model(input_ids=ids, pixel_values=pixel_values, attention_mask=mask).logits
        return logits.reshape(len(texts), 1, *logits.shape[-2:])


def _default_decoder_init(model) -> None:
    """Random-weight builds only: transformers' CLIPSeg init leaves the decoder's FiLM, reduce and
    transposed-convolution layers at N(0, 1), which gives logits of about +-500 on random weights (a
    saturated model no test can learn anything from). Those layers get PyTorch's default layer init
    instead (``reset_parameters``); pretrained weights replace them anyway."""
    dec = model.decoder
    for m in [dec.film_mul, dec.film_add, *dec.reduces, *dec.transposed_convolution.modules()]:
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


def load_clipseg(pretrained="default", device="cpu", image_size: int = 352) -> CLIPSegBase:
    """Frozen CLIPSeg rd64-refined. ``pretrained``: "default" (weights through the cache; a clear
    :class:`~napari_medprompt.models.cache.WeightsUnavailable` when offline), "random"/None (the real
    config, seeded random init without touching the caller's random state; logged), or a local file."""
    from transformers import CLIPSegForImageSegmentation

    path, tag = _resolve_pretrained(pretrained)
    config = clipseg_rd64_refined_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        model = CLIPSegForImageSegmentation(config)
        if path is None:
            _default_decoder_init(model)
    if path is not None:
        state = _load_state(path)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise SegAdapterError(f"{path} is not a CIDAS/clipseg-rd64-refined checkpoint: {len(missing)} missing, "
                                  f"{len(unexpected)} unexpected tensors (first: {(missing or unexpected)[0]})")
    else:
        log.warning("CLIPSeg runs on RANDOM weights (real rd64-refined config, seed %d): masks are not meaningful",
                    RANDOM_INIT_SEED)
    base = CLIPSegBase(model, tag, random_weights=path is None, image_size=image_size)
    return base.to(device)
