"""Text prompt -> mask on a slice or a volume, from stock or adapted CLIPSeg (Qt-free).

``TextSegmenter(model)`` wraps a trained model (:func:`~.io.load_seg_adapter`) or, with
:meth:`TextSegmenter.stock`, plain CLIPSeg. Each slice goes through the model's preprocessing
(352 px, ImageNet mean/std, the intensity mode it was trained with), the probability map is brought
back to the slice's own pixel grid and thresholded (0.5 by default).

Not a backend of :mod:`napari_medprompt.segment.registry`: those backends take click/box/mask
prompts (:class:`~napari_medprompt.segment.base.Prompt` has no text), so a text prompt needs a field
there first; the Segment dock can call this class directly.
"""

from __future__ import annotations

import threading

import numpy as np

from napari_medprompt.seg_adapters.clipseg import SegAdapterError


class TextSegmenter:
    def __init__(self, model, device="cpu", threshold: float = 0.5):
        if getattr(model, "task", None) != "segmentation" or not hasattr(model, "seg_logits"):
            raise SegAdapterError(f"{getattr(model, 'name', type(model).__name__)!r} is not a text-prompted "
                                  "segmentation model")
        self.model = model.to(device).eval()
        self.device = device
        self.threshold = float(threshold)

    @classmethod
    def stock(cls, pretrained="default", device="cpu", threshold: float = 0.5) -> TextSegmenter:
        """Plain CLIPSeg rd64-refined (no adapter)."""
        from napari_medprompt.seg_adapters.clipseg import load_clipseg
        from napari_medprompt.seg_adapters.vlsm import DecoderFinetune

        base = load_clipseg(pretrained, device=device)
        model = DecoderFinetune(base, [], method="clipseg-decoder")
        model.decoder.requires_grad_(False)  # inference only: the stock decoder, unchanged
        return cls(model, device, threshold)

    @classmethod
    def from_store(cls, store, version: str | None = None, device="cpu", threshold: float = 0.5) -> TextSegmenter:
        from napari_medprompt.seg_adapters.io import load_seg_adapter

        return cls(load_seg_adapter(store=store, version=version, device=device), device, threshold)

    @property
    def random_weights(self) -> bool:
        return bool(self.model.backbone.random_weights)

    def probabilities(self, images, prompt: str, spacing=None) -> list[np.ndarray]:
        """Foreground probability maps (H, W) float32, one per image, on each image's own grid."""
        import torch

        from napari_medprompt.train.preprocess import image_to_input

        if isinstance(prompt, str):
            self.model.backbone.tokenize([prompt])  # too long / empty: a clear error before any work
        xs, geos = [], []
        for i, im in enumerate(images):
            x, g = image_to_input(im, self.model.preprocess, spacing, f"slice[{i}]")
            xs.append(x)
            geos.append(g)
        with torch.no_grad():
            logits = self.model.seg_logits(torch.stack(xs).to(self.device), [prompt] * len(xs))
        probs = torch.sigmoid(logits.float())[:, 0].cpu()
        return [g.to_original(p) for g, p in zip(geos, probs)]

    def segment_slice(self, image, prompt: str, spacing=None) -> np.ndarray:
        """(H, W) bool mask of ``prompt`` on one 2D slice (grey or RGB)."""
        a = np.asarray(image)
        if a.ndim not in (2, 3):
            raise SegAdapterError(f"expected a 2D slice (H, W) or (H, W, 3), got shape {a.shape}")
        return self.probabilities([a], prompt, spacing)[0] >= self.threshold

    def segment_volume(self, volume, prompt: str, *, axis: int = 0, batch_size: int = 4, spacing=None,
                       cancel: threading.Event | None = None, progress=None) -> np.ndarray:
        """Bool mask of ``volume``'s shape, slice by slice along ``axis``. ``cancel`` stops early (the
        slices not reached stay False); ``progress(done, total)`` after each batch."""
        v = np.asarray(volume)
        if v.ndim != 3:
            raise SegAdapterError(f"expected a 3D volume, got shape {v.shape}")
        self.model.backbone.tokenize([prompt])
        v = np.moveaxis(v, axis, 0)
        out = np.zeros(v.shape, bool)
        n = len(v)
        for i in range(0, n, max(1, int(batch_size))):
            if cancel is not None and cancel.is_set():
                break
            probs = self.probabilities(list(v[i : i + batch_size]), prompt, spacing)
            for k, p in enumerate(probs):
                out[i + k] = p >= self.threshold
            if progress is not None:
                progress(min(i + batch_size, n), n)
        return np.moveaxis(out, 0, axis)
