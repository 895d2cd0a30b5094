"""Bottleneck adapters in every Hiera block of a frozen SAM2 image encoder.

For each of the trunk's ``MultiScaleBlock``s (12 in hiera-tiny), with ``d = blk.dim_out``:

- **attention adapter** (serial): a forward hook on ``blk.attn`` returns ``out + A(out)``. It is token
  wise, so windowed, query-pooled and global-attention tensors (channels last) are all handled.
- **MLP adapter** (parallel, as Medical-SAM-Adapter's ``MLP_Adapter``): a forward hook on ``blk.mlp``
  returns ``out + scale * A(norm2(x))`` (the MLP's own input), ``scale`` = 0.5.
- ``A(x) = W_up GELU(W_down x)`` with hidden width ``ratio * d`` (0.25: 24/48/96/192 in hiera-tiny) or
  a fixed width; **W_up and its bias start at zero**, so the adapted encoder reproduces the base
  model exactly (bit for bit) until the first optimiser step.

Hooks keep the SAM2 state dict unchanged: the base checkpoint loads as usual, the adapters attach
afterwards, :meth:`HieraAdapters.detach` removes them (the base model again). Only the adapters'
tensors are saved (``blocks.<i>.attn|mlp.down|up.weight|bias``).
"""

from __future__ import annotations

import torch
from torch import nn

MLP_SCALE = 0.5


class BottleneckAdapter(nn.Module):
    """``W_up GELU(W_down x)`` over the last dimension; ``W_up`` zero-initialised."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class BlockAdapters(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.attn = BottleneckAdapter(dim, hidden)
        self.mlp = BottleneckAdapter(dim, hidden)


def hidden_width(dim: int, ratio: float | None, width: int | None) -> int:
    if width is not None:
        if int(width) < 1:
            raise ValueError(f"adapter width must be >= 1, got {width}")
        return int(width)
    if ratio is None or not 0 < float(ratio) <= 4:
        raise ValueError(f"adapter ratio must be in (0, 4], got {ratio}")
    return max(1, int(round(dim * float(ratio))))


class HieraAdapters(nn.Module):
    """One attention and one MLP adapter per Hiera block of ``trunk`` (not attached until :meth:`attach`)."""

    def __init__(self, trunk, ratio: float | None = 0.25, width: int | None = None, mlp_scale: float = MLP_SCALE):
        super().__init__()
        self.ratio, self.width, self.mlp_scale = ratio, width, float(mlp_scale)
        self.blocks = nn.ModuleList(
            BlockAdapters(blk.dim_out, hidden_width(blk.dim_out, ratio, width)) for blk in trunk.blocks
        )
        self._handles: list = []
        self.n_blocks = len(trunk.blocks)

    def config(self) -> dict:
        return {"ratio": self.ratio, "width": self.width, "mlp_scale": self.mlp_scale, "n_blocks": self.n_blocks}

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self, trunk) -> None:
        """Hook the adapters into ``trunk``'s blocks (idempotent)."""
        if self.attached:
            return
        if len(trunk.blocks) != len(self.blocks):
            raise ValueError(f"these adapters are for a trunk of {len(self.blocks)} blocks; this one has "
                             f"{len(trunk.blocks)} (another SAM2 size?)")
        for blk, ad in zip(trunk.blocks, self.blocks):
            if blk.dim_out != ad.attn.up.out_features:
                raise ValueError(f"adapter width {ad.attn.up.out_features} does not fit a block of width "
                                 f"{blk.dim_out} (another SAM2 size?)")
            self._handles.append(blk.attn.register_forward_hook(_attn_hook(ad.attn)))
            self._handles.append(blk.mlp.register_forward_hook(_mlp_hook(ad.mlp, self.mlp_scale)))

    def detach(self) -> None:
        """Remove the hooks: the trunk computes the base model again."""
        for h in self._handles:
            h.remove()
        self._handles = []


def _attn_hook(adapter: BottleneckAdapter):
    def hook(module, inputs, out):
        return out + adapter(out)

    return hook


def _mlp_hook(adapter: BottleneckAdapter, scale: float):
    def hook(module, inputs, out):
        return out + scale * adapter(inputs[0])

    return hook
