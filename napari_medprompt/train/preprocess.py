"""Raw images (grey / RGB, 8-bit / 16-bit / float, any size) to the backbone's normalised input tensor.

Per image: intensities to [0, 1] (uint8 / 255; other integer types and floats outside [0, 1]: a robust
min-max between the 0.5th and 99.5th percentiles, so 16-bit X-rays and CT slices in HU both work),
grey to three channels, a bilinear (antialiased) resize of the whole image to the backbone's square
input size (aspect ratio is not kept: medical images are seen whole), then the backbone's mean/std.
Masks are resized the same way to values in [0, 1]. The caller's arrays are never modified.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from napari_medprompt.train.data import DataError


@dataclass(frozen=True)
class Preprocess:
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_backbone(cls, backbone) -> Preprocess:
        return cls(int(backbone.image_size), tuple(map(float, backbone.mean)), tuple(map(float, backbone.std)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(int(d["image_size"]), tuple(d["mean"]), tuple(d["std"]))


def to_unit_rgb(image: np.ndarray, source: str = "image") -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from a grey or colour image of any numeric dtype."""
    a = np.asarray(image)
    if a.dtype == bool:
        a = a.astype(np.float32)
    if a.dtype.kind not in "uif":
        raise DataError(f"{source}: unsupported pixel type {a.dtype}")
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channel-first
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]  # drop alpha
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise DataError(f"{source}: expected a 2D grey or RGB image, got an array of shape {np.shape(image)}")
    if a.shape[0] < 2 or a.shape[1] < 2:
        raise DataError(f"{source}: image of shape {np.shape(image)} is too small")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise DataError(f"{source}: image has NaN or infinite values")
    if a.dtype.kind == "f" and np.asarray(image).dtype.kind == "f" and a.min() >= 0.0 and a.max() <= 1.0:
        return a
    lo, hi = np.percentile(a, [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def images_to_tensor(images, spec: Preprocess, sources=None):
    """(N, 3, S, S) float tensor, normalised with ``spec``'s mean/std."""
    import torch
    from torch.nn import functional as F

    sources = sources or [f"image[{i}]" for i in range(len(images))]
    out = torch.empty(len(images), 3, spec.image_size, spec.image_size)
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    for i, (im, src) in enumerate(zip(images, sources)):
        t = torch.from_numpy(to_unit_rgb(im, src)).permute(2, 0, 1)[None]
        if t.shape[-2:] != (spec.image_size, spec.image_size):
            t = F.interpolate(t, size=(spec.image_size, spec.image_size), mode="bilinear", antialias=True, align_corners=False)
        out[i] = (t[0].clamp(0, 1) - mean) / std
    return out


def masks_to_tensor(masks, images, spec: Preprocess, sources=None):
    """(N, 1, S, S) float tensor in [0, 1]; each mask must have its image's height and width."""
    import torch
    from torch.nn import functional as F

    sources = sources or [f"image[{i}]" for i in range(len(images))]
    out = torch.empty(len(masks), 1, spec.image_size, spec.image_size)
    for i, (m, im, src) in enumerate(zip(masks, images, sources)):
        if m is None:
            raise DataError(f"{src}: no mask (this method needs one for every image)")
        m = np.asarray(m)
        if m.ndim == 3 and m.shape[-1] == 1:
            m = m[..., 0]
        hw = _image_hw(im)
        if m.shape != hw:
            raise DataError(f"{src}: mask of shape {m.shape} does not match the image's {hw}")
        t = torch.from_numpy((m > 0).astype(np.float32))[None, None]
        out[i] = F.interpolate(t, size=(spec.image_size, spec.image_size), mode="bilinear", align_corners=False)[0]
    return out.clamp_(0, 1)


def _image_hw(im) -> tuple[int, int]:
    a = np.asarray(im)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4):
        return tuple(a.shape[1:3])
    return tuple(a.shape[:2])
