"""SAM2's mask decoder for clicks, laid out for the CPU.

``decode_masks`` computes what ``MaskDecoder.forward`` computes (same modules, same weights, same
selection of the multimask / dynamic-stability outputs; tests compare the two, and the whole click
path against ``SAM2ImagePredictor`` on non-square slices), reordered so that a click on a 2-core CPU
costs about half of what ``SAM2ImagePredictor.predict`` costs at the same precision, with the same
masks (``benchmarks/bench_segment.py``: 0.48x in float32 at low load, 0.71x with the machine
oversubscribed):

- **Per-slice projections.** Without a mask prompt the decoder's image tokens do not depend on the
  prompt, so the first two-way attention layer's image-side projections (keys and values the prompt
  tokens attend to, queries with which the image tokens attend back) are computed once per slice
  (:func:`image_projections`, :class:`ImageProjections`) and reused by every click on it.
- **Projections on the token side.** Every other attention between the 4096 image tokens and the few
  prompt tokens applies its image-side projection to the few tokens instead: scores as
  ``(q W_k) x^T``, outputs as ``(P x) W_v^T + b_v`` and ``P (V W_o^T)``. Exact algebra (softmax
  ignores a per-row constant, attention rows sum to one); about half the multiply-adds.
- **Upscaling channels-last.** The two 2x2 / stride-2 transposed convolutions run as one matrix
  product each on (pixels, channels) data, ``LayerNorm2d`` as a fused layer norm over channels.

Results differ from SAM2's decoder only by float rounding (~1e-6 on the logits in float32).
"""

from __future__ import annotations

import numpy as np

MASK_LOGIT = 10.0  # a binary mask prompt becomes logits of +-10 (as SAM2 does for mask inputs)


def channels_last(t):
    import torch

    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


class ImageProjections:
    """What SAM2's mask decoder computes from one image alone, before any prompt is seen.

    Without a mask prompt the decoder's image tokens are ``image_embed + no_mask_embed``: the same for
    every click on that image. So the first two-way attention layer's projections of the image tokens
    are too: the keys ``k_proj(tokens + pe)`` and values ``v_proj(tokens)`` the prompt tokens attend
    to, and the queries ``q_proj(tokens + pe)`` with which the image tokens attend back to the prompt
    tokens. They are computed once per image by :func:`image_projections` (about a third of the
    transformer's matrix products over the 4096 image tokens) and reused by every click.
    """

    __slots__ = ("source", "keys", "keys_pe", "pe", "k1", "v1", "q1")

    def __init__(self, source, keys, keys_pe, pe, k1, v1, q1):
        self.source = source  # the image embedding these were computed from (identity check)
        self.keys, self.keys_pe, self.pe = keys, keys_pe, pe
        self.k1, self.v1, self.q1 = k1, v1, q1


def _tokens(t):
    """(B, C, H, W) -> (B, H*W, C); a view for channels_last input, a copy otherwise."""
    b, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).reshape(b, h * w, c)


def _heads(x, n):
    b, t, c = x.shape
    return x.view(b, t, n, c // n).transpose(1, 2)  # (B, heads, T, d)


def image_projections(dec, image_embed, image_pe, dense) -> ImageProjections:
    """The prompt-independent part of ``dec`` for one image (see :class:`ImageProjections`).

    ``dense`` must be the no-mask dense embedding (a mask prompt changes the image tokens).
    """
    layer = dec.transformer.layers[0]
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    keys = _tokens(image_embed + dense).contiguous()
    pe = _tokens(image_pe).contiguous()
    kp = keys + pe
    k1 = _heads(t2i.k_proj(kp), t2i.num_heads).contiguous()
    v1 = _heads(t2i.v_proj(keys), t2i.num_heads).contiguous()
    q1 = _heads(i2t.q_proj(kp), i2t.num_heads).contiguous()
    return ImageProjections(image_embed, keys, kp, pe, k1, v1, q1)


def _tokens_to_image(att, q, kp, v_img, k=None, v=None):
    """``att(q=q, k=kp, v=v_img)`` (SAM2's ``Attention``) for few query tokens over the image tokens.

    With the image side projected already (``k``, ``v`` in heads), plain attention. Otherwise the
    projections are moved to the token side: scores ``(q W_k) kp^T`` (the key bias adds a constant
    per query and head, which softmax ignores) and output ``(P v_img) W_v^T + b_v`` (rows of ``P`` sum
    to one), so the 4096 image tokens are never projected: about half the multiply-adds.
    """
    import torch.nn.functional as F

    n = att.num_heads
    qh = _heads(att.q_proj(q), n)  # (B, h, T, d)
    b, _, t, d = qh.shape
    if k is not None:
        out = F.scaled_dot_product_attention(qh, k, v)
    else:
        c = kp.shape[-1]
        wk = att.k_proj.weight.view(n, d, c)
        a = (qh @ wk).reshape(b, n * t, c)  # (B, h*T, C)
        p = ((a @ kp.transpose(1, 2)) * (d**-0.5)).softmax(-1)  # (B, h*T, N)
        pv = (p @ v_img).view(b, n, t, c)  # (B, h, T, C)
        wv = att.v_proj.weight.view(n, d, c)
        out = pv @ wv.transpose(1, 2) + att.v_proj.bias.view(n, 1, d)  # (B, h, T, d)
    return att.out_proj(out.transpose(1, 2).reshape(b, t, n * d))


def _image_to_tokens(att, kp, q_tok, v_tok, q_img=None):
    """``att(q=kp, k=q_tok, v=v_tok)`` for the image tokens attending to few tokens.

    The output projection is applied to the few value tokens first (``P (V W_o^T)``, summed over
    heads in one product); without ``q_img`` (image queries in heads) the query projection moves to
    the token side too (``kp (W_q^T K^T)`` plus the query bias's term).
    """
    n = att.num_heads
    kh = _heads(att.k_proj(q_tok), n)  # (B, h, T, d)
    vh = _heads(att.v_proj(v_tok), n)
    b, _, t, d = kh.shape
    c = kp.shape[-1]
    if q_img is not None:
        s = (q_img @ kh.transpose(2, 3)).permute(0, 2, 1, 3)  # (B, N, h, T)
    else:
        wq = att.q_proj.weight.view(n, d, c)
        m = (wq.transpose(1, 2) @ kh.transpose(2, 3)).permute(0, 2, 1, 3).reshape(b, c, n * t)
        bias = (kh @ att.q_proj.bias.view(n, d, 1)).reshape(b, 1, n * t)
        s = (kp @ m + bias).view(b, -1, n, t)
    p = (s * (d**-0.5)).softmax(-1).reshape(b, -1, n * t)  # (B, N, h*T)
    wo = att.out_proj.weight.view(c, n, d).permute(1, 2, 0)  # (h, d, C)
    vw = (vh @ wo).reshape(b, n * t, c)  # (B, h*T, C)
    return p @ vw + att.out_proj.bias


def two_way_transformer(tr, keys, pe, point_embedding, pre: ImageProjections | None = None):
    """SAM2's ``TwoWayTransformer.forward`` on (B, N, C) image tokens -> (queries, keys).

    The same layers and weights; the attention over image tokens is reordered as described in
    :func:`_tokens_to_image` / :func:`_image_to_tokens`, and the first layer's image-side
    projections come from ``pre`` when given.
    """
    queries = point_embedding
    for i, layer in enumerate(tr.layers):
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + point_embedding
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        cached = pre if i == 0 else None
        kp = cached.keys_pe if cached is not None else keys + pe
        q = queries + point_embedding
        if cached is not None:
            attn = _tokens_to_image(layer.cross_attn_token_to_image, q, kp, keys, cached.k1, cached.v1)
        else:
            attn = _tokens_to_image(layer.cross_attn_token_to_image, q, kp, keys)
        queries = layer.norm2(queries + attn)
        queries = layer.norm3(queries + layer.mlp(queries))
        q = queries + point_embedding
        attn = _image_to_tokens(
            layer.cross_attn_image_to_token, kp, q, queries, None if cached is None else cached.q1
        )
        keys = layer.norm4(keys + attn)
    q = queries + point_embedding
    queries = tr.norm_final_attn(queries + _tokens_to_image(tr.final_attn_token_to_image, q, keys + pe, keys))
    return queries, keys


def _conv_t2x2(conv, x):
    """A 2x2 / stride 2 ``ConvTranspose2d`` on NHWC (B, H, W, Cin) -> NHWC (B, 2H, 2W, Cout), one matmul."""
    cin, cout = conv.weight.shape[:2]
    b, h, w, _ = x.shape
    wm = conv.weight.permute(0, 2, 3, 1).reshape(cin, 4 * cout)  # (Cin, (di, dj, Cout))
    y = (x.reshape(b, h * w, cin) @ wm).view(b, h, w, 2, 2, cout)
    y = y.permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, cout)
    return y + conv.bias


def _ln_last(ln2d, x):
    """SAM2's ``LayerNorm2d`` (normalise over channels) on NHWC data, as one fused layer norm."""
    import torch.nn.functional as F

    return F.layer_norm(x, (x.shape[-1],), ln2d.weight, ln2d.bias, ln2d.eps)


def decode_masks(dec, image_embed, image_pe, sparse, dense, high_res, multimask: bool, pre=None):
    """``dec`` (a sam2 ``MaskDecoder``) on one image: -> (mask logits, IoU, object score logits).

    Computes what ``MaskDecoder.forward`` computes (same modules, same weights, same selection of the
    multimask / dynamic-stability outputs; tests compare the two on non-square images), reordered for
    the CPU: see :func:`two_way_transformer`; the high-resolution upscaling runs channels-last, each
    2x2 transposed convolution as one matrix product and ``LayerNorm2d`` as a fused layer norm.
    ``pre`` (from :func:`image_projections` on the same ``image_embed``, ``image_pe`` and no-mask
    ``dense``) skips the first layer's image-side projections. ``image_embed``, ``image_pe`` and
    ``high_res`` ([s0, s1]) should be channels_last for speed; results are the same either way.
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

    b, c, h, w = image_embed.shape
    if pre is not None:
        keys, pe = pre.keys, pre.pe
    else:
        keys, pe = _tokens(image_embed + dense), _tokens(image_pe)
    hs, src = two_way_transformer(dec.transformer, keys, pe, tokens, pre)
    iou_token_out = hs[:, s, :]
    mask_tokens_out = hs[:, s + 1 : (s + 1 + dec.num_mask_tokens), :]

    x = src.view(b, h, w, c)  # NHWC
    if not dec.use_high_res_features:
        up = dec.output_upscaling(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    else:
        dc1, ln1, act1, dc2, act2 = dec.output_upscaling
        feat_s0, feat_s1 = high_res
        x = act1(_ln_last(ln1, _conv_t2x2(dc1, x) + feat_s1.permute(0, 2, 3, 1)))
        up = act2(_conv_t2x2(dc2, x) + feat_s0.permute(0, 2, 3, 1))
    hyper_in = torch.stack(
        [dec.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(dec.num_mask_tokens)], dim=1
    )
    bu, hu, wu, cu = up.shape
    masks = (hyper_in @ up.reshape(bu, hu * wu, cu).transpose(1, 2)).view(bu, -1, hu, wu)
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
