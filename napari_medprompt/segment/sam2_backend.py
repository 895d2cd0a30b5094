"""SAM 2 / SAM 2.1 as a :class:`~napari_medprompt.segment.base.Segmenter`.

One network (built by :mod:`napari_medprompt.models.sam2_weights`) serves clicks on a slice (SAM2's
image-predictor path: prompt encoder + mask decoder over cached slice embeddings) and propagation
through a volume, in one of two modes behind the same call:

- ``"memory"``: SAM2's video predictor with its memory bank, fed from memory
  (:mod:`napari_medprompt.segment.sam2_video`); its best quality, the default on a GPU.
- ``"projection"``: slice to slice with the image predictor, the previous slice's mask (as a mask
  prompt) and its box as the next prompt (the shared driver in
  :mod:`napari_medprompt.segment.propagation`); fast on a CPU, the default there.

Model input: the slice windowed to [0, 1] with the *model window* (the bound array is never
modified), replicated to 3 channels, then SAM2's own resize to 1024 and
ImageNet normalisation (``SAM2ImagePredictor``'s transforms). Coordinates: napari points
``(row, col)`` become SAM ``(x, y) = (col, row)`` and boxes ``(row0, col0, row1, col1)`` become
``(x0, y0, x1, y1) = (col0, row0, col1, row1)``, in pixel units of the slice.

Model window (``model_window``, :meth:`Sam2Segmenter.set_model_window`): by default the model sees
the slice through the window the clinician picked for the display (``display_preset``; the
modality's default preset until one is picked), unless the checkpoint declares its own convention
(MedSAM / MedSAM2 checkpoints: CT level 40 / width 400, MR 0.5-99.5 percentiles; see
:mod:`napari_medprompt.imaging.window`), which then applies. An explicit preset name, convention name
or ``(low, high)`` overrides both. The window is part of the embedding-cache signature, so changing
it never serves embeddings computed through another window; ``weights_status()`` and
``provenance_info()`` report it.

Speed (CPU): embeddings are cached per slice (:mod:`embedding_cache`), the dense positional
encoding of the decoder is computed once, only the chosen mask is upsampled, everything runs under
``torch.inference_mode``, the mask decoder runs reordered for the CPU with the first layer's
prompt-independent projections of each slice computed once and reused by every click on it
(:mod:`sam2_decoder`; same masks as SAM2's decoder within float rounding) and, on CPUs with bfloat16 support, clicks run a bfloat16 copy of the mask
decoder on bfloat16 features (``decoder_bf16``; autocast would re-cast weights and features on
every click), and the image encoder and memory-mode tracking run under bfloat16 autocast
(``encoder_bf16``, ``memory_bf16``); measured in ``benchmarks/bench_segment.py``. On CUDA
everything runs under bfloat16 autocast, as SAM2 does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from napari_medprompt.imaging.normalize import window_to_unit
from napari_medprompt.imaging.window import (
    MODEL_WINDOW_CONVENTIONS,
    check_model_window_choice,
    resolve_model_window,
)
from napari_medprompt.models.sam2_weights import RANDOM_SEED, build_model, model_spec, resolve_checkpoint
from napari_medprompt.segment.base import PromptError, PropagationSettings, Prompt, SliceResult
from napari_medprompt.segment.embedding_cache import EmbeddingCache, file_fingerprint, image_digest
from napari_medprompt.segment.sam2_decoder import (
    build_cpu_decoder,
    channels_last,
    decode_masks,
    image_projections,
    mask_to_logits,
)
from napari_medprompt.segment.validate import (
    check_image,
    check_prompt,
    check_slice_index,
    require_volume,
)

log = logging.getLogger(__name__)

MODES = ("auto", "memory", "projection")
DEFAULT_CACHE_BYTES = 1 << 30  # ~64 slices of SAM2 features (16 MiB each)
PROJECTION_SLICES = 4  # slices whose first-layer decoder projections are kept (~14 MiB each in float32)


def pick_device(device: str = "auto") -> str:
    """``"auto"``: CUDA, else Apple MPS, else CPU. An explicit choice is checked."""
    import torch

    if device in (None, "auto"):
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    dev = str(device)
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {dev!r} was asked for but CUDA is not available here; use 'auto' or 'cpu'")
    if dev == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for but Apple MPS is not available here; use 'auto' or 'cpu'")
    return dev


def checkpoint_window_convention(checkpoint: str | os.PathLike | None) -> str | None:
    """The window convention a checkpoint declares (a name in ``MODEL_WINDOW_CONVENTIONS``) or None.

    Declared by a JSON sidecar beside the file (``<file>.json`` or ``<stem>.json`` holding
    ``{"window_convention": "medsam2"}``), else recognised from a published file name (MedSAM2's
    ``MedSAM2_*.pt`` -> "medsam2", ``medsam_*`` -> "medsam"). Meta's SAM 2 files declare none.
    """
    import json

    if checkpoint is None:
        return None
    path = Path(checkpoint)
    for side in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if side.is_file():
            try:
                declared = json.loads(side.read_text()).get("window_convention")
            except (OSError, ValueError, AttributeError) as err:
                raise ValueError(f"{side}: not a readable checkpoint description ({err})") from None
            if declared is None:
                continue
            if declared not in MODEL_WINDOW_CONVENTIONS:
                raise ValueError(
                    f"{side}: unknown window_convention {declared!r}; known: {', '.join(MODEL_WINDOW_CONVENTIONS)}"
                )
            return str(declared)
    name = path.name.lower()
    if name.startswith("medsam2"):
        return "medsam2"
    if name.startswith("medsam"):
        return "medsam"
    return None


def _cpu_has_bf16() -> bool:
    try:
        import torch

        return bool(torch.backends.mkldnn.is_available()) and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except Exception:
        return False


class Sam2Segmenter:
    """SAM2 backend. See the module docstring for conventions and modes.

    Parameters: ``model`` (a name from ``SAM2_MODELS``), ``checkpoint`` (local file, ``"random"``, or
    None to use / download the published file), ``device`` ("auto", "cuda", "mps", "cpu"),
    ``propagation_mode`` ("auto": memory on CUDA, projection elsewhere), ``cache_dir`` (disk cache of
    embeddings: None = memory only, True = ``<cache>/sam2_embeddings``, or a folder), ``cache_bytes``
    (memory budget), ``progress`` (download callback), ``encoder_bf16`` / ``decoder_bf16`` /
    ``memory_bf16`` (bfloat16 for the image encoder / clicks / memory-mode tracking on the CPU;
    None = on where the CPU supports bfloat16; always on for CUDA, as SAM2 itself runs),
    ``memory_frames`` (memory mode: how many past frames the memory bank holds, SAM2's default 6;
    fewer is faster, see :mod:`sam2_video`), ``offload_state`` (memory mode on a GPU: keep SAM2's
    per-frame memories in CPU memory), ``model_window`` (None: the checkpoint's window convention
    when it declares one, else follow the display preset; or ``"display"``, a preset name, a
    convention name, ``(low, high)``), ``window_convention`` (declare the checkpoint's convention,
    e.g. ``"medsam2"``; None = read it from the checkpoint, see :func:`checkpoint_window_convention`).

    ``weights_status()`` returns what the GUI shows (model, checkpoint, random weights, device).
    """

    def __init__(
        self,
        model: str = "sam2.1-hiera-tiny",
        checkpoint: str | os.PathLike | None = None,
        device: str = "auto",
        propagation_mode: str = "auto",
        cache_dir: str | os.PathLike | bool | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        *,
        progress=None,
        decoder_bf16: bool | None = None,
        memory_frames: int | None = None,
        memory_bf16: bool | None = None,
        encoder_bf16: bool | None = None,
        offload_state: bool = False,
        model_window=None,
        window_convention: str | None = None,
    ) -> None:
        import torch
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        if propagation_mode not in MODES:
            raise ValueError(f"propagation_mode must be one of {MODES}, got {propagation_mode!r}")
        self.spec = model_spec(model)
        self.name = self.model_name = model
        self.device = pick_device(device)
        self.checkpoint_path: Path | None = resolve_checkpoint(model, checkpoint, progress)
        self.net, self.random_weights = build_model(model, self.checkpoint_path, self.device)
        self.predictor = SAM2ImagePredictor(self.net)
        self._transforms = self.predictor._transforms
        self.propagation_mode = propagation_mode
        self.cuda = self.device.startswith("cuda")
        cpu_bf16 = self.device == "cpu" and _cpu_has_bf16()
        self.decoder_bf16 = self.cuda or (cpu_bf16 if decoder_bf16 is None else bool(decoder_bf16))
        self.memory_bf16 = self.cuda or (cpu_bf16 if memory_bf16 is None else bool(memory_bf16))
        self.encoder_bf16 = self.cuda or (cpu_bf16 if encoder_bf16 is None else bool(encoder_bf16))
        self.memory_frames = memory_frames
        self.offload_state = bool(offload_state)
        # On a bfloat16 CPU the decoder runs as a bfloat16 copy (no per-call casts of weights and
        # features, which autocast would do on every click) and features are cached in bfloat16.
        self.feature_dtype = torch.bfloat16 if (self.cuda or (self.decoder_bf16 and cpu_bf16)) else torch.float32
        self._decoder_cpu: dict = {}
        self._projections: dict = {}  # (id of a slice's fpn2 tensor, dtype) -> (that tensor, ImageProjections)
        self.cache = EmbeddingCache(cache_bytes, prepare=self._as_feature_dtype)
        if cache_dir is True:
            from napari_medprompt.models.cache import cache_dir as _cache_dir

            cache_dir = _cache_dir("sam2_embeddings")
        self.cache_root = Path(cache_dir) if cache_dir not in (None, False) else None
        self.weights_id = (
            f"random-seed{RANDOM_SEED}" if self.checkpoint_path is None else file_fingerprint(self.checkpoint_path)
        )
        self.encoder_calls = 0
        self._pos_enc = None
        with torch.inference_mode():
            self._dense_pe = self.net.sam_prompt_encoder.get_dense_pe()
        self._image: np.ndarray | None = None
        self._lock = threading.RLock()
        if window_convention is None:
            window_convention = checkpoint_window_convention(self.checkpoint_path) or self.spec.window_convention
        elif window_convention not in MODEL_WINDOW_CONVENTIONS:
            raise ValueError(
                f"unknown window convention {window_convention!r}; choose one of {', '.join(MODEL_WINDOW_CONVENTIONS)}"
            )
        self.window_convention: str | None = window_convention
        self.model_window = model_window  # the user's choice (None = convention, else the display)
        self.display_preset: str | None = None
        self.window_source = ""
        self._explicit_window = False

    # ------------------------------------------------------------------ info
    def weights_status(self) -> dict:
        """What the GUI shows about the model: name, weights file, random or not, device."""
        return {
            "model": self.model_name,
            "checkpoint": None if self.checkpoint_path is None else str(self.checkpoint_path),
            "random_weights": self.random_weights,
            "device": self.device,
            "encoder_dtype": "bfloat16" if self.encoder_bf16 else "float32",
            "decoder_dtype": "bfloat16" if self.decoder_bf16 else "float32",
            "propagation_mode": self.resolved_mode(),
            "model_window": self.model_window_info(),
            "adapter": getattr(self, "adapter_info", None),
            "message": (
                f"{self.model_name} with RANDOM weights: masks are meaningless (tests / timing only)"
                if self.random_weights
                else f"{self.model_name} ({self.checkpoint_path.name}) on {self.device}"
            ),
        }

    def use_adapter(self, adapter=None) -> dict | None:
        """Use a trained SAM2 adapter (a file, or an adapted model on this network) instead of the
        base model; None switches back to the base model. Embeddings are then cached under the
        adapter's signature. See :mod:`napari_medprompt.seg_adapters.sam2_engine`."""
        from napari_medprompt.seg_adapters.sam2_engine import use_adapter

        return use_adapter(self, adapter)

    def model_window_info(self) -> dict:
        """The window the model sees: limits, where they came from, the choice and the convention."""
        win = getattr(self, "window", None)
        return {
            "window": None if win is None else [float(win[0]), float(win[1])],
            "source": self.window_source,
            "choice": self.model_window if isinstance(self.model_window, (str, type(None))) else list(self.model_window),
            "display_preset": self.display_preset,
            "convention": self.window_convention,
        }

    def provenance_info(self) -> dict:
        """Fields a commit records in the object's provenance besides backend / model / device."""
        return {
            "checkpoint": None if self.checkpoint_path is None else str(self.checkpoint_path),
            "model_window": self.model_window_info(),
        }

    def resolved_mode(self, mode: str | None = None) -> str:
        mode = mode or self.propagation_mode
        if mode in (None, "auto"):
            return "memory" if self.cuda else "projection"
        if mode not in ("memory", "projection"):
            raise PromptError(f"unknown propagation mode {mode!r}; use 'memory', 'projection' or 'auto'")
        return mode

    def _autocast(self, enabled: bool):
        import torch

        if not enabled:
            return contextlib.nullcontext()
        return torch.autocast("cuda" if self.cuda else "cpu", dtype=torch.bfloat16)

    # ------------------------------------------------------------------ binding
    def bind(
        self,
        image: np.ndarray,
        *,
        modality: str = "CT",
        window: tuple[float, float] | None = None,
        spacing: Sequence[float] | None = None,
        key: str | None = None,
        display_preset: str | None = None,
    ) -> None:
        """Use ``image`` from now on. ``window`` (low, high) fixes the model window for this image
        (overriding ``model_window``); ``display_preset`` is the display's preset the default
        model window follows (see the module docstring)."""
        arr = check_image(image)
        if display_preset is not None:
            self.display_preset = display_preset
        if window is not None:
            win, source = self._resolve_window(arr, modality, tuple(window))
        else:
            win, source = self._resolve_window(arr, modality, self.model_window)
        digest = image_digest(arr)
        with self._lock:
            self._image = arr  # a reference: never modified, never copied whole
            self._explicit_window = window is not None
            self._digest, self._key = digest, key
            self.window, self.window_source = win, source
            self.modality = modality
            self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
            self.is_2d = arr.ndim == 2
            self.n_slices = 1 if self.is_2d else arr.shape[0]
            self.slice_shape = tuple(arr.shape[-2:])
            self.predictor._orig_hw = [self.slice_shape]
            self._open_cache()

    def _open_cache(self) -> None:
        arr = self._image
        self.cache.open(
            {
                "image": self._digest,
                "shape": list(arr.shape),
                "model": self.model_name,
                "weights": self.weights_id,
                "encoder_dtype": "bfloat16" if self.encoder_bf16 else "float32",
                "window": list(self.window),
            },
            self._key or self._digest,
            self.cache_root,
        )

    def _resolve_window(self, arr: np.ndarray, modality: str, choice) -> tuple[tuple[float, float], str]:
        try:
            win, source = resolve_model_window(
                arr, modality, choice, display_preset=self.display_preset, convention=self.window_convention
            )
        except ValueError as err:
            raise PromptError(str(err)) from None
        return (float(win[0]), float(win[1])), source

    def set_model_window(self, model_window=..., *, display_preset=...) -> tuple[float, float] | None:
        """Change what the model sees: ``model_window`` (see the class docstring) and/or the display
        preset the default follows. Re-windows the bound image (its values untouched) and switches
        the embedding cache to the new window's signature, so no embedding computed through the old
        window is served. Returns the model window now in force (None when no image is bound).
        Raises :class:`PromptError` for an unknown or invalid window, changing nothing.
        """
        choice = self.model_window if model_window is ... else model_window
        preset = self.display_preset if display_preset is ... else display_preset
        with self._lock:
            if self._image is None:
                try:
                    check_model_window_choice(choice)
                except ValueError as err:
                    raise PromptError(str(err)) from None
                self.model_window, self.display_preset = choice, preset
                return None
            if model_window is ... and self._explicit_window:
                self.display_preset = preset  # bind(window=...) fixed the window for this image
                return self.window
            old_preset = self.display_preset
            self.display_preset = preset
            try:
                win, source = self._resolve_window(self._image, self.modality, choice)
            except PromptError:
                self.display_preset = old_preset
                raise
            self.model_window = choice
            self._explicit_window = False
            if win != self.window:
                self.window = win
                self._open_cache()
            self.window_source = source
            return win

    def _require_bound(self) -> None:
        if self._image is None:
            raise PromptError("no image is bound: call bind(image) first")

    def slice_unit(self, z: int, bound: tuple | None = None) -> np.ndarray:
        """Slice ``z`` windowed to [0, 1] float32 (a new array); ``bound`` from :meth:`_bound`."""
        image, window, is_2d, _sig = bound if bound is not None else self._bound()
        sl = image if is_2d else image[z]
        return window_to_unit(sl, window)

    def _bound(self) -> tuple:
        """``(image, window, is_2d, cache signature id)`` of the binding, read together: an embedding
        computed from them is stored under that signature even if another image is bound meanwhile."""
        with self._lock:
            return self._image, self.window, self.is_2d, self.cache.sig_id

    # ------------------------------------------------------------------ embeddings
    def _encode(self, z: int, bound: tuple | None = None) -> dict:
        import torch

        unit = self.slice_unit(z, bound)
        rgb = np.repeat(unit[..., None], 3, axis=2)  # SAM2 expects RGB; ToTensor keeps float [0, 1]
        x = self._transforms(rgb)[None].to(self.device)
        with torch.inference_mode(), self._autocast(self.encoder_bf16):
            out = self.net.forward_image(x)
        self.encoder_calls += 1
        fpn = out["backbone_fpn"]
        return {"fpn0": fpn[0], "fpn1": fpn[1], "fpn2": fpn[2]}

    def features(self, z: int) -> dict:
        """Encoder features of slice ``z`` (cached), as ``{"fpn0", "fpn1", "fpn2"}`` tensors."""
        bound = self._bound()
        feats = self.cache.get(z, self.device, self.feature_dtype, sig_id=bound[3])
        if feats is None:
            feats = self._as_feature_dtype(self._encode(z, bound))
            self.cache.put(z, feats, sig_id=bound[3])
        return feats

    def _as_feature_dtype(self, feats: dict) -> dict:
        """Features as kept in the cache: ``feature_dtype``; channels_last off CUDA (fast decoder)."""
        fmt = (lambda t: t) if self.cuda else channels_last
        return {k: fmt(v.to(self.feature_dtype)) for k, v in feats.items()}

    def pos_enc(self, feats: dict) -> list:
        """The neck's positional encodings for the three levels (the same for every slice)."""
        import torch

        if self._pos_enc is None:
            pe = self.net.image_encoder.neck.position_encoding
            with torch.inference_mode():
                self._pos_enc = [pe(feats[k]).to(feats[k].dtype) for k in ("fpn0", "fpn1", "fpn2")]
        return self._pos_enc

    def prefetch(self, slices: Sequence[int], cancel: threading.Event | None = None) -> Iterator[int]:
        """Compute embeddings for ``slices`` in the given order (see ``prefetch_order``), yielding each.

        Already cached slices are yielded without work. Stops between slices when ``cancel`` is set.
        """
        self._require_bound()
        idx = [check_slice_index(z, self.n_slices, self.is_2d) for z in slices]
        for z in idx:
            if cancel is not None and cancel.is_set():
                return
            bound = self._bound()
            if not self.cache.contains(z):
                self.cache.put(z, self._as_feature_dtype(self._encode(z, bound)), sig_id=bound[3])
            yield z

    # ------------------------------------------------------------------ prediction
    def predict(self, slice_index: int, prompt: Prompt, object_id: int = 1) -> SliceResult:
        self._require_bound()
        z = check_slice_index(slice_index, self.n_slices, self.is_2d)
        p = check_prompt(prompt, self.slice_shape)
        mask, score, obj = self.decode(self.features(z), p)
        return SliceResult(z, mask, score, object_id=object_id, object_score=obj)

    def decode(self, feats: dict, p: Prompt, multimask: bool | None = None):
        """Prompt encoder + mask decoder on cached features -> (mask (H, W) bool, IoU, object prob).

        ``multimask`` None: three candidates for a lone click (SAM's ambiguity rule), one otherwise;
        the candidate with the highest predicted IoU wins.
        """
        import torch
        import torch.nn.functional as F

        coords = labels = box = mask_in = None
        if len(p.points):
            coords = p.points[:, ::-1].copy()  # (row, col) -> (x, y)
            labels = p.labels.astype(np.int32)
        if p.box is not None:
            r0, c0, r1, c1 = p.box
            box = np.array([c0, r0, c1, r1], dtype=np.float32)  # -> (x0, y0, x1, y1)
        if p.mask is not None and p.mask.any():
            mask_in = mask_to_logits(p.mask, self.net.sam_prompt_encoder.mask_input_size[0])
        if multimask is None:
            multimask = len(p.points) == 1 and box is None and mask_in is None
        with torch.inference_mode():
            mask_input, pts, lab, boxes = self.predictor._prep_prompts(
                coords, labels, box, mask_in, normalize_coords=True
            )
            concat = None if pts is None else (pts, lab)
            if boxes is not None:  # as SAM2ImagePredictor: the box corners go first, labels 2 and 3
                box_pts = boxes.reshape(-1, 2, 2)
                box_lab = torch.tensor([[2, 3]], dtype=torch.int, device=box_pts.device)
                concat = (
                    (box_pts, box_lab)
                    if concat is None
                    else (torch.cat([box_pts, concat[0]], 1), torch.cat([box_lab, concat[1]], 1))
                )
            if self.cuda:  # SAM2's own module under bfloat16 autocast, as SAM2 runs on a GPU
                with self._autocast(True):
                    sparse, dense = self.net.sam_prompt_encoder(points=concat, boxes=None, masks=mask_input)
                    image_embed = feats["fpn2"]
                    if self.net.directly_add_no_mem_embed:  # what SAM2ImagePredictor.set_image adds
                        image_embed = image_embed + self.net.no_mem_embed.view(1, -1, 1, 1)
                    low_res, iou, _, obj_logits = self.net.sam_mask_decoder(
                        image_embeddings=image_embed,
                        image_pe=self._dense_pe,
                        sparse_prompt_embeddings=sparse,
                        dense_prompt_embeddings=dense,
                        multimask_output=multimask,
                        repeat_image=False,
                        high_res_features=[feats["fpn0"], feats["fpn1"]],
                    )
            else:  # CPU / MPS: channels_last layout, a bfloat16 decoder copy where the CPU has bf16
                decoder, dense_pe, no_mem, no_mask_dense = self._cpu_decoder()
                dtype = dense_pe.dtype
                sparse, dense = self.net.sam_prompt_encoder(points=concat, boxes=None, masks=mask_input)
                dense = no_mask_dense if mask_input is None else channels_last(dense.to(dtype))
                image_embed = feats["fpn2"].to(dtype)
                if self.net.directly_add_no_mem_embed:
                    image_embed = image_embed + no_mem
                hr = [channels_last(feats["fpn0"].to(dtype)), channels_last(feats["fpn1"].to(dtype))]
                image_embed = channels_last(image_embed)
                pre = None
                if mask_input is None:  # image tokens independent of the prompt: reuse their projections
                    pre = self._image_projections(feats["fpn2"], decoder, image_embed, dense_pe, dense)
                low_res, iou, obj_logits = decode_masks(
                    decoder, image_embed, dense_pe, sparse.to(dtype), dense, hr, multimask, pre=pre
                )
            best = int(torch.argmax(iou[0]))
            logits = low_res[:, best : best + 1].float()
            up = F.interpolate(logits, self.slice_shape, mode="bilinear", align_corners=False)
            mask = (up[0, 0] > self.predictor.mask_threshold).cpu().numpy()
            score = float(iou[0, best].float())
            obj = float(torch.sigmoid(obj_logits.float()).reshape(-1)[0])
        return mask, score, obj

    @property
    def click_decoder(self):
        """The mask decoder module clicks and projection mode run (a bfloat16 copy on bf16 CPUs)."""
        return self.net.sam_mask_decoder if self.cuda else self._cpu_decoder()[0]

    def _image_projections(self, source, decoder, image_embed, dense_pe, no_mask_dense):
        """The first decoder layer's prompt-independent projections for the slice whose features
        hold ``source`` (computed on its first click, then reused; the last few slices are kept)."""
        key = (id(source), dense_pe.dtype)
        hit = self._projections.get(key)
        if hit is not None and hit[0] is source:
            return hit[1]
        pre = image_projections(decoder, image_embed, dense_pe, no_mask_dense)
        with self._lock:
            self._projections[key] = (source, pre)  # holds ``source``: its id cannot be reused meanwhile
            while len(self._projections) > PROJECTION_SLICES:
                self._projections.pop(next(iter(self._projections)))
        return pre

    def _cpu_decoder(self):
        """The decoder set-up for the CPU (bfloat16 copy when ``decoder_bf16``), built once per dtype."""
        import torch

        dtype = torch.bfloat16 if self.decoder_bf16 else torch.float32
        if dtype not in self._decoder_cpu:
            self._decoder_cpu[dtype] = build_cpu_decoder(self.net, self._dense_pe, dtype)
        return self._decoder_cpu[dtype]

    # ------------------------------------------------------------------ propagation
    def projection_step(self, z: int, prev_mask: np.ndarray, object_id: int = 1):
        """``predict_next`` for the shared driver: the previous mask (mask prompt) and its box."""
        from napari_medprompt.segment.propagation import mask_to_box

        box = mask_to_box(prev_mask, margin=2.0)
        p = Prompt(box=box, mask=prev_mask)
        if box is not None and (box[2] - box[0] < 1 or box[3] - box[1] < 1):
            p = Prompt(mask=prev_mask)  # a one-pixel-thin mask: its box would have zero area
        return self.decode(self.features(z), p, multimask=False)

    def propagate(
        self,
        seeds: Mapping[int, Mapping[int, np.ndarray]],
        settings: PropagationSettings | None = None,
    ) -> Iterator[SliceResult]:
        """Propagate objects from their seed masks; mode from ``settings.mode`` or the segmenter."""
        from napari_medprompt.segment.propagation import propagate_by_projection

        self._require_bound()
        require_volume(self._image.ndim)
        settings = settings if settings is not None else PropagationSettings()
        mode = self.resolved_mode(None if settings.mode == "auto" else settings.mode)
        if mode == "memory":
            from napari_medprompt.segment.sam2_video import MemoryPropagator

            step = MemoryPropagator(
                self, seeds, memory_frames=self.memory_frames, patience=settings.patience,
                offload_state=self.offload_state,
            ).predict_next
        else:
            step = self.projection_step
        yield from propagate_by_projection(step, seeds, self.n_slices, settings)
