"""Explain one image: class probabilities and a heat map on the image's own pixel grid.

:func:`explain` preprocesses the raw image the way the model was trained (:func:`preprocess_of`: HU
window, percentiles, padding to square with the pixel spacing), computes the model's localization map
(:mod:`napari_medprompt.classify.localization`: Grad-CAM or gradient-weighted attention rollout, on a
snapshot of the model, so a model training in another thread is never touched) and maps it back to
the original (H, W) grid with the exact inverse of the preprocessing geometry (padding cut off,
resampling undone). For mask-using methods the map is the model's own; the mask is returned beside it
(:attr:`Explanation.mask`), never blended into the map.

:func:`heatmap_layer_data` turns an explanation into a napari image-layer tuple (plain data and dicts,
no napari import) that overlays the image layer: same scale and translate, placed at the explained
slice of a volume. Qt-free and napari-free.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from napari_medprompt.train.preprocess import (
    Geometry,
    Preprocess,
    image_to_input,
    mask_to_input,
    parse_window,
    preprocess_of,
)

log = logging.getLogger(__name__)

HEATMAP_COLORMAP = "inferno"
HEATMAP_OPACITY = 0.5


@dataclass
class Explanation:
    """What the model predicted for one image and where it looked."""

    probabilities: np.ndarray  # (n_classes,) float32, sums to 1
    classes: list[str]
    target: int  # the class the heat map explains (default: the predicted one)
    heatmap: np.ndarray  # (H, W) float32 in [0, 1] on the original image's pixel grid
    technique: str  # "Grad-CAM" | "gradient-weighted attention rollout"
    geometry: Geometry  # how the image sat in the model input
    preprocess: Preprocess
    random_weights: bool  # the backbone runs on random weights: the explanation is not meaningful
    mask: np.ndarray | None = None  # (H, W) bool: the mask the model was given (shown separately)
    notes: list[str] = field(default_factory=list)

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def predicted_class(self) -> str:
        return self.classes[self.predicted]

    def summary(self) -> dict:
        """JSON-serialisable description (layer metadata, logs)."""
        return {
            "probabilities": {c: float(p) for c, p in zip(self.classes, self.probabilities)},
            "predicted": self.predicted_class,
            "explained_class": self.classes[self.target],
            "technique": self.technique,
            "preprocessing": self.preprocess.to_dict(),
            "random_weights": bool(self.random_weights),
            "mask_used": self.mask is not None,
            "notes": list(self.notes),
        }


def explain(model, image, mask=None, *, window=None, spacing=None, target: int | None = None) -> Explanation:
    """Probabilities and heat map of ``model`` on one raw 2D ``image`` (grey (H, W) or RGB (H, W, 3)).

    ``mask`` (H, W): required by mask-using methods, ignored by the others. ``window``: (level, width)
    or a CT preset name: the image is in HU and goes through that window (default: the model's own
    preprocessing). ``spacing``: (row, column) pixel size in mm (default square pixels). ``target``:
    the class to explain (default: the predicted one).
    """
    from napari_medprompt.classify.localization import raw_localization
    from napari_medprompt.classify.methods.base import MissingMaskError

    spec = preprocess_of(model)
    notes: list[str] = []
    if window is not None:
        wanted = parse_window(window)
        if spec.intensity == "window" and spec.window != wanted:
            msg = (f"explaining with window {wanted} but the model was trained with {spec.window}: "
                   "its predictions may not mean what they did in training")
            log.warning(msg)
            notes.append(msg)
        spec = spec.with_window(wanted)
    arr = np.asarray(image)
    if arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] not in (1, 3)):
        raise ValueError(f"explain takes one 2D image (grey or RGB), got an array of shape {arr.shape}; "
                         "pass one slice of a volume")
    x, geo = image_to_input(arr, spec, spacing)
    uses_masks = bool(getattr(model, "uses_masks", False))
    m_in = mask_bool = None
    if mask is not None:
        mask_bool = np.asarray(mask)
        mask_bool = (mask_bool[..., 0] if mask_bool.ndim == 3 and mask_bool.shape[-1] == 1 else mask_bool) > 0
        m_in = mask_to_input(mask_bool, geo)
    if uses_masks and m_in is None:
        raise MissingMaskError(f"method {model.name!r} needs a mask of the region to explain the image")
    if not uses_masks:
        m_in = None
    if target is not None and not 0 <= int(target) < len(model.classes):
        raise ValueError(f"target {target} is not a class index of {list(model.classes)}")
    up, logits, technique = raw_localization(model, x, m_in, target)
    probs = logits.softmax(-1).numpy().astype(np.float32)
    heat = _unit(geo.to_original(up))
    bb = model.backbone
    if bb.random_weights:
        notes.append(f"backbone {bb.name} runs on RANDOM weights: this explanation is not meaningful")
    return Explanation(
        probabilities=probs,
        classes=list(model.classes),
        target=int(np.argmax(probs)) if target is None else int(target),
        heatmap=heat,
        technique=technique,
        geometry=geo,
        preprocess=spec,
        random_weights=bool(bb.random_weights),
        mask=mask_bool if uses_masks else None,
        notes=notes,
    )


def _unit(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    if hi - lo <= 1e-12:
        return np.zeros_like(m, dtype=np.float32)
    return ((m - lo) / (hi - lo)).astype(np.float32)


PLANE_AXES = {"axial": 0, "coronal": 1, "sagittal": 2}


def heatmap_layer_data(
    explanation: Explanation | np.ndarray,
    image_shape: tuple[int, ...] | None = None,
    *,
    scale=None,
    translate=None,
    affine=None,
    plane: str = "axial",
    slice_index: int | None = None,
    rgb: bool = False,
    name: str | None = None,
) -> tuple[np.ndarray, dict, str]:
    """A napari "image" layer tuple ``(data, kwargs, "image")`` showing the heat map over the image layer.

    ``image_shape``: the image layer's data shape, (Y, X) / (Y, X, 3) for a 2D image or (Z, Y, X) for
    a volume (default: the map's own shape). For a volume the map is placed at ``slice_index`` along
    ``plane``'s axis ("axial" z, "coronal" y, "sagittal" x, as in :mod:`napari_medprompt.segment.planes`)
    of a (Z, Y, X) float32 array, zero elsewhere (``np.zeros``: pages never written take no memory).
    ``scale`` / ``translate``: the image layer's (copied as they are, so the overlay lines up).
    ``affine``: the image layer's napari ``affine`` (the radiological display flip the plugin's reader
    sets, :func:`napari_medprompt.io.layers.display_affine`); pass it whenever the image layer has one.
    """
    heat = explanation.heatmap if isinstance(explanation, Explanation) else np.asarray(explanation, np.float32)
    if heat.ndim != 2:
        raise ValueError(f"a heat map is 2D, got shape {heat.shape}")
    shape = tuple(int(s) for s in (image_shape if image_shape is not None else heat.shape))
    if rgb or (len(shape) == 3 and shape[-1] in (3, 4) and slice_index is None):
        shape = shape[:-1]
    if len(shape) == 2:
        if shape != heat.shape:
            raise ValueError(f"heat map of shape {heat.shape} does not match the image's {shape}")
        data = heat.astype(np.float32, copy=False)
    elif len(shape) == 3:
        if plane not in PLANE_AXES:
            raise ValueError(f"unknown plane {plane!r}; choose one of {', '.join(PLANE_AXES)}")
        ax = PLANE_AXES[plane]
        if slice_index is None or not 0 <= int(slice_index) < shape[ax]:
            raise ValueError(f"slice_index must be in 0..{shape[ax] - 1} along the {plane} axis, got {slice_index}")
        plane_shape = tuple(s for i, s in enumerate(shape) if i != ax)
        if plane_shape != heat.shape:
            raise ValueError(f"heat map of shape {heat.shape} does not match a {plane} slice {plane_shape} of {shape}")
        data = np.zeros(shape, np.float32)
        idx: list = [slice(None)] * 3
        idx[ax] = int(slice_index)
        data[tuple(idx)] = heat
    else:
        raise ValueError(f"image shape {shape}: expected (Y, X), (Y, X, 3) or (Z, Y, X)")
    nd = data.ndim
    md: dict = {"medprompt_explanation": explanation.summary() if isinstance(explanation, Explanation) else {}}
    if slice_index is not None:
        md["medprompt_explanation"].update({"plane": plane, "slice_index": int(slice_index)})
    title = name
    if title is None and isinstance(explanation, Explanation):
        title = f"heat map: {explanation.classes[explanation.target]}"
        if explanation.random_weights:
            title += " (RANDOM weights)"
    kwargs = {
        "name": title or "heat map",
        "colormap": HEATMAP_COLORMAP,
        "blending": "additive",
        "opacity": HEATMAP_OPACITY,
        "contrast_limits": [0.0, 1.0],
        "scale": _vector(scale, nd, "scale", 1.0),
        "translate": _vector(translate, nd, "translate", 0.0),
        "metadata": md,
    }
    if affine is not None:
        aff = np.asarray(affine, dtype=float)
        if aff.shape != (nd + 1, nd + 1):
            raise ValueError(f"affine of shape {aff.shape} for a {nd}D layer; expected {(nd + 1, nd + 1)}")
        kwargs["affine"] = aff.tolist()
    return data, kwargs, "image"


def _vector(v, nd: int, what: str, default: float) -> tuple[float, ...]:
    if v is None:
        return (default,) * nd
    out = tuple(float(s) for s in v)
    if len(out) != nd:
        raise ValueError(f"{what} {out} has {len(out)} values for a {nd}D layer")
    return out
