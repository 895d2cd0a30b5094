"""Localization maps: where a trained classifier looked, as an (S, S) map in [0, 1] aligned with its input.

:func:`localization_map` works for every adapter method: it runs the method's own ``forward`` with
gradients (the backbone stays frozen; gradients flow to the activations only) and explains the logit
of ``target`` (default: the predicted class). :func:`napari_medprompt.train.explain.explain` brings the
map back to the original image's pixel grid.

- **CNN backbones (ResNet): Grad-CAM** (Selvaraju et al.) on the backbone's last stage
  (``feature_map``): channel weights = spatial mean of d logit / d feature map, map =
  ReLU(sum_c w_c A_c), bilinearly upsampled to the input. A Grad-CAM needs a spatial grid: when the
  last stage is coarser than 4x4 (small inputs, e.g. 64 px -> 2x2) and the backbone is a torchvision
  ResNet, the stage before it (``layer3``, twice the resolution) is used instead.
- **ViT backbones: gradient-weighted attention rollout** (Chefer et al., CVPR 2021, "Generic
  attention-model explainability"): for each block the attention probabilities A (heads, T, T) that
  the block actually used and their gradients G = d logit / d A give the block's relevance
  A' = mean_heads |A * (G - sum_k A_k G_k)|, which is |d logit / d S|, the gradient with respect to
  the pre-softmax attention scores S (chain rule through the softmax). Chefer's ReLU(G * A) ignores
  that the probabilities of a row sum to one, so a gradient shared by all keys of a row (e.g. the
  common background content of the values) counts as relevance; on the test task it lit up the
  background, while |d logit / d S| peaked on the class-deciding lesion. The relevance
  R = I is updated R <- R + A' R block by block (Chefer's rule), and the class token's row of R over
  the patch tokens (the last grid**2 tokens; prompt tokens are skipped) is the patch-grid map.
  Attention probabilities are captured while the method's forward runs: ``nn.MultiheadAttention``
  modules (open_clip CLIP towers) get a forward hook that recomputes their attention explicitly
  from the same inputs (numerically the same output), records the probabilities and returns that
  output;
  timm / open_clip ``Attention`` modules have their fused kernel switched off and their ``attn_drop``
  output (the probabilities) recorded.
- **Mask-using methods** (``uses_masks``): the map is the model's own (computed with the mask as the
  model takes it); it is never multiplied by the mask nor replaced by it: the mask is shown
  separately, so the explanation does not repeat the annotation.

Safe on a model that is training in another thread: the map is computed on a :func:`snapshot
<napari_medprompt.classify.snapshot.snapshot>` (own module objects, frozen weights shared, trainable
ones cloned). Every hook and switch is on the snapshot; the original model is only read.

Maps are min-max normalised to [0, 1] (all zeros if the model's map is flat). :func:`resize_map`
stretches a map to another size (for a model input that was stretched; padded inputs go through
:class:`napari_medprompt.train.preprocess.Geometry`).
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from napari_medprompt.classify.snapshot import snapshot

MIN_CAM_GRID = 4


def _as_batch(image) -> torch.Tensor:
    x = torch.as_tensor(image)
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"localization_map explains one image at a time; got shape {tuple(x.shape)}")
    return x.float()


def _normalise(m: torch.Tensor) -> torch.Tensor:
    m = m.detach().float()
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if float(hi - lo) > 1e-12 else torch.zeros_like(m)


def _cam_stage(bb, x):
    """The torchvision ResNet stage whose output is the Grad-CAM feature map, or None when the
    backbone has no such stages (then ``feature_map`` itself is recorded; see module docstring)."""
    model = getattr(bb, "model", None)
    l3, l4 = getattr(model, "layer3", None), getattr(model, "layer4", None)
    if not isinstance(l3, nn.Module) or not isinstance(l4, nn.Module):
        return None
    sizes = []
    hook = l4.register_forward_hook(lambda _m, _i, out: sizes.append(min(out.shape[-2:])))
    try:
        with torch.no_grad():
            bb.feature_map(x.detach())
    finally:
        hook.remove()
    return l3 if sizes and sizes[0] < MIN_CAM_GRID else l4


def forward_capturing_feature_map(model, x, masks):
    """``(logits, captured)``: ``model(x, masks)`` with the CNN backbone's Grad-CAM stage output (or,
    without ResNet stages, every ``feature_map`` result) appended to ``captured``. ``model`` should be
    a private snapshot: a backbone without stages has its ``feature_map`` wrapped while this runs."""
    bb = model.backbone
    captured: list[torch.Tensor] = []
    stage = _cam_stage(bb, x)
    if stage is not None:
        handle = stage.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            return model(x, masks), captured
        finally:
            handle.remove()
    original = bb.feature_map

    def recording_feature_map(images):
        fmap = original(images)
        captured.append(fmap)
        return fmap

    bb.feature_map = recording_feature_map
    try:
        return model(x, masks), captured
    finally:
        del bb.feature_map


def _grad_cam(model, x, masks, target):
    """Grad-CAM on ``model`` (a private snapshot, see :func:`forward_capturing_feature_map`)."""
    bb = model.backbone
    logits, captured = forward_capturing_feature_map(model, x, masks)
    if not captured:
        raise RuntimeError(f"backbone {bb.name!r}: encode_image does not go through feature_map; Grad-CAM cannot hook it")
    target = int(logits[0].argmax()) if target is None else int(target)
    fmap = captured[-1]
    (grad,) = torch.autograd.grad(logits[0, target], fmap)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * fmap).sum(1))[0], logits


def _explicit_mha(mod: nn.MultiheadAttention, store: list, query, key, value, key_padding_mask=None,
                  need_weights=True, attn_mask=None, average_attn_weights=True, is_causal=False):
    """``mod``'s attention computed explicitly (same result), its probabilities recorded in ``store``."""
    bf = mod.batch_first
    q_in, k_in, v_in = (t if bf else t.transpose(0, 1) for t in (query, key, value))
    e, h = mod.embed_dim, mod.num_heads
    w, b = mod.in_proj_weight, mod.in_proj_bias
    bq, bk, bv = (None, None, None) if b is None else b.chunk(3)
    q, k, v = F.linear(q_in, w[:e], bq), F.linear(k_in, w[e : 2 * e], bk), F.linear(v_in, w[2 * e :], bv)
    n, lq, ls = q.shape[0], q.shape[1], k.shape[1]
    q, k, v = (t.reshape(n, -1, h, e // h).transpose(1, 2) for t in (q, k, v))
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(e // h)
    if attn_mask is not None:
        m = attn_mask
        if m.dtype == torch.bool:
            m = torch.zeros_like(m, dtype=logits.dtype).masked_fill(m, float("-inf"))
        logits = logits + (m.reshape(n, h, lq, ls) if m.ndim == 3 else m)
    if key_padding_mask is not None:
        logits = logits.masked_fill(key_padding_mask.bool()[:, None, None, :], float("-inf"))
    probs = logits.softmax(-1)
    store.append(probs)
    out = mod.out_proj((probs @ v).transpose(1, 2).reshape(n, lq, e))
    if not bf:
        out = out.transpose(0, 1)
    return out, ((probs.mean(1) if average_attn_weights else probs) if need_weights else None)


_MHA_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)


class _AttentionRecorder:
    """Records the attention probabilities of each block while a forward runs (see module docstring).

    Only hooks and attribute switches, all undone by :meth:`close`; no module's ``forward`` is
    replaced. ``nn.MultiheadAttention``: a forward hook recomputes the module's attention explicitly
    from the same inputs (numerically the same output) and returns that output, so the recorded
    probabilities are the ones the rest of the network depends on (the probabilities the module
    itself returns are a view that gradients do not reach).
    """

    def __init__(self, blocks) -> None:
        self.store: list[torch.Tensor] = []
        self._undo: list = []
        for blk in blocks:
            for mod in blk.modules():
                if isinstance(mod, nn.MultiheadAttention):
                    if mod.bias_k is not None or mod.add_zero_attn or not mod._qkv_same_embed_dim:
                        raise NotImplementedError("attention with bias_k / add_zero_attn / separate q,k,v projections")
                    handle = mod.register_forward_hook(self._explicit, with_kwargs=True)
                    self._undo.append(handle.remove)
                    break
                drop = getattr(mod, "attn_drop", None)
                if isinstance(drop, nn.Module):
                    for flag in ("use_fsdpa", "fused_attn"):
                        if getattr(mod, flag, False):
                            setattr(mod, flag, False)
                            self._undo.append(lambda mod=mod, flag=flag: setattr(mod, flag, True))
                    handle = drop.register_forward_hook(lambda _m, _i, out: self.store.append(out))
                    self._undo.append(handle.remove)
                    break

    def _explicit(self, mod, args, kwargs, _out):
        bound = _MHA_SIGNATURE.bind(mod, *args, **kwargs)
        bound.apply_defaults()
        call = dict(bound.arguments)
        call.pop("self")
        return _explicit_mha(mod, self.store, **call)

    def close(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def _attention_rollout(model, x, masks, target):
    bb = model.backbone
    rec = _AttentionRecorder(bb.blocks())
    try:
        logits = model(x, masks)
    finally:
        rec.close()
    if not rec.store:
        raise RuntimeError(f"backbone {bb.name!r}: no attention probabilities were recorded")
    target = int(logits[0].argmax()) if target is None else int(target)
    grads = torch.autograd.grad(logits[0, target], rec.store, allow_unused=True)
    t = rec.store[0].shape[-1]
    rel = torch.eye(t, device=x.device)
    for a, g in zip(rec.store, grads):
        if g is None or a.shape[-1] != t:
            continue
        a0, g0 = a[0].detach().float(), g[0].float()
        cam = (a0 * (g0 - (a0 * g0).sum(-1, keepdim=True))).abs().mean(0)
        rel = rel + cam @ rel
    g2 = bb.grid_size
    return rel[0, -g2 * g2 :].reshape(g2, g2), logits


def raw_localization(model, image, mask=None, target: int | None = None):
    """(map on the model input (S, S), not normalised; logits (n_classes,); the technique's name).

    ``image`` / ``mask`` as for :func:`localization_map`. Runs on a snapshot of ``model``.
    """
    x = _as_batch(image)
    m = None if mask is None else _as_batch(mask)
    if getattr(model, "uses_masks", False):
        model.require_masks(m)
    if m is not None and m.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"mask {tuple(m.shape[-2:])} does not match image {tuple(x.shape[-2:])}")
    work = snapshot(model).eval()
    bb = work.backbone
    device = next(iter(work.parameters()), torch.zeros(0)).device
    x = x.to(device)
    m = None if m is None else m.to(device)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)  # gradients reach the frozen backbone's activations
        if bb.kind == "cnn":
            grid_map, logits = _grad_cam(work, x, m, target)
            technique = "Grad-CAM"
        elif bb.kind == "vit":
            grid_map, logits = _attention_rollout(work, x, m, target)
            technique = "gradient-weighted attention rollout"
        else:
            raise NotImplementedError(f"no localization map for backbone kind {bb.kind!r} ({bb.name})")
    up = F.interpolate(grid_map.detach()[None, None].float(), size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return up.cpu(), logits.detach()[0].float().cpu(), technique


def localization_map(model, image, mask=None, target: int | None = None) -> np.ndarray:
    """Map (S, S) in [0, 1] of where ``model`` looked to score ``target`` (default: its prediction).

    ``image`` is one image as the model takes it: (3, S, S) or (1, 3, S, S), normalised with the
    backbone's mean/std; ``mask`` (S, S), (1, S, S) or (1, 1, S, S) in [0, 1], required by mask-using
    methods (the model uses it; the map is the model's own, not multiplied by the mask). The result is
    aligned with the model input; :func:`napari_medprompt.train.explain.explain` works on raw images
    and answers in their pixel grid. ``model`` is never modified (see module docstring).
    """
    up, _, _ = raw_localization(model, image, mask, target)
    return _normalise(up).numpy().astype(np.float32)


def resize_map(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize a localization map to ``shape``, kept in [0, 1]. Right only for a model input
    that was the whole image stretched; padded inputs: :meth:`Geometry.to_original
    <napari_medprompt.train.preprocess.Geometry.to_original>`."""
    t = torch.as_tensor(np.asarray(cam, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=tuple(int(s) for s in shape), mode="bilinear", align_corners=False)[0, 0]
    return out.clamp(0, 1).numpy()
