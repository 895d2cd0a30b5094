"""Undo/redo for a label map: each step keeps per-slice sparse diffs, never whole-volume copies.

A :class:`SliceDiff` stores the flat indices of the voxels of one slice that changed with their old
and new values, so applying it backwards or forwards restores the slice exactly. A :class:`Step`
groups the diffs of one user action with the object records (names, status, prompts,
provenance) before and after it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SliceDiff:
    index: np.ndarray  # flat indices into the slice (int32)
    old: np.ndarray
    new: np.ndarray

    @classmethod
    def between(cls, before: np.ndarray, after: np.ndarray) -> SliceDiff | None:
        """The diff turning ``before`` into ``after``; None when they are equal."""
        changed = np.flatnonzero(before.ravel() != after.ravel())
        if changed.size == 0:
            return None
        return cls(changed.astype(np.int32), before.ravel()[changed], after.ravel()[changed])

    def apply(self, plane: np.ndarray, forward: bool) -> None:
        """Write the new (``forward``) or old values into ``plane`` (a view of one slice)."""
        plane.flat[self.index] = self.new if forward else self.old

    @property
    def nbytes(self) -> int:
        return int(self.index.nbytes + self.old.nbytes + self.new.nbytes)

    def then(self, later: SliceDiff) -> SliceDiff | None:
        """The single diff doing ``self`` and then ``later`` (None when they cancel out)."""
        index = np.union1d(self.index, later.index)
        in_first = np.isin(index, self.index)
        in_later = np.isin(index, later.index)
        old = np.where(in_first, _lookup(self.index, self.old, index), _lookup(later.index, later.old, index))
        new = np.where(in_later, _lookup(later.index, later.new, index), _lookup(self.index, self.new, index))
        keep = old != new
        if not keep.any():
            return None
        return SliceDiff(index[keep].astype(np.int32), old[keep].astype(self.old.dtype), new[keep].astype(self.new.dtype))


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``values`` at the positions of ``query`` in the sorted ``keys`` (0 where absent)."""
    if keys.size == 0:
        return np.zeros(query.shape, dtype=values.dtype)
    pos = np.clip(np.searchsorted(keys, query), 0, keys.size - 1)
    return np.where(keys[pos] == query, values[pos], 0).astype(values.dtype)


@dataclass
class Step:
    """One undoable action."""

    label: str
    diffs: dict[int, SliceDiff] = field(default_factory=dict)
    objects_before: dict[int, dict[str, Any]] | None = None  # None: the objects did not change
    objects_after: dict[int, dict[str, Any]] | None = None

    @property
    def nbytes(self) -> int:
        return sum(d.nbytes for d in self.diffs.values())

    @property
    def slices(self) -> set[int]:
        return set(self.diffs)


class History:
    """A bounded undo/redo stack of :class:`Step` s.

    ``max_steps`` and ``max_bytes`` bound what is kept (the oldest steps go first); a new step
    clears the redo side. Between :meth:`begin_group` and :meth:`end_group`, steps pushed with
    ``grouped=True`` are merged into one step (e.g. a propagation committed in chunks is still undone
    in one go); a step pushed with ``grouped=False`` meanwhile (the user's own edit) stays a step of its
    own, and the group's later steps then start a new group step after it, so the history stays
    linear and every undo exact. An undo or redo ends the group.
    """

    def __init__(self, max_steps: int = 200, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.max_steps = int(max_steps)
        self.max_bytes = int(max_bytes)
        self._undo: list[Step] = []
        self._redo: list[Step] = []
        self._group_label: str | None = None
        self._group: Step | None = None

    def begin_group(self, label: str) -> None:
        """Merge the steps pushed from now until :meth:`end_group` into one step called ``label``."""
        self._group_label = str(label)
        self._group = None

    def end_group(self) -> None:
        self._group_label = None
        self._group = None

    @property
    def grouping(self) -> bool:
        return self._group_label is not None

    def push(self, step: Step, grouped: bool = True) -> None:
        if self._group_label is not None and grouped:
            if self._group is not None and self._undo and self._undo[-1] is self._group:
                _merge_into(self._group, step)
                self._redo.clear()
                self._trim()
                return
            step = Step(self._group_label, dict(step.diffs), dict(step.objects_before or {}),
                        dict(step.objects_after or {}))
            self._group = step
        self._undo.append(step)
        self._redo.clear()
        self._trim()

    def _trim(self) -> None:
        while len(self._undo) > self.max_steps:
            self._undo.pop(0)
        while len(self._undo) > 1 and sum(s.nbytes for s in self._undo) > self.max_bytes:
            self._undo.pop(0)

    def pop_undo(self) -> Step | None:
        self._group = None  # later pushes of an open group start a new step
        if not self._undo:
            return None
        step = self._undo.pop()
        self._redo.append(step)
        return step

    def pop_redo(self) -> Step | None:
        self._group = None
        if not self._redo:
            return None
        step = self._redo.pop()
        self._undo.append(step)
        return step

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def undo_label(self) -> str | None:
        return self._undo[-1].label if self._undo else None

    @property
    def redo_label(self) -> str | None:
        return self._redo[-1].label if self._redo else None


def _merge_into(group: Step, step: Step) -> None:
    """Fold ``step`` (which happened after ``group``) into ``group``."""
    for z, diff in step.diffs.items():
        earlier = group.diffs.get(z)
        merged = diff if earlier is None else earlier.then(diff)
        if merged is None:
            group.diffs.pop(z, None)
        else:
            group.diffs[z] = merged
    if group.objects_before is None:
        group.objects_before = {}
    for oid, data in (step.objects_before or {}).items():
        group.objects_before.setdefault(oid, data)
    if group.objects_after is None:
        group.objects_after = {}
    group.objects_after.update(step.objects_after or {})


def apply_step(labels: np.ndarray, step: Step, forward: bool) -> set[int]:
    """Apply ``step``'s diffs to ``labels`` (z, y, x) in place; returns the slices touched."""
    for z, diff in step.diffs.items():
        diff.apply(labels[z], forward)
    return step.slices


def diff_slices(before: dict[int, np.ndarray], labels: np.ndarray, slices: Iterable[int]) -> dict:
    """Diffs between saved ``before`` planes and the current ``labels`` for ``slices``."""
    out: dict[int, SliceDiff] = {}
    for z in slices:
        d = SliceDiff.between(before[z], labels[z])
        if d is not None:
            out[int(z)] = d
    return out
