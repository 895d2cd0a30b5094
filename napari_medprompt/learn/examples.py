"""The examples a classifier learns from: 2D pixels, optional mask, class, where they came from.

An :class:`ExampleSet` is a list of :class:`Example` s plus the class names the user declared (a class
may exist before it has examples). Each example keeps the 2D pixels of one slice or image, its mask
(the object's voxels on that slice, or None), its class, its source image (file *name* only and a
content signature: no path, no DICOM header field), its slice index, object id and group (the
image/series it comes from: a grouped split never puts one group on both sides).

On disk (``folder``), written after every change when the set has a folder::

    examples.json          format, declared classes, one record per example (written last, atomically)
    data/<uid>.npz         the example's pixels (``image``) and mask (``mask``), written atomically

Reading trusts ``examples.json`` only: pixel files it does not list (leftovers of an interrupted
write) are ignored and removed by the next save. An example whose pixel file cannot be read is left
out and flagged in :attr:`ExampleSet.unreadable` (its record and file stay on disk as they are); the
rest of the set opens. :meth:`ExampleSet.to_fewshot` turns the set into the
training loop's :class:`~napari_medprompt.train.data.FewShotData` (with groups).
"""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_medprompt.learn.errors import LearnError

FORMAT = "napari-medprompt-examples/1"
MANIFEST = "examples.json"
DATA_DIR = "data"
ORIGINS = ("slice", "object", "image", "folder", "npz")
THUMB_SIZE = 64


def source_name(source) -> str:
    """The file name of a source path or session image key (``/a/b/ct.nii.gz|shape|spacing`` ->
    ``ct.nii.gz``): never the folders above it."""
    if source is None:
        return ""
    text = str(source).split("|", 1)[0]
    if text in ("", "<memory>"):
        return ""
    return Path(text.rstrip("/\\")).name


def content_signature(array) -> str:
    """A short content hash of pixels (shape, dtype, every value): the same image gives the same one."""
    from napari_medprompt.segment.embedding_cache import image_digest

    return image_digest(np.asarray(array))[:20]


def _utc() -> str:
    from napari_medprompt.session.objects import utc_now

    return utc_now()


@dataclass
class Example:
    """One example (see module docstring). ``image`` is (H, W) or (H, W, 3|4); ``mask`` (H, W) bool."""

    uid: str
    class_name: str
    image: np.ndarray
    mask: np.ndarray | None = None
    source: str = ""
    source_key: str = ""
    slice_index: int | None = None
    object_id: int | None = None
    group: str = ""
    origin: str = "slice"
    spacing: tuple[float, float] | None = None
    modality: str | None = None
    added: str = ""
    saved: bool = field(default=False, repr=False, compare=False)  # its pixel file is on disk

    def record(self) -> dict:
        """The JSON part (everything but the pixels)."""
        return {
            "uid": self.uid, "class": self.class_name, "source": self.source, "source_key": self.source_key,
            "slice": self.slice_index, "object": self.object_id, "group": self.group, "origin": self.origin,
            "spacing": None if self.spacing is None else [float(s) for s in self.spacing],
            "modality": self.modality, "added": self.added, "has_mask": self.mask is not None,
            "shape": [int(s) for s in self.image.shape], "dtype": self.image.dtype.str,
        }

    @property
    def key(self) -> tuple:
        """What makes two examples the same annotation (adding it again updates it)."""
        return (self.source_key, self.slice_index, self.object_id, self.origin)


def _check_image(image, what: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        raise LearnError(f"{what}: an example is one 2D image (H, W) or colour (H, W, 3), got shape {arr.shape}")
    if arr.dtype == bool or arr.dtype.kind not in "uif":
        raise LearnError(f"{what}: image pixels must be numbers, got {arr.dtype}")
    if min(arr.shape[:2]) < 2:
        raise LearnError(f"{what}: the image is too small ({arr.shape[0]}x{arr.shape[1]} pixels)")
    return np.ascontiguousarray(arr)


def _check_mask(mask, image: np.ndarray, what: str) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.shape != image.shape[:2]:
        raise LearnError(f"{what}: mask of shape {m.shape} does not match the image {image.shape[:2]}")
    m = m > 0
    if not m.any():
        raise LearnError(f"{what}: the mask is empty (no pixel of the object on this slice)")
    return m


class ExampleSet:
    """Examples to learn from (see module docstring). ``folder`` None: kept in memory only."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = None if folder is None else Path(folder)
        self._examples: list[Example] = []
        self._declared: list[str] = []
        self._callbacks: list[Callable[[], None]] = []
        self.last_dropped = 0  # object examples the last add_session dropped (no longer accepted)
        #: (record, reason) of examples whose pixel file could not be read: not used, kept on disk as they are
        self.unreadable: list[tuple[dict, str]] = []

    # --- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | Path) -> ExampleSet:
        """The set saved in ``folder`` (an empty set when nothing was saved there yet)."""
        out = cls(folder)
        path = out.folder / MANIFEST
        if not path.exists():
            return out
        try:
            man = json.loads(path.read_text())
            if not isinstance(man, dict) or man.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            records = list(man["examples"])
            out._declared = [str(c) for c in man.get("classes", [])]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise LearnError(f"the example set {path} cannot be read ({err}); its pixel files in "
                             f"{out.folder / DATA_DIR} are untouched") from err
        for rec in records:
            f = out.folder / DATA_DIR / f"{rec['uid']}.npz"
            try:
                with np.load(f, allow_pickle=False) as z:
                    image = z["image"]
                    mask = z["mask"] if "mask" in z.files else None
            except Exception as err:  # flagged, kept on disk as it is; the other examples still open
                out.unreadable.append((dict(rec), f"example {rec.get('uid')} ({rec.get('class')}, "
                                       f"{rec.get('source') or 'image'}): its pixels {f.name} cannot be read "
                                       f"({type(err).__name__}: {err})"))
                continue
            sp = rec.get("spacing")
            out._examples.append(Example(
                uid=str(rec["uid"]), class_name=str(rec["class"]), image=image, mask=mask,
                source=str(rec.get("source", "")), source_key=str(rec.get("source_key", "")),
                slice_index=None if rec.get("slice") is None else int(rec["slice"]),
                object_id=None if rec.get("object") is None else int(rec["object"]),
                group=str(rec.get("group", "")), origin=str(rec.get("origin", "slice")),
                spacing=None if sp is None else (float(sp[0]), float(sp[1])),
                modality=rec.get("modality"), added=str(rec.get("added", "")), saved=True,
            ))
        return out

    # --- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._examples)

    def __iter__(self):
        return iter(list(self._examples))

    def __getitem__(self, i: int) -> Example:
        return self._examples[i]

    @property
    def examples(self) -> list[Example]:
        return list(self._examples)

    @property
    def uids(self) -> list[str]:
        return [e.uid for e in self._examples]

    def get(self, uid: str) -> Example:
        for e in self._examples:
            if e.uid == uid:
                return e
        raise LearnError(f"no example {uid!r} in the example set")

    @property
    def classes(self) -> list[str]:
        """Every class: declared ones and those of the examples, sorted."""
        return sorted(set(self._declared) | {e.class_name for e in self._examples})

    def counts(self) -> dict[str, int]:
        """Examples per class (0 for a declared class without examples)."""
        out = {c: 0 for c in self.classes}
        for e in self._examples:
            out[e.class_name] += 1
        return out

    @property
    def n_with_masks(self) -> int:
        return sum(e.mask is not None for e in self._examples)

    @property
    def all_have_masks(self) -> bool:
        return bool(self._examples) and self.n_with_masks == len(self._examples)

    def rows(self) -> list[dict]:
        """One dict per example for a table: uid, class, source, slice, object, group, has_mask, origin."""
        return [{"uid": e.uid, "class": e.class_name, "source": e.source, "slice": e.slice_index,
                 "object": e.object_id, "group": e.group, "has_mask": e.mask is not None, "origin": e.origin}
                for e in self._examples]

    def thumbnail(self, uid: str, size: int = THUMB_SIZE) -> np.ndarray:
        """A small uint8 picture of the example (``size`` on the long side; grey (h, w) or RGB (h, w, 3)),
        the mask's outline drawn at full brightness when there is a mask."""
        from PIL import Image

        e = self.get(uid)
        img = np.asarray(e.image, np.float32)
        if img.ndim == 3:
            img = img[..., :3]
        lo, hi = np.percentile(img, (0.5, 99.5))
        u8 = np.clip((img - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(img), 0, 255).astype(np.uint8)
        h, w = u8.shape[:2]
        scale = size / max(h, w)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        out = np.asarray(Image.fromarray(u8).resize(new, Image.BILINEAR))
        if e.mask is not None:
            m = np.asarray(Image.fromarray(e.mask.astype(np.uint8) * 255).resize(new, Image.NEAREST)) > 0
            edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
            out = out.copy()
            out[edge] = 255
        return out

    # --- checks ------------------------------------------------------------------------------
    def problems(self, uses_masks: bool = False) -> list[str]:
        """Why the set cannot train a classifier now (empty when it can)."""
        if not self._examples:
            return ["There are no examples yet: add slices, objects or images with a class first."]
        out = []
        counts = self.counts()
        empty = [c for c, n in counts.items() if n == 0]
        if empty:
            out.append(f"Class(es) {', '.join(repr(c) for c in empty)} have no examples: add examples "
                       "or remove the class.")
        single = [c for c, n in counts.items() if n == 1]
        if single:
            out.append(f"Class(es) {', '.join(repr(c) for c in single)} have only one example: add at "
                       "least one more of each (two per class are needed to learn and check).")
        if len([c for c, n in counts.items() if n > 0]) < 2:
            out.append(f"Only one class ({', '.join(repr(c) for c, n in counts.items() if n)}): a classifier "
                       "needs examples of at least two classes.")
        if uses_masks:
            missing = len(self._examples) - self.n_with_masks
            if missing:
                out.append(f"This method needs a mask for every example, but {missing} of {len(self)} "
                           "example(s) have none: add segmented objects, or choose a method without masks.")
        return out

    def check(self, uses_masks: bool = False) -> None:
        """Raise :class:`LearnError` with every problem (see :meth:`problems`)."""
        p = self.problems(uses_masks)
        if p:
            raise LearnError(" ".join(p))

    # --- changing ----------------------------------------------------------------------------
    def on_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after every change; returns a function that unsubscribes."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def _changed(self) -> None:
        if self.folder is not None:
            self.save()
        for cb in list(self._callbacks):
            cb()

    def add_class(self, name: str) -> None:
        """Declare a class (it may have no examples yet)."""
        name = _class_name(name)
        if name not in self._declared:
            self._declared.append(name)
            self._changed()

    def remove_class(self, name: str) -> int:
        """Forget a class and remove its examples; returns how many examples went."""
        uids = [e.uid for e in self._examples if e.class_name == name]
        self._declared = [c for c in self._declared if c != name]
        self._examples = [e for e in self._examples if e.class_name != name]
        self._changed()
        return len(uids)

    def rename_class(self, old: str, new: str) -> None:
        new = _class_name(new)
        for e in self._examples:
            if e.class_name == old:
                e.class_name = new
        self._declared = [new if c == old else c for c in self._declared]
        self._changed()

    def _new(self, image, class_name, mask, source, source_key, slice_index, object_id, group, origin,
             spacing, modality, what) -> Example:
        if origin not in ORIGINS:
            raise LearnError(f"unknown example origin {origin!r}; one of {', '.join(ORIGINS)}")
        name = _class_name(class_name)
        img = _check_image(image, what)
        m = _check_mask(mask, img, what)
        key = _no_path(source_key) if source_key else content_signature(img)
        return Example(
            uid=secrets.token_hex(8), class_name=name, image=img.copy(), mask=None if m is None else m.copy(),
            source=source_name(source), source_key=key,
            slice_index=None if slice_index is None else int(slice_index),
            object_id=None if object_id is None else int(object_id),
            group=_no_path(group) if group else key, origin=origin,
            spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
            modality=None if modality is None else str(modality), added=_utc(),
        )

    def _put(self, new: list[Example]) -> list[Example]:
        """Add ``new``; an example of the same annotation (same image, slice, object, origin) replaces
        the old one in place (its class or mask changed) under a new uid (new pixel file)."""
        out = []
        by_key = {e.key: i for i, e in enumerate(self._examples)}
        for e in new:
            i = by_key.get(e.key)
            if i is not None:  # a new uid: new pixels are never paired with the old record on disk
                self._examples[i] = e
            else:
                by_key[e.key] = len(self._examples)
                self._examples.append(e)
            out.append(e)
        return out

    def add(self, image, class_name: str, *, mask=None, source="", source_key: str = "", slice_index=None,
            object_id=None, group: str | None = None, origin: str = "slice", spacing=None,
            modality: str | None = None) -> Example:
        """Add one 2D example. ``source``: the image's path or name (only the file name is kept);
        ``source_key``: its content signature (default: computed from these pixels; a key holding a
        path is kept as a hash of it); ``group``: the image/series id used for grouped splits
        (default: ``source_key``)."""
        e = self._new(image, class_name, mask, source, source_key, slice_index, object_id, group, origin,
                      spacing, modality, f"example from {source_name(source) or 'image'}")
        (e,) = self._put([e])
        self._changed()
        return e

    def add_slice(self, volume, z: int, class_name: str, *, mask=None, source="", source_key: str = "",
                  group: str | None = None, spacing=None, modality: str | None = None,
                  object_id: int | None = None) -> Example:
        """Add slice ``z`` of a (Z, Y, X) volume (the current slice). ``spacing``: the volume's (z, y, x)
        or the slice's (row, col) spacing. The volume's signature is the source key (default)."""
        vol = np.asarray(volume)
        if vol.ndim != 3 or (vol.shape[-1] in (3, 4) and vol.shape[0] > 4):
            return self.add(vol, class_name, mask=mask, source=source, source_key=source_key, group=group,
                            spacing=spacing, modality=modality, origin="image", object_id=object_id)
        z = int(z)
        if not 0 <= z < vol.shape[0]:
            raise LearnError(f"slice {z} is outside the volume (0..{vol.shape[0] - 1})")
        key = _no_path(source_key) if source_key else content_signature(vol)
        return self.add(vol[z], class_name, mask=mask, source=source, source_key=key, slice_index=z,
                        object_id=object_id, group=group, origin="object" if object_id is not None else "slice",
                        spacing=_plane_spacing(spacing), modality=modality)

    def add_session(self, session, volume, *, source=None, source_key: str | None = None, modality=None,
                    statuses: Sequence[str] = ("accepted",), image_slices: Iterable[int] | None = None) -> list[Example]:
        """Every object of ``session`` that has a class, on every slice whose status is in ``statuses``
        (default: accepted slices), as one example each (mask = the object's voxels on that slice).
        The whole image's class (``session.image_class``) adds ``image_slices`` (default: the only
        slice of a 2D image; none of a volume) without a mask. Returns the examples added or updated."""
        vol = np.asarray(volume)
        if vol.ndim == 2:
            vol = vol[None]
        if tuple(vol.shape[:3]) != tuple(session.shape):
            raise LearnError(f"the image's shape {vol.shape} does not match the session's {tuple(session.shape)}")
        key = _no_path(source_key) if source_key else content_signature(vol)
        src = source if source is not None else session.image_name
        spacing = tuple(session.spacing[1:])
        new = []
        unclassed = 0
        for oid, obj in sorted(session.objects.items()):
            zs = sorted(z for z, s in obj.slice_status.items() if s in statuses)
            if obj.class_name is None:
                unclassed += bool(zs)
                continue
            for z in zs:
                m = session.labels[z] == oid
                if not m.any():
                    continue
                new.append(self._new(vol[z], obj.class_name, m, src, key, z, oid, key, "object", spacing,
                                     modality, f"object {obj.display_name}, slice {z}"))
        if session.image_class is not None:
            zs = [0] if image_slices is None and vol.shape[0] == 1 else list(image_slices or [])
            for z in zs:
                new.append(self._new(vol[int(z)], session.image_class, None, src, key, int(z), None, key,
                                     "image", spacing, modality, f"image, slice {z}"))
        keep = {e.key for e in new}
        stale = {e.uid for e in self._examples
                 if e.origin == "object" and e.source_key == key and e.object_id is not None and e.key not in keep}
        self.last_dropped = len(stale)
        if not new and not stale:
            hint = (f" ({unclassed} object(s) with {'/'.join(statuses)} slices have no class: give them one)"
                    if unclassed else "")
            raise LearnError(f"nothing to add from {source_name(src) or 'this image'}: no object with a class "
                             f"has {' or '.join(statuses)} slices{hint}.")
        if stale:  # slices rejected, erased or unclassed since they were added: they no longer train
            self._examples = [e for e in self._examples if e.uid not in stale]
        out = self._put(new)
        self._changed()
        return out

    def import_folder(self, root: str | Path) -> list[Example]:
        """Import ``root/<class>/<image>`` (see :func:`napari_medprompt.train.data.from_folder`)."""
        from napari_medprompt.train.data import DataError, from_folder

        try:
            data = from_folder(root)
        except DataError as err:
            raise LearnError(str(err)) from err
        return self._import(data, "folder", Path(root).name)

    def import_npz(self, path: str | Path, split: str = "train", classes: list[str] | None = None) -> list[Example]:
        """Import one split of a MedMNIST-style ``.npz`` (see :func:`napari_medprompt.train.data.from_npz`)."""
        from napari_medprompt.train.data import DataError, from_npz

        try:
            data = from_npz(path, split, classes)
        except DataError as err:
            raise LearnError(str(err)) from err
        return self._import(data, "npz", Path(path).name)

    def _import(self, data, origin: str, where: str) -> list[Example]:
        new = []
        for i, (im, y, src, g) in enumerate(zip(data.images, data.labels, data.sources, data.groups)):
            m = None if data.masks is None else data.masks[i]
            if m is not None and not np.asarray(m).any():
                m = None
            label = src if origin == "npz" else f"{where}/{Path(src).parent.name}/{Path(src).name}"
            key = f"{where}#{i}:{content_signature(im)}"  # the same file again updates; equal images stay two
            new.append(self._new(im, data.classes[int(y)], m, label, key, None, None,
                                 f"{where}:{source_name(g) if origin == 'folder' else g}", origin, None, None,
                                 f"{where}: {source_name(src)}"))
            new[-1].source = label
        out = self._put(new)
        self._changed()
        return out

    def remove(self, uids: Iterable[str]) -> int:
        """Remove the examples with these uids; returns how many were removed."""
        drop = set(uids)
        before = len(self._examples)
        self._examples = [e for e in self._examples if e.uid not in drop]
        n = before - len(self._examples)
        if n:
            self._changed()
        return n

    def clear(self) -> None:
        self._examples = []
        self._changed()

    def snapshot(self) -> ExampleSet:
        """A copy of the set as it is now (no folder, no callbacks) for a run in another thread: later
        changes of this set do not reach it. Pixels are shared (examples never change them in place)."""
        import dataclasses

        out = ExampleSet()
        out._declared = list(self._declared)
        out._examples = [dataclasses.replace(e) for e in self._examples]
        return out

    # --- training data -----------------------------------------------------------------------
    def to_fewshot(self, classes: list[str] | None = None, uses_masks: bool = False):
        """The examples as :class:`~napari_medprompt.train.data.FewShotData` (classes sorted, groups kept).
        Checks the set first (:meth:`check`)."""
        from napari_medprompt.train.data import FewShotData

        self.check(uses_masks)
        classes = list(classes) if classes else [c for c, n in self.counts().items() if n]
        ex = [e for e in self._examples if e.class_name in classes]
        masks = [e.mask for e in ex]
        return FewShotData(
            [e.image for e in ex], np.asarray([classes.index(e.class_name) for e in ex], np.int64), classes,
            masks if any(m is not None for m in masks) else None,
            [f"{e.source or 'image'}[{e.slice_index}]" if e.slice_index is not None else (e.source or e.uid)
             for e in ex],
            [e.group for e in ex],
        )

    def modalities(self) -> set[str]:
        return {e.modality.upper() for e in self._examples if e.modality}

    # --- saving ------------------------------------------------------------------------------
    def save(self, folder: str | Path | None = None) -> Path:
        """Write the set to ``folder`` (default: its own). Pixel files first, ``examples.json`` last,
        each atomically; a crash leaves the previous set readable."""
        from napari_medprompt.io.atomic import atomic_write_bytes, atomic_write_text

        if folder is not None:
            self.folder = Path(folder)
        if self.folder is None:
            raise LearnError("this example set has no folder to save to")
        data = self.folder / DATA_DIR
        try:
            data.mkdir(parents=True, exist_ok=True)
            present = {p.stem for p in data.glob("*.npz")}
            for e in self._examples:
                if e.saved and e.uid in present:
                    continue
                buf = io.BytesIO()
                arrays = {"image": e.image} if e.mask is None else {"image": e.image, "mask": e.mask}
                np.savez_compressed(buf, **arrays)
                atomic_write_bytes(data / f"{e.uid}.npz", buf.getvalue())
                e.saved = True
            man = {"format": FORMAT, "classes": list(self._declared),
                   "examples": [e.record() for e in self._examples] + [r for r, _ in self.unreadable]}
            atomic_write_text(self.folder / MANIFEST, json.dumps(man, indent=1))
            keep = set(self.uids) | {str(r.get("uid")) for r, _ in self.unreadable}
            for p in data.glob("*.npz"):
                if p.stem not in keep:
                    p.unlink(missing_ok=True)
        except OSError as err:
            raise LearnError(f"the example set could not be saved to {self.folder}: {err}. The examples are "
                             "still in memory; free space or choose another folder and save again") from err
        return self.folder


def _no_path(key) -> str:
    """``key`` as stored: a key holding a file path (a session's ``image_key`` is ``<path>|shape|spacing``)
    is replaced by a short hash of it, so no folder name (often a patient's) reaches the example set."""
    import hashlib

    text = str(key)
    if "/" in text or "\\" in text:
        return "key-" + hashlib.blake2b(text.encode("utf-8"), digest_size=10).hexdigest()
    return text


def _class_name(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise LearnError(f"a class needs a name (text), got {name!r}")
    return name.strip()


def _plane_spacing(spacing):
    if spacing is None:
        return None
    sp = [float(s) for s in spacing]
    return tuple(sp[-2:]) if len(sp) >= 2 else None
