"""The SAM2 adapter methods as entries of the segmentation method registry (torch-free).

Options and schedules follow ``SEG_ADAPTERS.md`` B3/B4: adapters AdamW lr 1e-4, the decoder-only
path lr 1e-5, weight decay 1e-2, Dice + BCE on the decoder's low-res logits; batch 2 by default
(CPU / small GPU; the references use 4-8 on a GPU).
"""

from __future__ import annotations

from napari_medprompt.classify.base import MethodInfo, OptionSpec, TrainDefaults

TARGET = "napari_medprompt.seg_adapters.sam2_model:build_sam2_method"

_PROMPTS = (
    OptionSpec("jitter", float, 0.1, "box jitter: each side moves by up to this fraction of the box size", min=0.0, max=1.0),
    OptionSpec("max_shift", float, 20.0, "box jitter cap in slice pixels (MedSAM: 20)", min=0.0, max=1000.0),
    OptionSpec("max_clicks", int, 3, "training prompts add 0..max_clicks error clicks", min=0, max=20),
    OptionSpec("eval_clicks", int, 1, "validation prompts: the tight box plus this many error clicks", min=0, max=20),
    OptionSpec("image_size", int, None, "rebuild the base at another input size (tests/previews only; "
               "None = the model's own: 1024 SAM2, 512 MedSAM2)", min=64, max=2048),
)
_ADAPTER = (
    OptionSpec("ratio", float, 0.25, "adapter hidden width as a fraction of the block width (0.25: 24/48/96/192)",
               min=0.0, max=4.0),
    OptionSpec("width", int, None, "fixed adapter hidden width (overrides ratio)", min=1, max=4096),
    OptionSpec("mlp_scale", float, 0.5, "scale of the parallel MLP adapter (Medical-SAM-Adapter: 0.5)", min=0.0, max=10.0),
)

ENTRIES = (
    MethodInfo("sam2-adapter", TARGET,
               "Bottleneck adapters in every Hiera block of the frozen SAM2 image encoder (zero-init: starts as the "
               "base model), trained on corrected masks with simulated box + click prompts",
               uses_masks=True, options=_ADAPTER + _PROMPTS,
               defaults=TrainDefaults("adamw", 1e-4, 20, 2, 1e-2, note="SAM2 adapter recipe (SEG_ADAPTERS.md B4)")),
    MethodInfo("sam2-adapter-decoder", TARGET,
               "Hiera adapters plus a trainable copy of the SAM2 mask decoder",
               uses_masks=True, options=_ADAPTER + _PROMPTS,
               defaults=TrainDefaults("adamw", 1e-4, 20, 2, 1e-2, note="SAM2 adapter recipe (SEG_ADAPTERS.md B4)")),
    MethodInfo("sam2-decoder", TARGET,
               "SAM2 mask decoder only, on cached image features (the CPU-friendly option)",
               uses_masks=True, cached_features=True, options=_PROMPTS,
               defaults=TrainDefaults("adamw", 1e-5, 20, 2, 1e-2, note="decoder lr 1e-5 (SEG_ADAPTERS.md B4)")),
)


def register(register_fn) -> None:
    """Add the entries through the segmentation registry's own ``register_fn``."""
    for info in ENTRIES:
        register_fn(info)
