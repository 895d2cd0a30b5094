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

An example and its checks are in :mod:`~napari_medprompt.learn.example_record`, the files in
:mod:`~napari_medprompt.learn.example_files`, examples made from a session, a folder or an archive in
:mod:`~napari_medprompt.learn.example_import`; their public names are importable from here as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from napari_medprompt.learn.errors import LearnError
from napari_medprompt.learn.example_files import DATA_DIR, FORMAT, MANIFEST, read_examples, write_examples
from napari_medprompt.learn.example_import import folder_examples, npz_examples, session_examples
from napari_medprompt.learn.example_record import (
    ORIGINS,
    Example,
    checked_class_name,
    content_signature,
    key_without_path,
    new_example,
    plane_spacing,
    source_name,
)

__all__ = ["DATA_DIR", "FORMAT", "MANIFEST", "ORIGINS", "THUMB_SIZE", "Example", "ExampleSet", "content_signature",
           "source_name"]

THUMB_SIZE = 64


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
        if (out.folder / MANIFEST).exists():
            out._declared, out._examples, out.unreadable = read_examples(out.folder)
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
        name = checked_class_name(name)
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
        new = checked_class_name(new)
        for e in self._examples:
            if e.class_name == old:
                e.class_name = new
        self._declared = [new if c == old else c for c in self._declared]
        self._changed()

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
        e = new_example(image, class_name, mask, source, source_key, slice_index, object_id, group, origin,
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
        key = key_without_path(source_key) if source_key else content_signature(vol)
        return self.add(vol[z], class_name, mask=mask, source=source, source_key=key, slice_index=z,
                        object_id=object_id, group=group, origin="object" if object_id is not None else "slice",
                        spacing=plane_spacing(spacing), modality=modality)

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
        key = key_without_path(source_key) if source_key else content_signature(vol)
        src = source if source is not None else session.image_name
        new, unclassed = session_examples(session, vol, key, src, modality, statuses, image_slices)
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
        return self._add_all(new)

    def import_folder(self, root: str | Path) -> list[Example]:
        """Import ``root/<class>/<image>`` (see :func:`napari_medprompt.train.data.from_folder`)."""
        return self._add_all(folder_examples(root))

    def import_npz(self, path: str | Path, split: str = "train", classes: list[str] | None = None) -> list[Example]:
        """Import one split of a MedMNIST-style ``.npz`` (see :func:`napari_medprompt.train.data.from_npz`)."""
        return self._add_all(npz_examples(path, split, classes))

    def _add_all(self, new: list[Example]) -> list[Example]:
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
        if folder is not None:
            self.folder = Path(folder)
        if self.folder is None:
            raise LearnError("this example set has no folder to save to")
        write_examples(self.folder, self._declared, self._examples, self.unreadable)
        return self.folder
