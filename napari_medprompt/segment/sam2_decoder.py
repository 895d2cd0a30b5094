"""SAM2's mask decoder for clicks, laid out for the CPU.

``decode_masks`` computes exactly what ``MaskDecoder.forward`` computes (same modules, same weights,
same selection of the multimask / dynamic-stability outputs; a test compares the two), with one
difference in *memory layout*: the image embedding, its positional encoding and the high-resolution
features arrive in ``channels_last`` order, so the transformer's flatten/permute of the 64 x 64
image tokens yields contiguous (tokens, channels) tensors. SAM2's own ``predict_masks`` rebuilds the
positional encoding with ``repeat_interleave`` on every call (a fresh channel-first copy), after which
every ``keys + key_pe`` add and every linear layer over the 4096 image tokens works on strided data;
on a 2-core CPU those strided adds and copies were about a fifth of a click.
"""

from __future__ import annotations

import numpy as np

MASK_LOGIT = 10.0  # a binary mask prompt becomes logits of +-10 (as SAM2 does for mask inputs)


def channels_last(t):
    import torch

    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def decode_masks(dec, image_embed, image_pe, sparse, dense, high_res, multimask: bool):
    """``dec`` (a sam2 ``MaskDecoder``) on one image: -> (mask logits, IoU, object score logits).

    ``image_embed`` (1, C, 64, 64), ``image_pe`` (1, C, 64, 64) and ``high_res`` ([s0, s1]) should be
    channels_last for speed; results are identical either way.
    """
    import torch

    s = 0
    if dec.pred_obj_scores:
        output_tokens = torch.cat([dec.obj_score_token.weight, dec.iou_token.weight, dec.mask_tokens.weight], 0)
        s = 1
    else:
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], 0)
    output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
    tokens = torch.cat((output_tokens, sparse), dim=1)

    src = image_embed + dense  # keeps image_embed's channels_last layout
    b, c, h, w = src.shape
    hs, src = dec.transformer(src, image_pe, tokens)
    iou_token_out = hs[:, s, :]
    mask_tokens_out = hs[:, s + 1 : (s + 1 + dec.num_mask_tokens), :]

    src = src.transpose(1, 2).view(b, c, h, w)  # (B, HW, C) contiguous -> channels_last (B, C, H, W)
    if not dec.use_high_res_features:
        upscaled = dec.output_upscaling(src)
    else:
        dc1, ln1, act1, dc2, act2 = dec.output_upscaling
        feat_s0, feat_s1 = high_res
        upscaled = act1(ln1(dc1(src) + feat_s1))
        upscaled = act2(dc2(upscaled) + feat_s0)
    hyper_in = torch.stack(
        [dec.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(dec.num_mask_tokens)], dim=1
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.reshape(b, c, h * w)).view(b, -1, h, w)
    iou_pred = dec.iou_prediction_head(iou_token_out)
    if dec.pred_obj_scores:
        object_score_logits = dec.pred_obj_score_head(hs[:, 0, :])
    else:
        object_score_logits = 10.0 * iou_pred.new_ones(iou_pred.shape[0], 1)

    if multimask:
        masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
    elif dec.dynamic_multimask_via_stability and not dec.training:
        masks, iou_pred = dec._dynamic_multimask_via_stability(masks, iou_pred)
    else:
        masks, iou_pred = masks[:, 0:1], iou_pred[:, 0:1]
    return masks, iou_pred, object_score_logits


def mask_to_logits(mask: np.ndarray, size: int = 256):
    """A binary ``(H, W)`` mask as SAM's low-res mask prompt: ``(1, 1, size, size)`` logits of +-10.

    SAM2 resizes the slice to a square, so the mask is resized the same way (area-weighted,
    antialiased), then the fraction covered maps to ``[-10, 10]``.
    """
    import torch
    import torch.nn.functional as F

    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    low = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return low * (2 * MASK_LOGIT) - MASK_LOGIT


def build_cpu_decoder(net, dense_pe, dtype):
    """(decoder, dense positional encoding, no-memory embedding, no-mask dense prompt) in ``dtype``.

    A bfloat16 copy of the decoder when ``dtype`` is bfloat16 (no per-click casts of weights, as
    autocast would do on every call), else the model's own decoder; the 64 x 64 maps channels_last.
    """
    import copy

    import torch

    dec = net.sam_mask_decoder
    if dtype != torch.float32:
        dec = copy.deepcopy(dec).to(dtype).eval()
    h, w = net.sam_prompt_encoder.image_embedding_size
    with torch.inference_mode():
        no_mask = net.sam_prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, h, w)
        return (
            dec,
            channels_last(dense_pe.to(dtype)),
            net.no_mem_embed.detach().view(1, -1, 1, 1).to(dtype),
            channels_last(no_mask.to(dtype)),
        )
