"""Errors raised by the readers and writers. Every message names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class ImageReadError(ValueError):
    """A file or folder this package recognises but cannot read (corrupt, truncated, unsupported
    content such as 4D data or a missing decoder). ``path`` and ``problem`` are kept as attributes;
    ``str(err)`` is ``"<path>: <problem>"`` so a GUI can show it as is."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UnsupportedFormat(ValueError):
    """A path that no reader of this package recognises (napari's reader hook returns None)."""

    def __init__(self, path: str | Path, problem: str = "not a recognised image format") -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class LabelWriteError(ValueError):
    """A label map that cannot be saved as asked (shape mismatch with its image, bad label ids)."""
