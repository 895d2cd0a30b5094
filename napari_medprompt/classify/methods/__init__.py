"""Registry entries of the built-in adapter methods (names and import paths only)."""

from napari_medprompt.classify.base import MethodInfo, register_method

_M = "napari_medprompt.classify.methods."

for _info in (
    MethodInfo("zero-shot", _M + "zero_shot:ZeroShot", "CLIP with class text prompts, no training", needs_text=True),
    MethodInfo("linear-probe", _M + "linear_probe:LinearProbe", "Logistic head on frozen features", cached_features=True),
    MethodInfo("clip-adapter", _M + "clip_adapter:ClipAdapter", "Bottleneck MLP on image features, residual blend", cached_features=True),
    MethodInfo("tip-adapter", _M + "tip_adapter:TipAdapter", "Training-free cache model over few-shot features", cached_features=True, needs_text=True),
    MethodInfo("tip-adapter-f", _M + "tip_adapter:TipAdapterF", "Tip-Adapter with learnable cache keys", cached_features=True, needs_text=True),
    MethodInfo("vpt-shallow", _M + "vpt:VPTShallow", "Learnable prompt tokens at the ViT input"),
    MethodInfo("vpt-deep", _M + "vpt:VPTDeep", "Learnable prompt tokens in every ViT layer"),
    MethodInfo("visual-prompt", _M + "visual_prompt:VisualPrompt", "Learnable pixel-space padding prompt (Bahng et al.)"),
    MethodInfo("movl", _M + "movl:MoVL", "Visual prompt + linear probe with a feature-discrepancy term (MoVL)"),
    MethodInfo("mask-guided-clip", _M + "mask_guided:MaskGuidedClip", "Mask steers CLIP to the region (MedFocusCLIP)", uses_masks=True),
    MethodInfo("segprompt", _M + "segprompt:SegPrompt", "Mask tokens interact with image tokens in a frozen ViT (SegPrompt)", uses_masks=True),
    MethodInfo("full-finetune", _M + "full_finetune:FullFinetune", "Whole backbone + head trained (upper-bound baseline)"),
):
    register_method(_info)
