"""Examples made from a source, for :class:`~napari_medprompt.learn.examples.ExampleSet` to add: the
classed objects (and the image's class) of an annotation session, a folder with one sub-folder per
class, a MedMNIST-style ``.npz`` archive."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from napari_medprompt.learn.errors import LearnError
from napari_medprompt.learn.example_record import Example, content_signature, new_example, source_name


def session_examples(session, vol: np.ndarray, key: str, src, modality, statuses: Sequence[str],
                     image_slices: Iterable[int] | None) -> tuple[list[Example], int]:
    """``(examples, objects left out)`` of ``session`` over ``vol`` (Z, Y, X): every object that has a
    class, on every slice whose status is in ``statuses``, one example each (mask = the object's voxels
    on that slice); the image's class on ``image_slices`` (default: the only slice of a 2D image; none
    of a volume) without a mask. Objects left out: those with such slices but no class."""
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
            new.append(new_example(vol[z], obj.class_name, m, src, key, z, oid, key, "object", spacing,
                                   modality, f"object {obj.display_name}, slice {z}"))
    if session.image_class is not None:
        zs = [0] if image_slices is None and vol.shape[0] == 1 else list(image_slices or [])
        for z in zs:
            new.append(new_example(vol[int(z)], session.image_class, None, src, key, int(z), None, key,
                                   "image", spacing, modality, f"image, slice {z}"))
    return new, unclassed


def folder_examples(root: str | Path) -> list[Example]:
    """``root/<class>/<image>`` as examples (see :func:`napari_medprompt.train.data.from_folder`)."""
    from napari_medprompt.train.data import DataError, from_folder

    try:
        data = from_folder(root)
    except DataError as err:
        raise LearnError(str(err)) from err
    return dataset_examples(data, "folder", Path(root).name)


def npz_examples(path: str | Path, split: str = "train", classes: list[str] | None = None) -> list[Example]:
    """One split of a MedMNIST-style ``.npz`` as examples (see :func:`napari_medprompt.train.data.from_npz`)."""
    from napari_medprompt.train.data import DataError, from_npz

    try:
        data = from_npz(path, split, classes)
    except DataError as err:
        raise LearnError(str(err)) from err
    return dataset_examples(data, "npz", Path(path).name)


def dataset_examples(data, origin: str, where: str) -> list[Example]:
    """The images of ``data`` (a :class:`~napari_medprompt.train.data.FewShotData` read from ``where``) as
    examples: each keyed by its place in the dataset and its pixels (the same file imported again updates
    its examples; equal images stay two), grouped as the dataset groups them."""
    new = []
    for i, (im, y, src, g) in enumerate(zip(data.images, data.labels, data.sources, data.groups)):
        m = None if data.masks is None else data.masks[i]
        if m is not None and not np.asarray(m).any():
            m = None
        label = src if origin == "npz" else f"{where}/{Path(src).parent.name}/{Path(src).name}"
        key = f"{where}#{i}:{content_signature(im)}"  # the same file again updates; equal images stay two
        new.append(new_example(im, data.classes[int(y)], m, label, key, None, None,
                               f"{where}:{source_name(g) if origin == 'folder' else g}", origin, None, None,
                               f"{where}: {source_name(src)}"))
        new[-1].source = label
    return new
