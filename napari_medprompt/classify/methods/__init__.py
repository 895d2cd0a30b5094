"""Registry entries of the built-in adapter methods: names, import paths, option schemas and
training defaults (no torch import: the CLI and the GUI list methods and build their forms from here).

Training defaults are AdamW with a cosine schedule (the project's one loop). Where a paper gives a
schedule for the few-shot setting it is cited in ``TrainDefaults.note``; otherwise the values are the
project's defaults for few-shot data (tens of images per class) and say so.
"""

from napari_medprompt.classify.base import MethodInfo, OptionSpec, TrainDefaults, register_method

_M = "napari_medprompt.classify.methods."
_TEMPLATES = ["a radiology image of {}.", "a medical image showing {}.", "a scan with {}."]  # = _text.DEFAULT_TEMPLATES
_PROJECT = "project default for few-shot data (AdamW, cosine schedule)"


def _templates(help_: str = "class prompt templates, '{}' is replaced by the class name") -> OptionSpec:
    return OptionSpec("templates", list, list(_TEMPLATES), help_, item_type=str)


def _head(choices=("auto", "linear", "text"), help_=None) -> OptionSpec:
    return OptionSpec(
        "head", str, "auto",
        help_ or "classifier: linear, or text (cosine classifier initialised from the class-name text "
        "embeddings, needs CLIP); auto = text on CLIP, linear otherwise",
        choices=choices,
    )


def _n_prompts(default: int, minimum: int, help_: str) -> OptionSpec:
    return OptionSpec("n_prompts", int, default, help_, min=minimum, max=256)


_LOGIT_SCALE = OptionSpec("logit_scale", float, 100.0, "temperature of the cosine logits (CLIP's trained value is 100)", min=1e-3, max=1e4)
_TRAINING_FREE = TrainDefaults(epochs=0, note="training-free: nothing is optimised")

_ENTRIES = (
    MethodInfo(
        "zero-shot", _M + "zero_shot:ZeroShot", "CLIP with class text prompts, no training", needs_text=True,
        options=(
            _templates(),
            OptionSpec("class_prompts", dict, None, "optional {class: [phrases]} used in the templates instead of the class name"),
            _LOGIT_SCALE,
        ),
        defaults=_TRAINING_FREE,
    ),
    MethodInfo(
        "linear-probe", _M + "linear_probe:LinearProbe", "Logistic head on frozen features", cached_features=True,
        options=(OptionSpec("normalize", str, "standardize", "feature normalisation before the head", choices=("standardize", "l2", "none")),),
        defaults=TrainDefaults(lr=1e-3, epochs=50, batch_size=32, weight_decay=1e-4, note=_PROJECT),
    ),
    MethodInfo(
        "clip-adapter", _M + "clip_adapter:ClipAdapter", "Bottleneck MLP on image features, residual blend", cached_features=True,
        options=(
            OptionSpec("ratio", float, 0.2, "residual ratio alpha: weight of the adapted feature (Gao et al.)", min=0.0, max=1.0),
            OptionSpec("reduction", int, 4, "bottleneck reduction factor of the MLP", min=1, max=1024),
            _head(help_="text: the frozen CLIP text classifier (the paper); linear: a trained linear head; auto = text on CLIP"),
            _templates(), _LOGIT_SCALE,
        ),
        defaults=TrainDefaults(lr=1e-3, epochs=50, batch_size=32, weight_decay=1e-4, note=_PROJECT),
    ),
    MethodInfo(
        "tip-adapter", _M + "tip_adapter:TipAdapter", "Training-free cache model over few-shot features", cached_features=True, needs_text=True,
        options=(
            OptionSpec("alpha", float, 1.0, "weight of the cache logits (residual ratio)", min=0.0, max=100.0),
            OptionSpec("beta", float, 5.5, "sharpness of the cache affinities", min=0.0, max=100.0),
            OptionSpec("text_weight", float, 1.0, "weight of the zero-shot text logits", min=0.0, max=100.0),
            _templates(), _LOGIT_SCALE,
        ),
        defaults=_TRAINING_FREE,
    ),
    MethodInfo(
        "tip-adapter-f", _M + "tip_adapter:TipAdapterF", "Tip-Adapter with learnable cache keys", cached_features=True, needs_text=True,
        options=(
            OptionSpec("alpha", float, 1.0, "weight of the cache logits (residual ratio)", min=0.0, max=100.0),
            OptionSpec("beta", float, 5.5, "sharpness of the cache affinities", min=0.0, max=100.0),
            OptionSpec("text_weight", float, 1.0, "weight of the zero-shot text logits", min=0.0, max=100.0),
            _templates(), _LOGIT_SCALE,
        ),
        defaults=TrainDefaults(lr=1e-3, epochs=20, batch_size=32, weight_decay=1e-4,
                               note="AdamW lr 1e-3 as in Tip-Adapter-F (Zhang et al. 2022, sec. 4.1); epochs/batch: project default"),
    ),
    MethodInfo(
        "vpt-shallow", _M + "vpt:VPTShallow", "Learnable prompt tokens at the ViT input",
        options=(_n_prompts(8, 1, "number of learnable prompt tokens"), _head(), _templates()),
        defaults=TrainDefaults(lr=1e-2, epochs=30, batch_size=16, weight_decay=1e-4, note=_PROJECT),
    ),
    MethodInfo(
        "vpt-deep", _M + "vpt:VPTDeep", "Learnable prompt tokens in every ViT layer",
        options=(_n_prompts(8, 1, "number of learnable prompt tokens per layer"), _head(), _templates()),
        defaults=TrainDefaults(lr=1e-2, epochs=30, batch_size=16, weight_decay=1e-4, note=_PROJECT),
    ),
    MethodInfo(
        "visual-prompt", _M + "visual_prompt:VisualPrompt", "Learnable pixel-space padding prompt (Bahng et al.)",
        options=(
            OptionSpec("pad", int, None, "width of the prompt frame in pixels (default: 30 px at 224 px, scaled)", min=1, max=4096),
            OptionSpec("init_std", float, 1.0, "std of the frame's N(0, std) initialisation (the paper: 1)", min=0.0, max=100.0),
            _head(("auto", "linear", "text", "text-init"),
                  "text: frozen CLIP text classifier, only the frame trains (the paper); text-init: the class "
                  "weights train too; linear: a trained linear head; auto = text on CLIP, linear otherwise"),
            _templates(),
        ),
        defaults=TrainDefaults(lr=1e-2, epochs=30, batch_size=16, weight_decay=0.0, note=_PROJECT),
    ),
    MethodInfo(
        "movl", _M + "movl:MoVL",
        "MoVL-style visual prompt + linear probe with a discrepancy term (cosine distance prompted vs plain, "
        "weight 0.1, zero-initialised prompt: this project's choices; the paper's exact form was not verifiable)",
        options=(
            OptionSpec("pad", int, None, "width of the prompt frame in pixels (default: 30 px at 224 px, scaled)", min=1, max=4096),
            OptionSpec("discrepancy_weight", float, 0.1, "weight of the discrepancy term 1 - cos(f(x+p), f(x)) (project default)", min=0.0, max=100.0),
            OptionSpec("init_std", float, 0.0, "std of the prompt frame's N(0, std) initialisation (0 = start from the plain linear probe)", min=0.0, max=100.0),
        ),
        defaults=TrainDefaults(lr=1e-2, epochs=30, batch_size=16, weight_decay=1e-4, note=_PROJECT),
    ),
    MethodInfo(
        "mask-guided-clip", _M + "mask_guided:MaskGuidedClip",
        "MedFocusCLIP-style: the segmented region (pixel-wise attention) through frozen CLIP, image-text "
        "fusion head, loss lambda*CE + (1-lambda)*alignment; trains on cached features",
        uses_masks=True, cached_features=True,
        options=(
            OptionSpec("guidance", str, "segment", "how the mask acts on the input: segment = the segmented image "
                       "(pixel-wise attention, the paper); overlay = colour tint of the region (earlier variant); none",
                       choices=("segment", "overlay", "none")),
            OptionSpec("outside", float, 0.0, "segment: fraction of the image kept outside the mask (0 = black)", min=0.0, max=1.0),
            OptionSpec("colour", list, [1.0, 0.0, 0.0], "overlay: RGB colour of the tint, each in [0, 1]", min=0.0, max=1.0, item_type=float, length=3),
            OptionSpec("alpha", float, 0.5, "overlay: opacity of the tint", min=0.0, max=1.0),
            OptionSpec("attention_bias", str, "none", "extension (ViT only): bias the class token's attention to the "
                       "mask's patches; disables cached features", choices=("none", "restrict", "upweight")),
            OptionSpec("bias_strength", float, 2.0, "strength of the 'upweight' bias", min=0.0, max=50.0),
            OptionSpec("bias_layers", int, None, "number of last blocks that get the bias (default: all)", min=1, max=1000),
            _n_prompts(0, 0, "learnable VPT-shallow prompt tokens (ViT only; 0 = none; >0 disables cached features)"),
            _head(("auto", "fusion", "text", "linear"),
                  "fusion: image-text fusion head with the alignment loss (the paper's structure); text: cosine "
                  "classifier from the class text; linear; auto = fusion on CLIP, linear otherwise"),
            OptionSpec("loss_weight", float, 0.5, "lambda in L = lambda*L_cls + (1-lambda)*L_align (fusion head)", min=0.0, max=1.0),
            _templates(),
        ),
        defaults=TrainDefaults(lr=1e-3, epochs=50, batch_size=32, weight_decay=1e-4, note=_PROJECT + "; cached features"),
    ),
    MethodInfo(
        "segprompt", _M + "segprompt:SegPrompt",
        "SegPrompt: segmentation tokens with their own position embeddings join the image tokens of a frozen ViT",
        uses_masks=True,
        options=(
            OptionSpec("mask_fusion", str, "concat", "concat: segmentation tokens as their own stream in the sequence "
                       "(the paper); add: mask tokens added to the patch tokens (earlier variant)", choices=("concat", "add")),
            OptionSpec("seg_grid", int, None, "concat: segmentation tokens per side (default: one per image patch)", min=1, max=256),
            _n_prompts(4, 0, "learnable prompt tokens after the class token (0 = none)"), _head(), _templates(),
        ),
        defaults=TrainDefaults(lr=1e-3, epochs=30, batch_size=16, weight_decay=1e-4, note=_PROJECT),
    ),
    MethodInfo(
        "full-finetune", _M + "full_finetune:FullFinetune", "Whole backbone + head trained (upper-bound baseline)",
        options=(
            OptionSpec("backbone_lr", float, 1e-5, "learning rate of the image encoder (the head uses the run's lr)", min=0.0, max=1.0),
        ),
        defaults=TrainDefaults(lr=1e-3, epochs=10, batch_size=16, weight_decay=0.1,
                               note="head lr 1e-3; backbone lr 1e-5 and weight decay 0.1 as in CLIP fine-tuning "
                               "(WiSE-FT, Wortsman et al. 2022: AdamW, lr 3e-5, wd 0.1; FLYP, Goyal et al. 2023: lr 1e-5)"),
    ),
)

for _info in _ENTRIES:
    register_method(_info)
