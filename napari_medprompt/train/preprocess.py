"""Raw images (grey / RGB, 8-bit / 16-bit / float, any size and pixel spacing) to the backbone's input.

Two steps, both recorded so that a map computed on the model input can be brought back exactly
(:class:`Geometry`):

**Intensity** (:attr:`Preprocess.intensity`), so that absolute values keep their meaning:

- ``"window"``: a stated window (level, width) in the image's own units, e.g. Hounsfield units for CT:
  ``[level - width/2, level + width/2]`` -> [0, 1], clipped. The same HU always gives the same input,
  whatever else is in the slice. :meth:`Preprocess.for_modality` picks it for CT.
- ``"percentiles"``: a robust min-max between the given percentiles of each image (MR, which has no
  absolute scale).
- ``"auto"`` (default): 8-bit images as they are (``/ 255``), floats already in [0, 1] as they are,
  anything else (16-bit X-rays, HU without a stated window) by robust percentiles, 0.5-99.5.

**Geometry**: grey to three channels; with ``pad_to_square`` (default) the image is resampled to
isotropic pixels using its pixel spacing (rows, columns in mm; default square pixels), scaled so that
its longer physical side fills the backbone's input size, and centred on a black square: a coronal
plane of 3 mm x 0.8 mm pixels keeps its true proportions instead of being stretched. Nothing is
cropped. ``pad_to_square=False`` stretches the whole image to the square (the behaviour of
checkpoints that predate this option). Resampling is bilinear with antialiasing; then the backbone's
mean/std. Masks go through the same geometry (values in [0, 1], padding 0). The caller's arrays are
never modified.

The :class:`Preprocess` spec is stored in every checkpoint (:meth:`Preprocess.to_dict`); a model
carries the spec it was trained with as ``model.preprocess`` (see :func:`preprocess_of`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from napari_medprompt.imaging.normalize import MODEL_WINDOW_CT
from napari_medprompt.train.data import DataError

INTENSITY_MODES = ("auto", "window", "percentiles")
#: The CT window a model sees unless the user states another, as (level, width) in HU: the project's
#: model window :data:`~napari_medprompt.imaging.normalize.MODEL_WINDOW_CT` (-300..400 HU keeps fat,
#: soft tissue, contrast and bone apart).
DEFAULT_CT_WINDOW: tuple[float, float] = (
    (MODEL_WINDOW_CT[0] + MODEL_WINDOW_CT[1]) / 2.0,
    MODEL_WINDOW_CT[1] - MODEL_WINDOW_CT[0],
)


@dataclass(frozen=True)
class Preprocess:
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    intensity: str = "auto"
    window: tuple[float, float] | None = None  # (level, width), with intensity="window"
    percentiles: tuple[float, float] = (0.5, 99.5)
    pad_to_square: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "percentiles", tuple(float(v) for v in self.percentiles))
        if self.window is not None:
            object.__setattr__(self, "window", tuple(float(v) for v in self.window))
        if int(self.image_size) < 2:
            raise ValueError(f"preprocessing: image_size must be at least 2, got {self.image_size}")
        if self.intensity not in INTENSITY_MODES:
            raise ValueError(f"preprocessing: unknown intensity mode {self.intensity!r}; choose one of {', '.join(INTENSITY_MODES)}")
        if self.intensity == "window":
            if self.window is None or len(self.window) != 2:
                raise ValueError("preprocessing: intensity 'window' needs window=(level, width)")
            if not self.window[1] > 0:
                raise ValueError(f"preprocessing: window width must be positive, got {self.window[1]}")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"preprocessing: percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")

    @classmethod
    def from_backbone(cls, backbone, **options) -> Preprocess:
        """The backbone's size and mean/std, with ``options`` (intensity, window, ...)."""
        return cls(int(backbone.image_size), tuple(backbone.mean), tuple(backbone.std), **options)

    @classmethod
    def for_modality(cls, backbone, modality: str, window: tuple[float, float] | None = None) -> Preprocess:
        """CT: the HU window ``window`` (level, width; default :data:`DEFAULT_CT_WINDOW`); MR:
        robust percentiles; other modalities: ``"auto"``."""
        mod = (modality or "").upper()
        if mod == "CT" or window is not None:
            return cls.from_backbone(backbone, intensity="window", window=tuple(window or DEFAULT_CT_WINDOW))
        if mod in ("MR", "MRI"):
            return cls.from_backbone(backbone, intensity="percentiles")
        return cls.from_backbone(backbone)

    def with_window(self, window) -> Preprocess:
        """This spec with a fixed window: (level, width) or a CT preset name (``"soft_tissue"``, ...)."""
        return replace(self, intensity="window", window=parse_window(window))

    def to_dict(self) -> dict:
        """JSON-native (lists, not tuples): equal to its own JSON round trip."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        """Inverse of :meth:`to_dict`. Specs written before intensity modes and padding existed
        (only size, mean, std) mean what those versions did: ``"auto"`` intensities, stretched."""
        try:
            window = d.get("window")
            return cls(
                int(d["image_size"]), tuple(d["mean"]), tuple(d["std"]),
                intensity=str(d.get("intensity", "auto")),
                window=None if window is None else tuple(window),
                percentiles=tuple(d.get("percentiles", (0.5, 99.5))),
                pad_to_square=bool(d.get("pad_to_square", False)),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"preprocessing record {d!r} is incomplete or malformed ({err})") from None

    def differences(self, other: Preprocess) -> list[str]:
        """Human-readable differences from ``other`` (empty when they preprocess identically)."""
        out = []
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                out.append(f"{f.name}: {a!r} vs {b!r}")
        return out

    def describe(self) -> str:
        if self.intensity == "window":
            inten = f"window level {self.window[0]:g} width {self.window[1]:g}"
        elif self.intensity == "percentiles":
            inten = f"percentiles {self.percentiles[0]:g}-{self.percentiles[1]:g}"
        else:
            inten = "auto intensities (8-bit as is, else percentiles)"
        geo = "padded to square with pixel spacing" if self.pad_to_square else "stretched to square"
        return f"{self.image_size} px, {inten}, {geo}"


def parse_window(window) -> tuple[float, float]:
    """(level, width) from a pair or a CT window preset name of :mod:`napari_medprompt.imaging.window`."""
    if isinstance(window, str):
        from napari_medprompt.imaging.window import PRESETS

        p = PRESETS.get(window)
        if p is None or not p.is_fixed:
            names = [n for n, q in PRESETS.items() if q.is_fixed]
            raise ValueError(f"unknown window {window!r}; give (level, width) or one of {', '.join(names)}")
        return float(p.center), float(p.width)
    try:
        level, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"window must be (level, width) or a preset name, got {window!r}") from None
    if not width > 0:
        raise ValueError(f"window width must be positive, got {width}")
    return level, width


def preprocess_of(model) -> Preprocess:
    """The preprocessing ``model`` was trained with (``model.preprocess``), else its backbone's default."""
    spec = getattr(model, "preprocess", None)
    if isinstance(spec, dict):
        spec = Preprocess.from_dict(spec)
    return spec if isinstance(spec, Preprocess) else Preprocess.from_backbone(model.backbone)


# --------------------------------------------------------------------------------------- intensity
def _as_hwc(image, source: str) -> np.ndarray:
    """(H, W) grey or (H, W, 3) colour view of ``image`` (channel-first and alpha handled)."""
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
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
        raise DataError(f"{source}: expected a 2D grey or RGB image, got an array of shape {np.shape(image)}")
    if a.shape[0] < 2 or a.shape[1] < 2:
        raise DataError(f"{source}: image of shape {np.shape(image)} is too small")
    return a


def to_unit_rgb(image: np.ndarray, source: str = "image", spec: Preprocess | None = None) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from a grey or colour image of any numeric dtype (see module doc)."""
    a = _as_hwc(image, source)
    mode = "auto" if spec is None else spec.intensity
    if mode == "auto" and a.dtype == np.uint8:
        u = a.astype(np.float32) / 255.0
    else:
        f = a.astype(np.float32)
        if not np.isfinite(f).all():
            raise DataError(f"{source}: image has NaN or infinite values")
        if mode == "window":
            level, width = spec.window
            u = np.clip((f - (level - width / 2.0)) / width, 0.0, 1.0)
        elif mode == "auto" and a.dtype.kind == "f" and f.min() >= 0.0 and f.max() <= 1.0:
            u = f
        else:
            q = (0.5, 99.5) if spec is None else spec.percentiles
            lo, hi = np.percentile(f, q)
            if hi <= lo:
                lo, hi = float(f.min()), float(f.max())
            u = np.zeros_like(f) if hi <= lo else np.clip((f - lo) / (hi - lo), 0.0, 1.0)
    if u.ndim == 2:
        u = np.repeat(u[..., None], 3, axis=-1)
    return np.ascontiguousarray(u, dtype=np.float32)


# ---------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Geometry:
    """Where an (H, W) image sits in the (S, S) model input: resized to ``content`` (h, w) pixels and
    placed at ``offset`` (top, left); the rest is padding. :meth:`to_original` is the exact inverse
    of :meth:`to_input` (up to the resampling's blur)."""

    shape: tuple[int, int]
    size: int
    content: tuple[int, int]
    offset: tuple[int, int]
    spacing: tuple[float, float] = (1.0, 1.0)

    @classmethod
    def of(cls, shape, spec: Preprocess, spacing=None, source: str = "image") -> Geometry:
        h0, w0 = int(shape[0]), int(shape[1])
        s = int(spec.image_size)
        sy, sx = _spacing(spacing, source)
        if not spec.pad_to_square:
            return cls((h0, w0), s, (s, s), (0, 0), (sy, sx))
        ey, ex = h0 * sy, w0 * sx  # physical extent (mm)
        k = s / max(ey, ex)
        h, w = min(s, max(1, int(round(ey * k)))), min(s, max(1, int(round(ex * k))))
        return cls((h0, w0), s, (h, w), ((s - h) // 2, (s - w) // 2), (sy, sx))

    def to_input(self, chw) -> "torch.Tensor":  # noqa: F821
        """(C, H, W) tensor or array in image geometry -> (C, S, S) tensor in model geometry (padding 0)."""
        import torch
        from torch.nn import functional as F

        t = torch.as_tensor(np.asarray(chw, dtype=np.float32) if not isinstance(chw, torch.Tensor) else chw).float()
        if tuple(t.shape[-2:]) != self.shape:
            raise ValueError(f"array of shape {tuple(t.shape)} does not match the geometry's image {self.shape}")
        h, w = self.content
        if (h, w) != self.shape:
            t = F.interpolate(t[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
        if (h, w) == (self.size, self.size):
            return t
        out = t.new_zeros((t.shape[0], self.size, self.size))
        top, left = self.offset
        out[:, top : top + h, left : left + w] = t
        return out

    def to_original(self, m) -> np.ndarray:
        """An (S, S) map on the model input -> (H, W) float32 on the original image's pixel grid:
        the padding is cut off and the content resampled back to the image's size."""
        import torch
        from torch.nn import functional as F

        t = torch.as_tensor(np.asarray(m, dtype=np.float32)) if not isinstance(m, torch.Tensor) else m.detach().float().cpu()
        if tuple(t.shape) != (self.size, self.size):
            raise ValueError(f"map of shape {tuple(t.shape)} is not on the model input ({self.size}, {self.size})")
        top, left = self.offset
        h, w = self.content
        t = t[top : top + h, left : left + w]
        if (h, w) != self.shape:
            down = h > self.shape[0] or w > self.shape[1]
            t = F.interpolate(t[None, None], size=self.shape, mode="bilinear", antialias=down, align_corners=False)[0, 0]
        return t.numpy().astype(np.float32, copy=False)

    def input_point(self, row: float, col: float) -> tuple[float, float]:
        """Model-input coordinates (pixel centres) of the original image's pixel (row, col)."""
        (h0, w0), (h, w), (top, left) = self.shape, self.content, self.offset
        return top + (row + 0.5) * h / h0 - 0.5, left + (col + 0.5) * w / w0 - 0.5

    def original_point(self, row: float, col: float) -> tuple[float, float]:
        """Inverse of :meth:`input_point`."""
        (h0, w0), (h, w), (top, left) = self.shape, self.content, self.offset
        return (row - top + 0.5) * h0 / h - 0.5, (col - left + 0.5) * w0 / w - 0.5


def _spacing(spacing, source: str) -> tuple[float, float]:
    if spacing is None:
        return 1.0, 1.0
    try:
        sp = [float(v) for v in spacing]
    except TypeError:
        raise DataError(f"{source}: pixel spacing must be (row, column) in mm, got {spacing!r}") from None
    if len(sp) != 2 or not all(np.isfinite(v) and v > 0 for v in sp):
        raise DataError(f"{source}: pixel spacing must be two positive numbers (row, column), got {spacing!r}")
    return sp[0], sp[1]


def _per_image(values, n: int, what: str):
    """``values`` as a list of ``n``: None -> Nones, one (row, col) pair -> repeated, else a list of n."""
    if values is None:
        return [None] * n
    if len(values) == 2 and all(np.isscalar(v) for v in values):
        return [values] * n
    values = list(values)
    if len(values) != n:
        raise DataError(f"{len(values)} {what} for {n} images")
    return values


def image_to_input(image, spec: Preprocess, spacing=None, source: str = "image"):
    """(3, S, S) normalised tensor and the :class:`Geometry` of one image."""
    import torch

    u = to_unit_rgb(image, source, spec)
    geo = Geometry.of(u.shape[:2], spec, spacing, source)
    t = geo.to_input(torch.from_numpy(u).permute(2, 0, 1)).clamp_(0, 1)
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    return (t - mean) / std, geo


def images_to_tensor(images, spec: Preprocess, sources=None, spacings=None):
    """(N, 3, S, S) float tensor, normalised with ``spec``. ``spacings``: None (square pixels), one
    (row, col) pair in mm for all images, or one per image."""
    import torch

    sources = sources or [f"image[{i}]" for i in range(len(images))]
    spacings = _per_image(spacings, len(images), "pixel spacings")
    out = torch.empty(len(images), 3, spec.image_size, spec.image_size)
    for i, (im, src, sp) in enumerate(zip(images, sources, spacings)):
        out[i] = image_to_input(im, spec, sp, src)[0]
    return out


def mask_to_input(mask, geometry: Geometry, source: str = "image"):
    """(1, S, S) float tensor in [0, 1]: the mask through its image's geometry."""
    import torch

    if mask is None:
        raise DataError(f"{source}: no mask (this method needs one for every image)")
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.shape != geometry.shape:
        raise DataError(f"{source}: mask of shape {m.shape} does not match the image's {geometry.shape}")
    return geometry.to_input(torch.from_numpy((m > 0).astype(np.float32))[None]).clamp_(0, 1)


def masks_to_tensor(masks, images, spec: Preprocess, sources=None, spacings=None):
    """(N, 1, S, S) float tensor in [0, 1]; each mask must have its image's height and width."""
    import torch

    sources = sources or [f"image[{i}]" for i in range(len(images))]
    spacings = _per_image(spacings, len(images), "pixel spacings")
    if len(masks) != len(images):
        raise DataError(f"{len(masks)} masks for {len(images)} images")
    out = torch.empty(len(masks), 1, spec.image_size, spec.image_size)
    for i, (m, im, src, sp) in enumerate(zip(masks, images, sources, spacings)):
        if m is None:
            raise DataError(f"{src}: no mask (this method needs one for every image)")
        out[i] = mask_to_input(m, Geometry.of(_image_hw(im), spec, sp, src), src)
    return out


def _image_hw(im) -> tuple[int, int]:
    a = np.asarray(im)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4):
        return tuple(a.shape[1:3])
    return tuple(a.shape[:2])
