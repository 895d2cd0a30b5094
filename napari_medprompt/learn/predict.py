"""Predictions of a stored model over slices, volumes and objects, and heat maps aligned with the image.

A :class:`Predictor` is one version of a model store, loaded with its record's checks (weights
SHA-256, backbone state hash) and refused with a :class:`~napari_medprompt.learn.errors.LearnError`
when it was trained on another backbone or another modality than the caller's. Every result says
which version made it and carries ``random_weights`` (and a label saying "RANDOM weights") when that
version's backbone ran on random weights.

:meth:`Predictor.heatmap_volume` computes the localization map of many slices in batches: one private
copy of the model (:func:`~napari_medprompt.classify.snapshot.snapshot`) for the whole volume, one
forward and one backward pass per batch (the per-slice maps are independent: the model runs in eval
mode, where no image of a batch affects another). The maps are the same as
:func:`napari_medprompt.train.explain.explain` of each slice (Grad-CAM on CNNs, gradient-weighted
attention rollout on ViTs), brought back to the slice's pixel grid. ``scale="slice"`` (the default)
scales each slice's map to [0, 1] on its own: every slice's strongest evidence is 1, so brightness
compares places within a slice, not slices. ``scale="volume"`` scales every slice by the minimum and
maximum of the raw maps over all computed slices: a slice where the model's evidence is weaker is
dimmer, so brightness compares across slices. The raw maps are kept (:attr:`HeatmapVolume.raw`), so
:meth:`HeatmapVolume.rescaled` switches between the two without running the model again.
The result is a (Z, Y, X) float32 volume of the image's own shape (slices not computed are 0) and
:meth:`HeatmapVolume.layer_data` gives the napari layer tuple with the image layer's scale,
translate and affine (:func:`napari_medprompt.train.explain.heatmap_layer_data`).

``progress(done, total)`` is called after every batch; ``cancel`` (a callable returning True, or a
``threading.Event``) is checked before every batch: a cancelled computation returns what it has,
``cancelled=True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from napari_medprompt.learn.errors import LearnError

RANDOM_LABEL = "RANDOM weights: not meaningful"
SCALES = ("slice", "volume")


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise LearnError(f"heat map scale {scale!r}: choose 'slice' (each slice to [0, 1]) or 'volume' "
                         "(one range over all computed slices)")


def scale_suffix(scale: str, n_slices: int, partial: bool = False) -> str:
    """The heat-map layer name's ending that says how it is scaled, e.g. "(scaled over 40 slices)"."""
    if scale == "slice" or n_slices <= 1:
        return "(scaled per slice)"
    return f"(scaled over {n_slices} slices{', partial' if partial else ''})"


def volume_range(raw: np.ndarray, slices) -> tuple[float, float]:
    """(min, max) of the raw maps over ``slices`` (one slice at a time: no copy of the volume)."""
    zs = [int(z) for z in slices]
    return min(float(raw[z].min()) for z in zs), max(float(raw[z].max()) for z in zs)


def scale_maps(raw: np.ndarray, slices, scale: str = "slice") -> np.ndarray:
    """(Z, Y, X) float32 of the raw maps ``raw`` scaled to [0, 1] on ``slices`` (zero elsewhere):
    ``"slice"`` each slice by its own minimum and maximum, ``"volume"`` every slice by the minimum and
    maximum over all ``slices`` (so a slice whose map is weaker stays dimmer; the maps explain each
    slice's own predicted class unless a target was given). A constant map is 0. Works slice by
    slice: the only volume allocated is the result."""
    _check_scale(scale)
    out = np.zeros(raw.shape, np.float32)
    zs = [int(z) for z in slices]
    if not zs:
        return out
    if scale == "slice":
        for z in zs:
            out[z] = _unit(raw[z])
        return out
    lo, hi = volume_range(raw, zs)
    if hi - lo > 1e-12:
        for z in zs:
            np.subtract(raw[z], lo, out=out[z])
            out[z] *= 1.0 / (hi - lo)
    return out


def _cancelled(cancel) -> bool:
    if cancel is None:
        return False
    is_set = getattr(cancel, "is_set", None)
    return bool(is_set()) if is_set is not None else bool(cancel())


@dataclass
class Prediction:
    probabilities: np.ndarray  # (N, n_classes) float32
    classes: list[str]
    slices: list[int] | None  # slice index of each row (None for plain images)
    version: str | None
    random_weights: bool
    cancelled: bool = False

    @property
    def predicted(self) -> list[str]:
        return [self.classes[int(i)] for i in np.argmax(self.probabilities, axis=1)] if len(self.probabilities) else []

    @property
    def mean(self) -> np.ndarray:
        """Mean probability per class over the rows (a volume's or an object's overall answer)."""
        return self.probabilities.mean(0) if len(self.probabilities) else np.zeros(len(self.classes), np.float32)

    @property
    def label(self) -> str:
        """One line for the dock, e.g. ``malignant 0.87 (v0003)`` (+ the random-weights warning)."""
        if not len(self.probabilities):
            return "no prediction"
        m = self.mean
        i = int(np.argmax(m))
        text = f"{self.classes[i]} {m[i]:.2f} ({self.version or 'unsaved model'})"
        return f"{text} — {RANDOM_LABEL}" if self.random_weights else text


@dataclass
class HeatmapVolume:
    data: np.ndarray  # (Z, Y, X) float32 in [0, 1], the image's shape, scaled as ``scale`` says
    probabilities: np.ndarray  # (len(slices), n_classes)
    slices: list[int]
    classes: list[str]
    target: list[int]  # explained class per computed slice
    technique: str
    version: str | None
    random_weights: bool
    cancelled: bool = False
    done: list[int] = field(default_factory=list)  # the slices actually computed
    raw: np.ndarray | None = None  # (Z, Y, X) float32 maps before scaling (0 on slices not computed)
    scale: str = "slice"  # "slice": each slice to [0, 1]; "volume": one range over the computed slices

    @property
    def slice_maxima(self) -> dict[int, float]:
        """The raw (unscaled) maximum of each computed slice's map: how strong its evidence is."""
        if self.raw is None:
            return {}
        return {int(z): float(self.raw[z].max()) for z in self.done}

    def rescaled(self, scale: str) -> HeatmapVolume:
        """The same maps scaled per slice (``"slice"``) or over the computed slices (``"volume"``),
        from the raw maps kept (no model run)."""
        _check_scale(scale)
        if scale == self.scale:
            return self
        if self.raw is None:
            raise LearnError("this heat map kept no raw maps: compute it again to change its scale")
        return replace(self, data=scale_maps(self.raw, self.done, scale), scale=scale)

    @property
    def name_suffix(self) -> str:
        """How the layer is scaled, for its name: per slice, or over the N slices computed."""
        return scale_suffix(self.scale, len(self.done), self.cancelled)

    def scale_metadata(self) -> dict:
        """``scale``, the raw maximum per slice and, over several slices, the range used (over the
        computed slices, ``md["slices"]``; a cancelled run's over what it computed)."""
        md: dict = {"scale": self.scale, "slice_maxima": self.slice_maxima}
        if self.scale == "volume" and self.raw is not None and self.done:
            lo, hi = volume_range(self.raw, self.done)
            md.update({"volume_min": lo, "volume_max": hi})
        return md

    def layer_data(self, image_shape=None, *, scale=None, translate=None, affine=None, plane: str = "axial",
                   name: str | None = None):
        """napari image-layer tuple ``(data, kwargs, "image")`` over the image layer (same scale,
        translate, affine; heat colormap, additive blending). ``image_shape``: the image layer's shape
        (checked against the map's)."""
        from napari_medprompt.train.explain import heatmap_layer_data

        shape = tuple(self.data.shape) if image_shape is None else tuple(int(s) for s in image_shape)
        if shape != tuple(self.data.shape):
            raise LearnError(f"the heat map {self.data.shape} was computed for another image than {shape}")
        z0 = self.done[0] if self.done else 0
        title = name or f"heat map ({self.version or 'model'})" + (" (RANDOM weights)" if self.random_weights else "")
        if not title.endswith(self.name_suffix):
            title = f"{title} {self.name_suffix}"
        _, kwargs, kind = heatmap_layer_data(self.data[z0], shape, scale=scale, translate=translate, affine=affine,
                                             plane=plane, slice_index=z0, name=title)
        md = kwargs["metadata"].setdefault("medprompt_explanation", {})
        md.update({"version": self.version, "random_weights": self.random_weights, "technique": self.technique,
                   "slices": list(self.done), "classes": list(self.classes),
                   "probabilities": {int(z): [float(p) for p in pr] for z, pr in zip(self.slices, self.probabilities)
                                     if z in set(self.done)}})
        md.update(self.scale_metadata())
        md.pop("slice_index", None)
        return self.data, kwargs, kind


def check_compatible(record: dict, *, backbone: str | None = None, modality: str | None = None) -> None:
    """Refuse a version trained on another backbone or another modality (:class:`LearnError`)."""
    rid = record.get("id", "this version")
    trained_bb = (record.get("backbone") or {}).get("name")
    if backbone is not None and trained_bb is not None and backbone != trained_bb:
        raise LearnError(f"version {rid} was trained on backbone {trained_bb!r}, not {backbone!r}: its adapter "
                         f"only works on {trained_bb!r}. Choose a version trained on {backbone!r} or train one.")
    trained_mod = (record.get("learn") or {}).get("modality")
    if modality is not None and trained_mod is not None and modality.upper() != str(trained_mod).upper():
        raise LearnError(f"version {rid} was trained on {trained_mod} images; this image is {modality.upper()}. "
                         "Its predictions would not mean anything here: choose or train a model for "
                         f"{modality.upper()}.")


def _as_slices(volume, slices) -> tuple[np.ndarray, list[int]]:
    vol = np.asarray(volume)
    if vol.ndim == 2 or (vol.ndim == 3 and vol.shape[-1] in (3, 4) and vol.shape[0] > 4):
        vol = vol[None]
    if vol.ndim not in (3, 4):
        raise LearnError(f"expected a 2D image or a (Z, Y, X) volume, got shape {vol.shape}")
    n = vol.shape[0]
    if slices is None:
        zs = list(range(n))
    elif isinstance(slices, (int, np.integer)):
        zs = [int(slices)]
    else:
        zs = [int(z) for z in slices]
    bad = [z for z in zs if not 0 <= z < n]
    if bad:
        raise LearnError(f"slice(s) {bad[:5]} outside the volume (0..{n - 1})")
    return vol, zs


class Predictor:
    """A stored model version ready to predict (see module docstring)."""

    def __init__(self, model, record: dict | None = None) -> None:
        self.model = model
        self.record = record or {}
        self.version = self.record.get("id") or getattr(model, "store_version", None)
        rw = (self.record.get("learn") or {}).get("random_weights")
        self.random_weights = bool(model.backbone.random_weights if rw is None else rw)
        self.modality = (self.record.get("learn") or {}).get("modality")

    @classmethod
    def load(cls, store, version: str | None = None, *, backbone: str | None = None, modality: str | None = None,
             device="cpu") -> Predictor:
        """Version ``version`` (default: the active one) of ``store`` (a ModelStore or its folder).

        ``backbone`` / ``modality``: what the caller predicts with/on; a version trained otherwise is
        refused (:func:`check_compatible`)."""
        from napari_medprompt.train.store import ModelStore, StoreError

        store = store if isinstance(store, ModelStore) else ModelStore(store)
        try:
            if version is None and store.active is None:
                raise LearnError("there is no model to predict with yet: train one (or activate a version)")
            record = store.get(version)
        except StoreError as err:
            raise LearnError(str(err)) from err
        check_compatible(record, backbone=backbone, modality=modality)
        try:
            model = store.load(record["id"], device=device)
        except StoreError as err:
            raise LearnError(str(err)) from err
        return cls(model, record)

    @property
    def classes(self) -> list[str]:
        return list(self.model.classes)

    @property
    def method(self) -> str:
        return self.model.name

    @property
    def backbone_name(self) -> str:
        return self.model.backbone.name

    @property
    def uses_masks(self) -> bool:
        return bool(getattr(self.model, "uses_masks", False))

    def _masks(self, masks, vol, zs, object_id=None):
        if not self.uses_masks:
            return None
        if masks is None:
            raise LearnError(f"method {self.method!r} needs the region's mask: predict on objects, or give masks")
        m = np.asarray(masks)
        m = m[None] if m.ndim == 2 else m
        if m.shape[:3] != vol.shape[:3]:
            raise LearnError(f"masks of shape {m.shape} do not match the image {vol.shape[:3]}")
        if object_id is not None:  # a label volume: the object's own voxels, as in training
            m = m == int(object_id)
        empty = [z for z in zs if not m[z].any()]
        if empty:
            raise LearnError(f"method {self.method!r} needs a mask on every slice; slice(s) {empty[:5]} have none")
        return m

    def predict_volume(self, volume, slices=None, *, masks=None, spacing=None, batch_size: int = 16,
                       progress=None, cancel=None, object_id: int | None = None) -> Prediction:
        """Class probabilities of ``slices`` (default: all) of a (Z, Y, X) volume or one 2D image.
        ``masks``: a bool volume of the same shape, or a label volume with ``object_id`` naming the
        object whose voxels are the mask (required by mask-using methods; a label volume without
        ``object_id`` counts every labelled voxel)."""
        from napari_medprompt.train.predict import predict

        vol, zs = _as_slices(volume, slices)
        m = self._masks(masks, vol, zs, object_id)
        out, done = [], []
        for i in range(0, len(zs), max(1, int(batch_size))):
            if _cancelled(cancel):
                break
            chunk = zs[i : i + batch_size]
            mb = None if m is None else [m[z] > 0 for z in chunk]
            out.append(predict(self.model, [vol[z] for z in chunk], mb, spacings=_sp(spacing), batch_size=batch_size))
            done.extend(chunk)
            if progress is not None:
                progress(len(done), len(zs))
        probs = np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)
        return Prediction(probs, self.classes, done, self.version, self.random_weights, len(done) < len(zs))

    def predict_images(self, images, masks=None, spacing=None) -> Prediction:
        """Class probabilities of 2D images (a list, or one image)."""
        from napari_medprompt.train.predict import as_image_list, predict

        ims = as_image_list(images)
        if self.uses_masks and masks is None:
            raise LearnError(f"method {self.method!r} needs the region's mask of every image")
        return Prediction(predict(self.model, ims, masks if self.uses_masks else None, spacings=_sp(spacing)),
                          self.classes, None, self.version, self.random_weights)

    def predict_objects(self, session, volume, *, spacing=None, slices_with=None, labels=None,
                        object_ids=None) -> dict[int, Prediction]:
        """Per object of ``session``: probabilities on each slice where it has voxels (``slices_with``:
        only slices with one of these statuses), with its mask for mask-using methods. ``Prediction.mean``
        is the object's overall answer. ``labels``/``object_ids``: a copy of the session's labels and
        its object ids taken beforehand (a worker then never reads the live session's voxels)."""
        vol = np.asarray(volume)
        vol = vol[None] if vol.ndim == 2 else vol
        lab = np.asarray(session.labels) if labels is None else np.asarray(labels)
        lab = lab[None] if lab.ndim == 2 else lab
        ids = sorted(session.objects) if object_ids is None else sorted(int(o) for o in object_ids)
        out = {}
        for oid in ids:
            zs = [int(z) for z in np.flatnonzero((lab == oid).reshape(lab.shape[0], -1).any(axis=1))]
            if slices_with is not None:
                status = session.objects[oid].slice_status
                zs = [z for z in zs if status.get(z) in slices_with]
            if not zs:
                continue
            out[oid] = self.predict_volume(vol, zs, masks=lab if self.uses_masks else None, spacing=spacing,
                                           object_id=oid)
        if not out:
            raise LearnError("no object of this session has voxels to predict on")
        return out

    def heatmap_volume(self, volume, slices=None, *, masks=None, spacing=None, batch_size: int = 8,
                       target: int | None = None, progress=None, cancel=None,
                       object_id: int | None = None, scale: str = "slice") -> HeatmapVolume:
        """Heat maps of ``slices`` (default: all) of a (Z, Y, X) volume, batched (see module docstring).
        ``target``: the class to explain (default: each slice's predicted class). ``scale``: ``"slice"``
        (each slice to [0, 1]) or ``"volume"`` (one range over the computed slices; a cancelled run's
        over the slices it computed)."""
        import torch

        from napari_medprompt.classify.snapshot import snapshot
        from napari_medprompt.train.preprocess import masks_to_tensor, preprocess_of

        _check_scale(scale)
        vol, zs = _as_slices(volume, slices)
        m = self._masks(masks, vol, zs, object_id)
        if target is not None and not 0 <= int(target) < len(self.classes):
            raise LearnError(f"target {target} is not a class index of {self.classes}")
        spec = preprocess_of(self.model)
        work = snapshot(self.model).eval()
        device = next(iter(work.parameters()), torch.zeros(0)).device
        raw = np.zeros(vol.shape[:3], np.float32)
        probs = np.zeros((len(zs), len(self.classes)), np.float32)
        targets = [0] * len(zs)
        technique, done = "", []
        bs = max(1, int(batch_size))
        for i in range(0, len(zs), bs):
            if _cancelled(cancel):
                break
            chunk = zs[i : i + bs]
            ims = [vol[z] for z in chunk]
            x, geo = _inputs(ims, spec, _sp(spacing))
            mt = None if m is None else masks_to_tensor([m[z] > 0 for z in chunk], ims, spec, spacings=_sp(spacing))
            maps, logits, technique = batched_localization(work, x.to(device), None if mt is None else mt.to(device),
                                                          target)
            p = logits.softmax(-1).numpy()
            for j, (z, heat) in enumerate(zip(chunk, _to_original(maps, geo))):
                raw[z] = heat
                probs[i + j] = p[j]
                targets[i + j] = int(np.argmax(p[j])) if target is None else int(target)
            done.extend(chunk)
            if progress is not None:
                progress(len(done), len(zs))
        return HeatmapVolume(scale_maps(raw, done, scale), probs[: len(done)], list(done), self.classes,
                             targets[: len(done)], technique, self.version, self.random_weights, len(done) < len(zs),
                             list(done), raw, scale)


def _inputs(images, spec, spacing):
    """((B, 3, S, S) normalised model input, Geometry) of same-shaped slices: what
    :func:`~napari_medprompt.train.preprocess.images_to_tensor` gives, with the resampling done once
    for the whole batch (and once per grey slice, not per identical colour channel)."""
    import torch

    from napari_medprompt.train.preprocess import Geometry, to_unit_rgb

    units = [to_unit_rgb(im, "slice", spec) for im in images]
    geo = Geometry.of(units[0].shape[:2], spec, spacing)
    b, s = len(units), int(spec.image_size)
    u = np.stack(units)  # (B, H, W, 3)
    grey = all(np.asarray(im).ndim == 2 for im in images)  # the 3 channels are copies of one
    chw = torch.from_numpy(np.ascontiguousarray(u[..., 0] if grey else u.transpose(0, 3, 1, 2).reshape(-1, *u.shape[1:3])))
    t = geo.to_input(chw).clamp_(0, 1)
    t = t[:, None].expand(b, 3, s, s) if grey else t.reshape(b, 3, s, s)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (t - mean) / std, geo


def _to_original(maps, geo) -> np.ndarray:
    """(B, S, S) maps on the model input -> (B, H, W) on the slices' grid (``Geometry.to_original`` of
    each map, in one resampling)."""
    from torch.nn import functional as F

    top, left = geo.offset
    h, w = geo.content
    t = maps.detach().float().cpu()[:, top : top + h, left : left + w]
    if (h, w) != geo.shape:
        down = h > geo.shape[0] or w > geo.shape[1]
        t = F.interpolate(t[:, None], size=geo.shape, mode="bilinear", antialias=down, align_corners=False)[:, 0]
    return t.numpy().astype(np.float32, copy=False)


def _sp(spacing):
    if spacing is None:
        return None
    sp = [float(s) for s in spacing]
    return tuple(sp[-2:])


def _unit(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    if hi - lo <= 1e-12:
        return np.zeros_like(m, dtype=np.float32)
    return ((m - lo) / (hi - lo)).astype(np.float32)


def batched_localization(work, x, masks=None, target: int | None = None):
    """((B, S, S) maps on the model input, not normalised; (B, n_classes) logits; technique name) of a
    batch, on ``work`` (a snapshot in eval mode). Each image's map is the one
    :func:`napari_medprompt.classify.localization.raw_localization` gives for it alone."""
    import torch
    from torch.nn import functional as F

    from napari_medprompt.classify.localization import _AttentionRecorder, forward_capturing_feature_map

    if getattr(work, "uses_masks", False):
        work.require_masks(masks)
    bb = work.backbone
    with torch.enable_grad():
        x = x.detach().float().requires_grad_(True)

        def chosen(logits):
            t = logits.argmax(-1) if target is None else torch.full((len(logits),), int(target), device=logits.device)
            return logits.gather(1, t[:, None]).sum()

        if bb.kind == "cnn":
            logits, captured = forward_capturing_feature_map(work, x, masks)
            fmap = captured[-1]
            (grad,) = torch.autograd.grad(chosen(logits), fmap)
            grid = F.relu((grad.mean(dim=(2, 3), keepdim=True) * fmap).sum(1))
            technique = "Grad-CAM"
        elif bb.kind == "vit":
            rec = _AttentionRecorder(bb.blocks())
            try:
                logits = work(x, masks)
            finally:
                rec.close()
            grads = torch.autograd.grad(chosen(logits), rec.store, allow_unused=True)
            t = rec.store[0].shape[-1]
            rel = torch.eye(t, device=x.device).expand(x.shape[0], t, t).clone()
            for a, g in zip(rec.store, grads):
                if g is None or a.shape[-1] != t:
                    continue
                a0, g0 = a.detach().float(), g.float()
                cam = (a0 * (g0 - (a0 * g0).sum(-1, keepdim=True))).abs().mean(1)
                rel = rel + cam @ rel
            g2 = bb.grid_size
            grid = rel[:, 0, -g2 * g2 :].reshape(-1, g2, g2)
            technique = "gradient-weighted attention rollout"
        else:
            raise LearnError(f"no localization map for backbone kind {bb.kind!r} ({bb.name})")
    up = F.interpolate(grid.detach()[:, None].float(), size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return up.cpu(), logits.detach().float().cpu(), technique
