"""SAM2 adapted on clinicians' corrected masks: the trainable model the training loop runs.

Methods (``SAM2_METHODS``):

=========================  ==========================================  ===============================
method                     what trains                                 path
=========================  ==========================================  ===============================
``sam2-adapter``           Hiera adapters (:mod:`.sam2_adapters`)       image encoder every step
``sam2-adapter-decoder``   Hiera adapters + mask decoder                image encoder every step
``sam2-decoder``           mask decoder only                            cached image features (CPU)
=========================  ==========================================  ===============================

The base SAM2 network (:class:`Sam2Base`, the run's "backbone") stays frozen and unmodified: the
adapters hook into its trunk, and a trained decoder is a *copy* of the base mask decoder (its
``conv_s0`` / ``conv_s1`` projections, which SAM2 applies inside the image encoder's path, stay
frozen so cached features remain exact). The store record carries the base model's name, the SHA-256
of its checkpoint file and the hash of its state; an adapter only loads onto that exact base.

Forward path (not ``SAM2ImagePredictor``, whose ``set_image``/``predict`` run without gradients):
``forward_image`` -> ``_prepare_backbone_features`` -> ``+ no_mem_embed`` -> prompt encoder (box
corners as points with labels 2/3, then clicks; padded clicks have label -1) -> mask decoder
(``multimask_output=False``) -> low-resolution logits ((image_size / 4)^2), resized bilinearly to the
input size. Loss: MONAI ``DiceCELoss(sigmoid=True)`` (Dice + BCE 1:1) on those logits against the
corrected mask at the input size.

In the training loop the data is :meth:`Sam2PairData.to_segdata() <.pairs.Sam2PairData.to_segdata>`:
ordinary segmentation data whose "text prompt" per slice is a :class:`~.pairs.PairKey` (the
structure name carrying the corrected and original masks); :meth:`Sam2AdapterModel.seg_logits`
turns it into a simulated box + clicks prompt (training mode, the model's own seeded generator) or
the fixed validation prompt (eval mode). Inputs: the slice windowed to [0, 1] with its model window, replicated to RGB, then
SAM2's own transforms (square resize to ``image_size``, ImageNet mean/std), exactly as the
segmentation engine (:mod:`napari_medprompt.segment.sam2_backend`) feeds the model.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_medprompt.seg_adapters.pairs import PairKey, SimPrompt, fixed_prompt, simulate_prompt
from napari_medprompt.seg_adapters.sam2_adapters import HieraAdapters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sam2Method:
    name: str
    adapters: bool
    decoder: bool
    cached: bool
    lr: float
    description: str


SAM2_METHODS: dict[str, Sam2Method] = {
    m.name: m
    for m in (
        Sam2Method("sam2-adapter", True, False, False, 1e-4,
                   "Bottleneck adapters in every Hiera block of the frozen SAM2 image encoder"),
        Sam2Method("sam2-adapter-decoder", True, True, False, 1e-4,
                   "Hiera adapters plus the SAM2 mask decoder (a trainable copy)"),
        Sam2Method("sam2-decoder", False, True, True, 1e-5,
                   "SAM2 mask decoder only, on cached image features (the CPU-friendly option)"),
    )
}


class AdapterMismatch(ValueError):
    """An adapter file that does not belong to the base model it is loaded onto."""


def state_sha256(module: nn.Module) -> str:
    """SHA-256 over a module's state dict (names, dtypes, shapes, bytes), in key order."""
    h = hashlib.sha256(b"state/1")
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class Sam2Base(nn.Module):
    """The frozen base SAM2 network with what identifies it: model name, checkpoint, random weights."""

    def __init__(self, net, model: str, checkpoint: str | Path | None, random_weights: bool):
        super().__init__()
        from napari_medprompt.models.cache import sha256_file

        self.net = net
        self.name = model
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.checkpoint_sha256 = None if checkpoint is None else sha256_file(checkpoint)
        self.pretrained = "random" if checkpoint is None else f"sha256:{self.checkpoint_sha256}"
        self.random_weights = bool(random_weights)
        self.mean, self.std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # SAM2's input normalisation
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()
        self._hash = None

    @classmethod
    def build(cls, model: str = "sam2.1-hiera-tiny", checkpoint=None, device: str = "cpu", *, image_size=None,
              progress=None) -> Sam2Base:
        """Build ``model`` (a SAM2 / MedSAM2 name) from its real config with ``checkpoint`` (a file,
        ``"random"`` or None = the published file). ``image_size`` overrides the input size (tests)."""
        from napari_medprompt.models.sam2_weights import build_model, resolve_checkpoint

        path = resolve_checkpoint(model, checkpoint, progress)
        extra = () if image_size is None else (f"++model.image_size={int(image_size)}",)
        net, random_weights = build_model(model, path, device, hydra_overrides=extra)
        return cls(net, model, path, random_weights)

    def state_hash(self) -> str:
        if self._hash is None:
            self._hash = state_sha256(self.net)
        return self._hash

    @property
    def image_size(self) -> int:
        return int(self.net.image_size)

    def describe(self) -> dict:
        return {"model": self.name, "checkpoint": self.checkpoint, "checkpoint_sha256": self.checkpoint_sha256,
                "state_sha256": self.state_hash(), "random_weights": self.random_weights,
                "image_size": self.image_size}


class Sam2AdapterModel(nn.Module):
    """One of ``SAM2_METHODS`` on a frozen :class:`Sam2Base`. See the module docstring."""

    classes = ("foreground",)
    trains_backbone = False
    task = "segmentation"

    def __init__(self, backbone: Sam2Base, method: str = "sam2-adapter", *, ratio: float | None = 0.25,
                 width: int | None = None, mlp_scale: float = 0.5, jitter: float = 0.1, max_shift: float = 20.0,
                 max_clicks: int = 3, eval_clicks: int = 1, seed: int = 0):
        super().__init__()
        if method not in SAM2_METHODS:
            raise ValueError(f"unknown SAM2 adapter method {method!r}; choose one of {', '.join(SAM2_METHODS)}")
        self.method = SAM2_METHODS[method]
        self.name = method
        self.backbone = backbone
        net = backbone.net
        self.opts = {"ratio": ratio, "width": width, "mlp_scale": float(mlp_scale), "jitter": float(jitter),
                     "max_shift": float(max_shift), "max_clicks": int(max_clicks), "eval_clicks": int(eval_clicks),
                     "seed": int(seed)}
        self._rng = np.random.default_rng(int(seed))
        if self.method.adapters:
            self.adapters = HieraAdapters(net.image_encoder.trunk, ratio, width, mlp_scale)
            self.adapters.attach(net.image_encoder.trunk)
        if self.method.decoder:
            self.decoder = copy.deepcopy(net.sam_mask_decoder)
            for name, p in self.decoder.named_parameters():
                p.requires_grad_(not name.startswith(("conv_s0", "conv_s1")))
        self.cached_features = self.method.cached
        self.image_size = backbone.image_size
        self.low_res = self.image_size // 4
        # the loop's preprocessing: slices arrive windowed to [0, 1] (Sam2PairData.to_segdata), which
        # the window (level 0.5, width 1) keeps as they are; square resize (no padding) as SAM2 does
        self.preprocess = {
            "image_size": self.image_size, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "intensity": "window", "window": [0.5, 1.0], "pad_to_square": False,
            "input": "slice windowed to [0, 1] with its model window, RGB, square resize",
        }
        self._loss = None
        self.train(False)

    # ------------------------------------------------------------------ bookkeeping
    def method_config(self) -> dict:
        return dict(self.opts)

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def prepare(self, feats=None, y=None) -> None:
        """Nothing to set up from the training data (the loop calls this before the first step)."""
        return None

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.net.eval()  # the frozen base never leaves eval mode...
        # ...except its decoder's flag: in training mode SAM2's stability fallback is off (one mask)
        self.mask_decoder.train(mode)
        return self

    @property
    def mask_decoder(self):
        return self.decoder if self.method.decoder else self.backbone.net.sam_mask_decoder

    def detach_adapters(self) -> None:
        if self.method.adapters:
            self.adapters.detach()

    def attach_adapters(self) -> None:
        if self.method.adapters:
            self.adapters.attach(self.backbone.net.image_encoder.trunk)

    # ------------------------------------------------------------------ inputs
    def images_to_tensor(self, images, windows) -> torch.Tensor:
        return images_to_tensor(images, windows, self.image_size)

    def prompt_tensors(self, prompts: list[SimPrompt], device=None):
        """Point coordinates (B, K, 2) as SAM2 (x, y) input pixels and labels (B, K): box corners
        (labels 2, 3) first, then clicks (1 / 0), padded with label -1."""
        rows = []
        for p in prompts:
            pts, lab = [], []
            if p.box is not None:
                r0, c0, r1, c1 = p.box
                pts += [(c0, r0), (c1, r1)]
                lab += [2, 3]
            pts += [(float(c), float(r)) for r, c in p.points]
            lab += [int(v) for v in p.labels]
            rows.append((pts, lab))
        k = max(1, max(len(r[1]) for r in rows))
        coords = torch.zeros(len(rows), k, 2)
        labels = -torch.ones(len(rows), k, dtype=torch.int32)
        for i, (pts, lab) in enumerate(rows):
            if lab:
                coords[i, : len(lab)] = torch.tensor(pts, dtype=torch.float32)
                labels[i, : len(lab)] = torch.tensor(lab, dtype=torch.int32)
        return coords.to(device), labels.to(device)

    # ------------------------------------------------------------------ forward
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[s0 (B,32,S/4,S/4), s1 (B,64,S/8,S/8), image embedding (B,256,S/16,S/16)] as SAM2's image
        predictor prepares them (``no_mem_embed`` added)."""
        net = self.backbone.net
        out = net.forward_image(x)
        _, feats, _, sizes = net._prepare_backbone_features(out)
        if net.directly_add_no_mem_embed:
            feats[-1] = feats[-1] + net.no_mem_embed
        b = x.shape[0]
        return [f.permute(1, 2, 0).reshape(b, -1, *s) for f, s in zip(feats, sizes)]

    def decode(self, feats: list[torch.Tensor], coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Low-resolution mask logits (B, 1, S/4, S/4) for point/box prompts."""
        pe = self.backbone.net.sam_prompt_encoder
        sparse, dense = pe(points=(coords, labels), boxes=None, masks=None)
        low, _iou, _tok, _obj = self.mask_decoder(
            image_embeddings=feats[2], image_pe=pe.get_dense_pe(), sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, multimask_output=False, repeat_image=False,
            high_res_features=[feats[0], feats[1]],
        )
        return low

    def encode_for_cache(self, x: torch.Tensor, m=None) -> torch.Tensor:
        """Flattened features (N, D) for the cached path (the frozen encoder's output)."""
        with torch.no_grad():
            f = self.encode(x)
        return torch.cat([t.reshape(t.shape[0], -1) for t in f], 1)

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        s = self.image_size
        shapes = [(32, s // 4, s // 4), (64, s // 8, s // 8), (256, s // 16, s // 16)]
        out, i = [], 0
        for c, h, w in shapes:
            n = c * h * w
            out.append(flat[:, i : i + n].reshape(-1, c, h, w))
            i += n
        return out

    def loss_function(self):
        """MONAI ``DiceCELoss(sigmoid=True)``: Dice + BCE 1:1 on the logits."""
        if self._loss is None:
            from monai.losses import DiceCELoss

            self._loss = DiceCELoss(sigmoid=True)
        return self._loss

    def seg_prompts(self, t, idx, generator=None) -> list[SimPrompt]:
        """Prompts for the samples ``idx`` of the split ``t`` (see :func:`pair_tensors`): simulated
        afresh (jittered box + 0..max_clicks error clicks) from ``generator``, or, with ``generator``
        None, the fixed validation prompts (tight box + ``eval_clicks`` deterministic clicks)."""
        idx = torch.as_tensor(idx).reshape(-1).tolist()
        if generator is None:
            return [fixed_prompt(t.extra[i][1]["target"], t.extra[i][1]["original"], self.opts["eval_clicks"])
                    for i in idx]
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        out = []
        for i in idx:
            e = t.extra[i][1]
            out.append(simulate_prompt(e["target"], e["original"], rng, jitter=self.opts["jitter"],
                                       max_shift=self.opts["max_shift"] * e["scale"],
                                       max_clicks=self.opts["max_clicks"]))
        return out

    def seg_logits(self, x: torch.Tensor, prompts) -> torch.Tensor:
        """Logits (B, 1, S, S) at the input size for inputs ``x``. ``prompts``: :class:`SimPrompt`s in
        input pixels, or the loop's :class:`PairKey` prompts, from which a box + clicks prompt is
        simulated (training mode) or the fixed validation prompt built (eval mode)."""
        coords, labels = self.prompt_tensors(self.as_prompts(prompts), x.device)
        return self._full(self.decode(self.encode(x), coords, labels))

    def seg_logits_from_features(self, feats: torch.Tensor, prompts) -> torch.Tensor:
        """As :meth:`seg_logits` from :meth:`encode_for_cache` features (the decoder-only path)."""
        coords, labels = self.prompt_tensors(self.as_prompts(prompts), feats.device)
        return self._full(self.decode(self.unflatten(feats), coords, labels))

    def _full(self, low: torch.Tensor) -> torch.Tensor:
        return F.interpolate(low, (self.image_size, self.image_size), mode="bilinear", align_corners=False)

    def as_prompts(self, prompts) -> list[SimPrompt]:
        """:class:`SimPrompt`s in input pixels; :class:`PairKey`s become simulated (training mode, the
        model's own seeded generator) or fixed (eval mode) prompts, scaled from slice to input pixels."""
        out = []
        for p in prompts:
            if isinstance(p, SimPrompt):
                out.append(p)
                continue
            if not isinstance(p, PairKey):
                raise ValueError(f"{self.name} trains on prompted pairs (box and clicks simulated from corrected "
                                 f"masks: Sam2PairData.to_segdata()), not on text prompts such as {str(p)!r}")
            t, o = p.material["target"], p.material["original"]
            if self.training:
                sp = simulate_prompt(t, o, self._rng, jitter=self.opts["jitter"], max_shift=self.opts["max_shift"],
                                     max_clicks=self.opts["max_clicks"])
            else:
                sp = fixed_prompt(t, o, self.opts["eval_clicks"])
            h, w = np.shape(t)
            sy, sx = self.image_size / h, self.image_size / w
            box = None if sp.box is None else (sp.box[0] * sy, sp.box[1] * sx, sp.box[2] * sy, sp.box[3] * sx)
            out.append(SimPrompt(box, sp.points * np.array([sy, sx], np.float32), sp.labels))
        return out

    # ------------------------------------------------------------------ inference on one slice
    def predict_mask(self, image: np.ndarray, window, prompt: SimPrompt) -> np.ndarray:
        """(H, W) bool mask for one slice and a prompt in its (row, col) pixels, as the engine
        computes it (low-res logits resized bilinearly to the slice, threshold 0)."""
        h, w = np.shape(image)
        sy, sx = self.image_size / h, self.image_size / w
        scaled = SimPrompt(
            None if prompt.box is None else (prompt.box[0] * sy, prompt.box[1] * sx, prompt.box[2] * sy, prompt.box[3] * sx),
            np.asarray(prompt.points, np.float32).reshape(-1, 2) * np.array([sy, sx], np.float32), prompt.labels,
        )
        with torch.no_grad():
            was = self.training
            self.train(False)
            x = self.images_to_tensor([image], [window])
            coords, labels = self.prompt_tensors([scaled])
            low = self.decode(self.encode(x), coords, labels)
            self.train(was)
        up = F.interpolate(low, (h, w), mode="bilinear", align_corners=False)
        return (up[0, 0] > 0).numpy()


def images_to_tensor(images, windows, size: int) -> torch.Tensor:
    """(N, 3, S, S) SAM2 inputs: each slice windowed to [0, 1] with its window, RGB, SAM2's transforms
    (square resize to ``size``, ImageNet mean/std) exactly as the segmentation engine feeds them."""
    from sam2.utils.transforms import SAM2Transforms

    from napari_medprompt.imaging.normalize import window_to_unit

    tf = SAM2Transforms(resolution=int(size), mask_threshold=0.0)
    out = []
    for im, win in zip(images, windows):
        unit = window_to_unit(np.asarray(im), tuple(win))
        out.append(tf(np.repeat(unit[..., None], 3, axis=2)))
    return torch.stack(out)


def resize_mask(mask, size: int) -> np.ndarray:
    """A binary mask on a ``size`` x ``size`` grid (area average > 0.5: SAM2's square resize)."""
    t = torch.as_tensor(np.asarray(mask, np.float32))[None, None]
    return (F.interpolate(t, (size, size), mode="area")[0, 0] > 0.5).numpy()


def pair_tensors(ds, size: int):
    """A :class:`~.pairs.Sam2PairData` split as the loop sees it: ``x`` (N, 3, S, S) inputs, ``y``
    (N, 1, S, S) targets at the input size, ``extra[i] = (structure, material)`` with
    the target and original masks on the input grid and the slice-to-input ``scale`` (for the box
    jitter cap in slice pixels), ``strata`` all 1 (every pair shows its structure)."""
    from napari_medprompt.train.task import Tensors

    ds.validate()
    size = int(size)
    x = images_to_tensor(ds.images, ds.windows, size)
    y = torch.stack([torch.as_tensor(resize_mask(m, size), dtype=torch.float32)[None] for m in ds.masks])
    extra = []
    for m, o in zip(ds.masks, ds.originals):
        extra.append(("foreground", {"target": resize_mask(m, size),
                                     "original": None if o is None else resize_mask(o, size),
                                     "scale": size / max(np.shape(m))}))
    return Tensors(x, None, y, extra=extra, strata=torch.ones(len(x), dtype=torch.long))


def build_sam2_method(config, structures=None, device="cpu") -> Sam2AdapterModel:
    """The training loop's builder: ``config.method`` on ``config.backbone`` (a SAM2 / MedSAM2 model
    name) with ``config.pretrained`` (a checkpoint file, "random", or "default"/None = the published
    file through the weight cache); ``config.method_options`` go to :class:`Sam2AdapterModel`
    (``image_size`` there rebuilds the base at another input size: tests only)."""
    opts = dict(config.method_options or {})
    image_size = opts.pop("image_size", None)
    pretrained = config.pretrained
    if pretrained in ("default", ""):
        pretrained = None
    backbone = config.backbone if config.backbone in _sam2_names() else "sam2.1-hiera-tiny"
    if config.backbone not in _sam2_names() and config.backbone not in (None, "", "ViT-B-16"):
        raise ValueError(f"{config.method} adapts a SAM2 model; {config.backbone!r} is not one "
                         f"({', '.join(_sam2_names())})")
    base = Sam2Base.build(backbone, pretrained, device, image_size=image_size)
    return Sam2AdapterModel(base, config.method, **opts).to(device)


def _sam2_names() -> list[str]:
    from napari_medprompt.models.sam2_weights import MEDSAM2_MODELS, SAM2_MODELS

    return [*SAM2_MODELS, *MEDSAM2_MODELS]


def dice_iou(logits: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Mean per-image Dice and IoU of ``logits > 0`` against binary targets (empty vs empty = 1)."""
    p = (logits > 0).flatten(1).float()
    g = (target > 0.5).flatten(1).float()
    inter = (p * g).sum(1)
    tot = p.sum(1) + g.sum(1)
    union = tot - inter
    dice = torch.where(tot > 0, 2 * inter / tot.clamp(min=1), torch.ones_like(tot))
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(tot))
    return float(dice.mean()), float(iou.mean())
