"""VLSM-Adapter (Dhakal et al., MICCAI 2024) on frozen CLIPSeg, and the decoder-only baseline.

Follows the authors' code (``naamiinepal/vlsm-adapter``, ``src/models/clipseg_adapter.py``):

- adapter block ``A(x) = x + ReLU(fc2(ReLU(fc1(x))))``, default ``nn.Linear`` init (no zero init);
- **dense** (bottleneck 64): ``A`` on the output of ``self_attn`` and of ``mlp`` (before each residual
  add) of encoder layers 0..8 (``max(extract_layers)`` layers) of the vision (V) and text (L) encoders,
  attached with forward hooks so Hugging Face's causal and padding masks stay as they are;
- **shallow** (bottleneck 512): ``A`` on the vision hidden states the decoder reads (layers 3, 6, 9; V);
  ``cond += A(h)`` for the end-of-text token of text hidden states 3, 6, 9 (L); encoders are not
  touched, so their outputs are cached per image and per prompt (the CPU-friendly path);
- **C**: ``cond = A(text_projection(pooled))`` with bottleneck 256, applied before the L terms;
- loss: MONAI ``DiceCELoss(lambda_dice=1.5, lambda_ce=1.0)``. The paper's code applies ``sigmoid`` and
  then gives the probabilities to DiceCE, whose 1-channel CE is ``BCEWithLogits``: the sigmoid runs
  twice. ``loss_form="faithful"`` reproduces that; the default ``"correct"`` uses
  ``DiceCELoss(sigmoid=True)`` on the logits (a deviation from the code, documented in the README).

Parameters: dense V/VL/VLC 1,784,448 / 2,974,464 / 3,237,376; shallow V/VL/VLC 2,363,136 /
3,939,072 / 4,201,984 (paper: SA 4.2M = shallow VLC).

The encoders are called directly (:class:`~.clipseg.CLIPSegBase`), never through the stock forward
that wraps them in ``no_grad``. ``neutralise()`` makes every adapter the identity (fc2 weight 0, bias
-1: the inner ReLU is 0) to compare with stock CLIPSeg.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_medprompt.seg_adapters.clipseg import CLIPSegBase, SegAdapterError
from napari_medprompt.seg_adapters.registry import validate_seg_options


class Adapter(nn.Module):
    """``x + ReLU(fc2(ReLU(fc1(x))))`` (the paper code's block)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return x + torch.relu(self.fc2(torch.relu(self.fc1(x))))

    @torch.no_grad()
    def neutralise(self) -> None:
        self.fc2.weight.zero_()
        self.fc2.bias.fill_(-1.0)


class _SegModel(nn.Module):
    """What the training loop, checkpoints and the segmenter use from a CLIPSeg-based model."""

    task = "segmentation"
    uses_masks = True
    trains_backbone = False
    cached_features = False
    encoder_hooks = False  # adapters inside the encoders (dense): no caching of encoder outputs

    def __init__(self, base: CLIPSegBase, classes, *, method: str, **options):
        super().__init__()
        if not isinstance(base, CLIPSegBase):
            raise SegAdapterError(f"{method} adapts CLIPSeg (CIDAS/clipseg-rd64-refined); got base model "
                                  f"{getattr(base, 'name', type(base).__name__)!r}")
        self.name = method
        self.options = validate_seg_options(method, options)
        self.backbone = base
        base.image_size = int(self.options["image_size"])
        self.classes = list(classes) or ["foreground"]
        from napari_medprompt.train.preprocess import Preprocess

        # the paper resizes to 352 x 352 (stretch) with ImageNet mean/std
        self.preprocess = Preprocess(base.image_size, base.mean, base.std, pad_to_square=False)
        self._text_cache: dict[str, tuple] = {}

    # --- what the loop reads ------------------------------------------------------------------
    def trainable_parameters(self) -> list:
        return [p for p in self.parameters() if p.requires_grad]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def method_config(self) -> dict:
        return dict(self.options)

    def prepare(self, feats=None, y=None) -> None:
        return None

    def loss_function(self):
        from monai.losses import DiceCELoss

        o = self.options
        if o["loss_form"] == "faithful":
            inner = DiceCELoss(sigmoid=False, lambda_dice=o["lambda_dice"], lambda_ce=o["lambda_ce"])
            return lambda logits, y: inner(torch.sigmoid(logits), y)
        return DiceCELoss(sigmoid=True, lambda_dice=o["lambda_dice"], lambda_ce=o["lambda_ce"])

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.train(False)
        return self

    # --- text (cached when no adapter sits inside the text encoder) ----------------------------
    def _text_features(self, prompts: list[str], text_hooks: bool):
        """(pooled (B, 512), EOT hidden states at the extract layers (B, 3, 512))."""
        base = self.backbone
        if text_hooks:
            ids, mask = base.tokenize(prompts)
            return self._run_text(ids, mask)
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            ids, mask = base.tokenize(missing)
            with torch.no_grad():
                pooled, eot = self._run_text(ids, mask)
            for i, p in enumerate(missing):
                self._text_cache[p] = (pooled[i].detach(), eot[i].detach())
        dev = base.device
        pooled = torch.stack([self._text_cache[p][0].to(dev) for p in prompts])
        eot = torch.stack([self._text_cache[p][1].to(dev) for p in prompts])
        return pooled, eot

    def _run_text(self, ids, mask):
        base = self.backbone
        out = base.text(ids, mask)
        rows = torch.arange(ids.shape[0], device=ids.device)
        pos = ids.to(torch.int).argmax(-1)
        eot = torch.stack([out.hidden_states[i + 1][rows, pos] for i in base.extract_layers], 1)
        return out.pooler_output, eot

    # --- forward --------------------------------------------------------------------------------
    def encode_for_cache(self, x):
        """Vision activations read by the decoder, (B, 3, tokens, 768); encoders frozen, no hooks."""
        with torch.no_grad():
            return torch.stack(self.backbone.activations(x), 1).float()

    def seg_logits(self, x, prompts: list[str]):
        raise NotImplementedError

    def seg_logits_from_features(self, feats, prompts: list[str]):
        raise NotImplementedError

    def forward(self, x, prompts):
        if isinstance(prompts, str):
            prompts = [prompts] * x.shape[0]
        if len(prompts) != x.shape[0]:
            raise SegAdapterError(f"{len(prompts)} prompts for {x.shape[0]} images")
        return self.seg_logits(x, list(prompts))


class VLSMAdapter(_SegModel):
    """``vlsm-{dense,shallow}-{v,vl,vlc}`` on a frozen :class:`CLIPSegBase`."""

    def __init__(self, base: CLIPSegBase, classes=(), *, method: str, **options):
        super().__init__(base, classes, method=method, **options)
        try:
            _, kind, mods = method.split("-")
        except ValueError:
            raise SegAdapterError(f"not a VLSM-Adapter method: {method!r}") from None
        if kind not in ("dense", "shallow") or mods not in ("v", "vl", "vlc"):
            raise SegAdapterError(f"not a VLSM-Adapter method: {method!r}")
        self.kind, self.use_v, self.use_l, self.use_c = kind, "v" in mods, "l" in mods, "c" in mods
        cfg = base.config
        dv, dt, dp = cfg.vision_config.hidden_size, cfg.text_config.hidden_size, cfg.projection_dim
        h = int(self.options["adapter_dim"])
        self.adapters = nn.ModuleDict()
        self._hooks: list = []
        self.cached_features = kind == "shallow"
        self.encoder_hooks = kind == "dense"
        if kind == "dense":
            owner = getattr(base, "_hooked_by", None)
            if owner is not None:
                raise SegAdapterError(f"this CLIPSeg already carries {owner} adapters; call remove_hooks() on that "
                                      "model first (or load another CLIPSeg)")
            base._hooked_by = method
            n = max(base.extract_layers)  # layers 0..8: the ones before the last extracted output
            enc = base.model.clip
            if self.use_v:
                self.adapters["v_attn"] = nn.ModuleList([Adapter(dv, h) for _ in range(n)])
                self.adapters["v_mlp"] = nn.ModuleList([Adapter(dv, h) for _ in range(n)])
                self._hook_layers(enc.vision_model.encoder.layers[:n], "v")
            if self.use_l:
                self.adapters["l_attn"] = nn.ModuleList([Adapter(dt, h) for _ in range(n)])
                self.adapters["l_mlp"] = nn.ModuleList([Adapter(dt, h) for _ in range(n)])
                self._hook_layers(enc.text_model.encoder.layers[:n], "l")
        else:
            k = len(base.extract_layers)
            if self.use_v:
                self.adapters["v_extract"] = nn.ModuleList([Adapter(dv, h) for _ in range(k)])
            if self.use_l:
                if dt != dp:
                    raise SegAdapterError(f"shallow text adapters add text states ({dt}) to the conditional "
                                          f"embedding ({dp}); they need equal widths")
                self.adapters["l_extract"] = nn.ModuleList([Adapter(dt, h) for _ in range(k)])
        if self.use_c:
            self.adapters["cond"] = Adapter(dp, int(self.options["cond_dim"]))
        self.hooks_enabled = True

    # --- hooks (dense) ----------------------------------------------------------------------------
    def _hook_layers(self, layers, side: str) -> None:
        for i, layer in enumerate(layers):
            self._hooks.append(layer.self_attn.register_forward_hook(self._attn_hook(side, i)))
            self._hooks.append(layer.mlp.register_forward_hook(self._mlp_hook(side, i)))

    def _attn_hook(self, side, i):
        def hook(module, args, out):
            if not self.hooks_enabled:
                return None
            a = self.adapters[f"{side}_attn"][i]
            if isinstance(out, tuple):
                return (a(out[0]), *out[1:])
            return a(out)

        return hook

    def _mlp_hook(self, side, i):
        def hook(module, args, out):
            if not self.hooks_enabled:
                return None
            return self.adapters[f"{side}_mlp"][i](out)

        return hook

    def remove_hooks(self) -> None:
        """Detach the adapters from the base model (it then runs as stock CLIPSeg)."""
        for h in self._hooks:
            h.remove()
        if self._hooks:
            self.backbone._hooked_by = None
        self._hooks.clear()
        self.hooks_enabled = False

    def neutralise(self) -> None:
        for m in self.adapters.modules():
            if isinstance(m, Adapter):
                m.neutralise()

    # --- forward ----------------------------------------------------------------------------------
    def _condition(self, pooled, eot):
        cond = self.backbone.project(pooled)
        if self.use_c:
            cond = self.adapters["cond"](cond)
        if self.kind == "shallow" and self.use_l:
            for j, a in enumerate(self.adapters["l_extract"]):
                cond = cond + a(eot[:, j])
        return cond

    def _decode(self, acts, cond):
        if self.kind == "shallow" and self.use_v:
            acts = [a(h) for a, h in zip(self.adapters["v_extract"], acts)]
        return self.backbone.decode(acts, cond)

    def seg_logits(self, x, prompts: list[str]):
        text_hooks = self.kind == "dense" and self.use_l and self.hooks_enabled
        pooled, eot = self._text_features(prompts, text_hooks)
        if self.kind == "dense":
            acts = self.backbone.activations(x)
        else:
            with torch.no_grad():
                acts = self.backbone.activations(x)
        return self._decode(acts, self._condition(pooled, eot))

    def seg_logits_from_features(self, feats, prompts: list[str]):
        if self.kind == "dense":
            raise SegAdapterError("dense adapters sit inside the encoders: there are no cached encoder outputs")
        pooled, eot = self._text_features(prompts, False)
        return self._decode(list(feats.unbind(1)), self._condition(pooled, eot))


class DecoderFinetune(_SegModel):
    """CLIPSeg with only its decoder trainable (encoders frozen, outputs cached)."""

    cached_features = True

    def __init__(self, base: CLIPSegBase, classes=(), *, method: str = "clipseg-decoder", **options):
        super().__init__(base, classes, method=method, **options)
        base.state_hash()  # the hash of the weights as loaded, before the decoder trains
        self.decoder = base.model.decoder
        self.decoder.requires_grad_(True)

    def train(self, mode: bool = True):
        super().train(mode)
        self.decoder.train(mode)
        return self

    def seg_logits(self, x, prompts: list[str]):
        pooled, _ = self._text_features(prompts, False)
        with torch.no_grad():
            acts = self.backbone.activations(x)
        return self.backbone.decode(acts, self.backbone.project(pooled))

    def seg_logits_from_features(self, feats, prompts: list[str]):
        pooled, _ = self._text_features(prompts, False)
        return self.backbone.decode(list(feats.unbind(1)), self.backbone.project(pooled))
