"""Segmentation training methods by name (torch-free to list): VLSM-Adapter variants and the CLIPSeg
decoder-only baseline. Entries use the same :class:`~napari_medprompt.classify.base.MethodInfo`
(option schema, training defaults) as the classification methods, so the loop, the CLI and the
GUI build forms and schedules the same way; they live in their own registry so that classification
method lists (and the classification dock) do not offer them.

| method | trainable part | cached encoder outputs |
|---|---|---|
| ``vlsm-dense-v`` / ``-vl`` / ``-vlc`` | adapters after attention and MLP of vision (V) / text (L) layers 0-8, + C | no |
| ``vlsm-shallow-v`` / ``-vl`` / ``-vlc`` | adapters on the encoder outputs fed to the decoder, + C | yes (CPU path) |
| ``clipseg-decoder`` | CLIPSeg's decoder (1.13M), encoders frozen | yes |
"""

from __future__ import annotations

from napari_medprompt.classify.base import MethodInfo, OptionSpec, TrainDefaults, coerce_option

#: the CLIPSeg checkpoint the methods adapt (Hugging Face repository id)
CLIPSEG_REPO = "CIDAS/clipseg-rd64-refined"
BASE_NAME = "clipseg-rd64-refined"

_COMMON = (
    OptionSpec("image_size", int, 352, "input size in px (the paper: 352; smaller only for tests/previews)", min=32,
               max=1024),
    OptionSpec("loss_form", str, "correct", "correct: DiceCE with sigmoid on the logits; faithful: the paper code's "
               "form (sigmoid applied, then DiceCE's BCE-with-logits applies it again)",
               choices=("correct", "faithful")),
    OptionSpec("lambda_dice", float, 1.5, "Dice weight of the DiceCE loss (paper code: 1.5)", min=0.0),
    OptionSpec("lambda_ce", float, 1.0, "cross-entropy weight of the DiceCE loss (paper code: 1.0)", min=0.0),
)

_DENSE = TrainDefaults("adamw", 1e-3, 20, 32, 1e-3, note="VLSM-Adapter code: AdamW lr 1e-3 (dense), wd 1e-3, batch 32")
_SHALLOW = TrainDefaults("adamw", 3e-4, 20, 32, 1e-3, note="VLSM-Adapter code: AdamW lr 3e-4 (shallow), wd 1e-3, batch 32")

_SEG: dict[str, MethodInfo] = {}


def _register(info: MethodInfo) -> None:
    _SEG[info.name] = info


for _kind, _defaults, _dim in (("dense", _DENSE, 64), ("shallow", _SHALLOW, 512)):
    for _mods, _what in (("v", "vision"), ("vl", "vision + text"), ("vlc", "vision + text + conditional")):
        _register(MethodInfo(
            f"vlsm-{_kind}-{_mods}", "napari_medprompt.seg_adapters.vlsm:VLSMAdapter",
            f"VLSM-Adapter ({_kind}, {_what} adapters) on frozen CLIPSeg: text prompt -> mask",
            uses_masks=True, cached_features=(_kind == "shallow"), needs_text=True,
            options=(OptionSpec("adapter_dim", int, _dim, f"adapter bottleneck width (paper code: {_dim})", min=1,
                                max=4096),
                     OptionSpec("cond_dim", int, 256, "bottleneck of the conditional-embedding adapter (C)", min=1,
                                max=4096)) + _COMMON,
            defaults=_defaults))
_register(MethodInfo(
    "clipseg-decoder", "napari_medprompt.seg_adapters.vlsm:DecoderFinetune",
    "CLIPSeg decoder-only fine-tuning (encoders frozen, outputs cached): the baseline the paper calls full "
    "fine-tuning (its encoders run under no_grad)", uses_masks=True, cached_features=True, needs_text=True,
    options=_COMMON, defaults=TrainDefaults("adamw", 1e-4, 20, 32, 1e-3, note="decoder-only baseline")))


# SAM2 adapters trained on corrected masks (box / click prompts): napari_medprompt.seg_adapters.sam2_registry
from napari_medprompt.seg_adapters import sam2_registry as _sam2  # noqa: E402 (torch-free)

_sam2.register(_register)


def available_seg_methods() -> dict[str, MethodInfo]:
    return dict(_SEG)


def seg_method_info(name: str) -> MethodInfo:
    try:
        return _SEG[name]
    except KeyError:
        raise KeyError(f"unknown segmentation method {name!r}; available: {', '.join(sorted(_SEG))}") from None


def validate_seg_options(name: str, options: dict | None) -> dict:
    info = seg_method_info(name)
    options = dict(options or {})
    for k in options:
        if not any(o.name == k for o in info.options):
            valid = ", ".join(o.name for o in info.options)
            raise ValueError(f"method {name!r} has no option {k!r}; valid options: {valid}")
    out = info.default_options()
    for k, v in options.items():
        out[k] = coerce_option(info, info.option(k), v)
    return out


def build_seg_model(config, structures: list[str], device="cpu"):
    """The method of ``config`` on a frozen CLIPSeg: ``config.pretrained`` "default" loads
    :data:`CLIPSEG_REPO` through the weight cache; "random" (or None) builds the checkpoint's real
    config with seeded random weights; a path loads a local ``model.safetensors``/folder."""
    import importlib

    from napari_medprompt.seg_adapters.clipseg import check_base_name, load_clipseg

    info = seg_method_info(config.method)
    if info.target == _sam2.TARGET:  # SAM2 / MedSAM2 base named by config.backbone
        module, _, attr = info.target.partition(":")
        return getattr(importlib.import_module(module), attr)(config, structures, device)
    check_base_name(config.backbone)
    base = load_clipseg(config.pretrained, device=device)
    module, _, attr = info.target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    return cls(base, structures, method=config.method, **config.method_options)
