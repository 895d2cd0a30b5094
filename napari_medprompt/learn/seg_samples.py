"""Which accepted slices a segmentation-adapter run learns from and which it holds out (Qt-free).

:func:`accepted_objects` lists each object of a session with its accepted (or corrected) slices that carry
a non-empty mask, and why it cannot train when it cannot. :func:`hold_out` sets slices aside that the run
never trains on, as :mod:`napari_medprompt.learn.seg_adapt` describes: whole images when there are several,
else per object a block at the end of its accepted slices, with a gap of ``gap`` slices around every
held-out slice that no object trains on. :func:`snapshot` copies the samples' slices, masks and prompts out
of their sessions; :func:`loop_data` makes the training loop's data of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_medprompt.learn.errors import LearnError
from napari_medprompt.learn.seg_methods import SAM2_FAMILY


@dataclass
class AcceptedObject:
    object_id: int
    name: str  # the object's own name ("" when it has none)
    slices: list[int]
    problem: str | None = None  # why it cannot train (None: it can)

    @property
    def n_slices(self) -> int:
        return len(self.slices)

    @property
    def label(self) -> str:
        return self.name or f"object {self.object_id}"


def accepted_objects(session, statuses=("accepted", "edited")) -> list[AcceptedObject]:
    """Every object with its accepted (or corrected) slices that carry a non-empty mask."""
    out = []
    for oid, obj in sorted(session.objects.items()):
        zs = [int(z) for z, s in sorted(obj.slice_status.items()) if s in statuses]
        empty = [z for z in zs if not np.any(np.asarray(session.labels[z]) == oid)]
        zs = [z for z in zs if z not in empty]
        problem = None
        if not zs:
            problem = ("no accepted slice" if not empty else
                       f"its accepted slice(s) {', '.join(map(str, empty))} have an empty mask")
        elif len(zs) == 1:
            problem = (f"accepted on one slice only ({zs[0]}): at least two are needed, one to learn from and "
                       "one held out to compare the models")
        out.append(AcceptedObject(int(oid), (obj.name or "").strip(), zs, problem))
    return out


@dataclass
class Sample:
    """One accepted slice of one object: what a run trains on or holds out."""

    source: int  # index into the run's sources
    object_name: str
    object_id: int
    z: int
    image: np.ndarray | None = None  # the snapshot taken when the run was constructed
    mask: np.ndarray | None = None
    prompt: dict | None = None
    label: str = ""  # "<image>: <object>, slice <z>"
    group: str = ""  # the image key


def hold_out(sources, samples: list[Sample], objects: list[str], holdout: float, gap: int,
             seed: int) -> tuple[list[Sample], list[Sample], str]:
    """``(training samples, held-out samples, a note saying what was held out)`` of ``samples`` (the
    accepted slices of the ``objects``, by name, in ``sources``: a list of ``(session, volume)``):
    about ``holdout`` of the images, or with one image about ``holdout`` of each object's slices.
    Raises :class:`LearnError` when an object would have nothing left to train on."""
    keys = list(dict.fromkeys(s.image_key for s, _v in sources))
    if len(keys) > 1:
        rng = np.random.default_rng(seed)
        k = min(len(keys) - 1, max(1, int(round(holdout * len(keys)))))
        held = {keys[int(i)] for i in rng.permutation(len(keys))[:k]}
        src_key = [s.image_key for s, _v in sources]
        tr = [s for s in samples if src_key[s.source] not in held]
        va = [s for s in samples if src_key[s.source] in held]
        names = [sources[i][0].image_name for i in range(len(sources)) if src_key[i] in held]
        note = (f"whole images held out: {', '.join(names)} ({len(va)} accepted slices); "
                f"{len(tr)} slices of the other {len(keys) - k} image(s) train")
        for name in objects:
            if not any(s.object_name == name for s in tr):
                raise LearnError(f"{name} is accepted only on the held-out image(s); accept it on another image")
        return tr, va, note
    blocks = {}
    for name in objects:
        mine = sorted((s for s in samples if s.object_name == name), key=lambda s: s.z)
        n = len(mine)
        k = min(n - 1, max(1, int(round(holdout * n))))
        blocks[name] = (mine[: n - k], mine[n - k:])
    held_z = {s.z for _rest, held in blocks.values() for s in held}
    near_z = {z + d for z in held_z for d in range(-gap, gap + 1)}
    tr, va, parts = [], [], []
    for name, (rest, held) in blocks.items():
        kept = [s for s in rest if s.z not in near_z]
        left_out = len(rest) - len(kept)
        if kept:
            parts.append(f"{name}: slices {slice_ranges(held)} held out, trains on {slice_ranges(kept)}"
                         + (f" ({left_out} slice(s) on or neighbouring a held-out slice left out)"
                            if left_out else ""))
        else:
            kept = [s for s in rest if s.z not in held_z]
            if not kept:
                raise LearnError(f"{name}: every slice it is accepted on is held out for an object; accept "
                                 "it on more slices (training on them would make the held-out Dice not held out)")
            parts.append(f"{name}: slices {slice_ranges(held)} held out, trains on {slice_ranges(kept)} "
                         f"(NO {gap}-slice gap: it has no accepted slice away from the held-out ones, so it trains "
                         "on slices next to held-out slices)")
        tr += kept
        va += held
    note = ("one image: per object, a block of its last accepted slices is held out; no object trains on "
            f"any held-out slice (slices {slice_ranges(va)}) or, unless noted, within {gap} slice(s) of one — "
            + "; ".join(parts))
    return tr, va, note


def snapshot(samples: list[Sample], sources) -> None:
    """Copy each sample's slice, mask and prompt out of its session in ``sources`` (a list of
    ``(session, volume)``) now, on the caller's thread: later edits of the session do not reach them."""
    import copy

    for s in samples:
        session, vol = sources[s.source]
        s.image = np.array(vol[s.z], copy=True)
        s.mask = np.asarray(session.labels[s.z]) == s.object_id
        s.prompt = copy.deepcopy(session.objects[s.object_id].prompts.get(s.z))
        s.label = f"{session.image_name}: {s.object_name}, slice {s.z}"
        s.group = str(session.image_key)


def loop_data(samples: list[Sample], family: str, window: tuple[float, float]):
    """The training-loop data of ``samples``, from their snapshot (never from the session): SAM2 pairs
    seen through ``window`` for the SAM2 family, else slices with the object's name as the text prompt."""
    if family == SAM2_FAMILY:
        from napari_medprompt.seg_adapters.pairs import Sam2PairData

        return Sam2PairData([s.image for s in samples], [s.mask for s in samples], [window] * len(samples),
                            [None] * len(samples), [s.prompt for s in samples], [s.label for s in samples],
                            [s.group for s in samples]).to_segdata()
    from napari_medprompt.train.seg_data import SegData

    return SegData([s.image.astype(np.float32) for s in samples],  # windowed by the model's preprocessing
                   [s.mask.astype(np.uint8) for s in samples], [[s.object_name] for s in samples],
                   [s.label for s in samples], [s.group for s in samples])


def slice_ranges(samples) -> str:
    """The slices of ``samples`` as ranges: "3-5, 8" ("none" when empty)."""
    zs = sorted({s.z for s in samples})
    if not zs:
        return "none"
    runs, start, prev = [], zs[0], zs[0]
    for z in zs[1:] + [None]:
        if z is not None and z == prev + 1:
            prev = z
            continue
        runs.append(f"{start}" if start == prev else f"{start}-{prev}")
        if z is not None:
            start = prev = z
    return ", ".join(runs)


def slices_by_object(samples) -> dict[str, list[int]]:
    """``{object name: its sorted slices}`` of ``samples``."""
    out: dict[str, list[int]] = {}
    for s in samples:
        out.setdefault(s.object_name, []).append(s.z)
    return {k: sorted(v) for k, v in out.items()}
