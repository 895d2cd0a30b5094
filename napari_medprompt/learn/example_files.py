"""The example set on disk (see :mod:`napari_medprompt.learn.examples`)::

    examples.json          format, declared classes, one record per example (written last, atomically)
    data/<uid>.npz         the example's pixels (``image``) and mask (``mask``), written atomically

Reading trusts ``examples.json`` only; an example whose pixel file cannot be read is left out and
returned among the unreadable ones (its record and file stay on disk as they are).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from napari_medprompt.learn.errors import LearnError
from napari_medprompt.learn.example_record import Example

FORMAT = "napari-medprompt-examples/1"
MANIFEST = "examples.json"
DATA_DIR = "data"


def read_examples(folder: Path) -> tuple[list[str], list[Example], list[tuple[dict, str]]]:
    """``(declared classes, examples, (record, reason) of the unreadable ones)`` of the set saved in
    ``folder`` (its ``examples.json`` exists)."""
    path = folder / MANIFEST
    examples: list[Example] = []
    unreadable: list[tuple[dict, str]] = []
    try:
        man = json.loads(path.read_text())
        if not isinstance(man, dict) or man.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        records = list(man["examples"])
        declared = [str(c) for c in man.get("classes", [])]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise LearnError(f"the example set {path} cannot be read ({err}); its pixel files in "
                         f"{folder / DATA_DIR} are untouched") from err
    for rec in records:
        f = folder / DATA_DIR / f"{rec['uid']}.npz"
        try:
            with np.load(f, allow_pickle=False) as z:
                image = z["image"]
                mask = z["mask"] if "mask" in z.files else None
        except Exception as err:  # flagged, kept on disk as it is; the other examples still open
            unreadable.append((dict(rec), f"example {rec.get('uid')} ({rec.get('class')}, "
                                   f"{rec.get('source') or 'image'}): its pixels {f.name} cannot be read "
                                   f"({type(err).__name__}: {err})"))
            continue
        sp = rec.get("spacing")
        examples.append(Example(
            uid=str(rec["uid"]), class_name=str(rec["class"]), image=image, mask=mask,
            source=str(rec.get("source", "")), source_key=str(rec.get("source_key", "")),
            slice_index=None if rec.get("slice") is None else int(rec["slice"]),
            object_id=None if rec.get("object") is None else int(rec["object"]),
            group=str(rec.get("group", "")), origin=str(rec.get("origin", "slice")),
            spacing=None if sp is None else (float(sp[0]), float(sp[1])),
            modality=rec.get("modality"), added=str(rec.get("added", "")), saved=True,
        ))
    return declared, examples, unreadable


def write_examples(folder: Path, declared: list[str], examples: list[Example], unreadable) -> None:
    """Write the pixel files not yet on disk, then ``examples.json`` (the examples' records and those of
    the ``unreadable`` ones, kept as they are), each atomically; remove pixel files no record lists."""
    from napari_medprompt.io.atomic import atomic_write_bytes, atomic_write_text

    data = folder / DATA_DIR
    try:
        data.mkdir(parents=True, exist_ok=True)
        present = {p.stem for p in data.glob("*.npz")}
        for e in examples:
            if e.saved and e.uid in present:
                continue
            buf = io.BytesIO()
            arrays = {"image": e.image} if e.mask is None else {"image": e.image, "mask": e.mask}
            np.savez_compressed(buf, **arrays)
            atomic_write_bytes(data / f"{e.uid}.npz", buf.getvalue())
            e.saved = True
        man = {"format": FORMAT, "classes": list(declared),
               "examples": [e.record() for e in examples] + [r for r, _ in unreadable]}
        atomic_write_text(folder / MANIFEST, json.dumps(man, indent=1))
        keep = {e.uid for e in examples} | {str(r.get("uid")) for r, _ in unreadable}
        for p in data.glob("*.npz"):
            if p.stem not in keep:
                p.unlink(missing_ok=True)
    except OSError as err:
        raise LearnError(f"the example set could not be saved to {folder}: {err}. The examples are "
                         "still in memory; free space or choose another folder and save again") from err
