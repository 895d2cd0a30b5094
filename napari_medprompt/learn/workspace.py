"""Where the learn state lives: a ``medprompt-learn/`` folder next to the session folders.

::

    <folder holding the images and their .medprompt/ session folders>/medprompt-learn/
        examples/    the example set (:mod:`napari_medprompt.learn.examples`)
        models/      the model store: one version per training run (:mod:`napari_medprompt.train.store`)
        seg_models/  the store of segmentation adapters (:mod:`napari_medprompt.learn.seg_adapt`)

:class:`LearnWorkspace` opens both; opening it again (a restart) reads everything back from disk.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = "medprompt-learn"


def learn_folder_for(path) -> Path:
    """The learn folder for a session folder (``ct.medprompt/``), an image file, or a folder of images:
    ``medprompt-learn/`` in the folder that holds them."""
    p = Path(path).expanduser().resolve()
    if p.name.endswith(".medprompt") or p.is_file():
        return p.parent / FOLDER
    return p / FOLDER


class LearnWorkspace:
    """The example set and the model store of one learn folder (created when missing)."""

    def __init__(self, root) -> None:
        from napari_medprompt.learn.examples import ExampleSet
        from napari_medprompt.train.store import ModelStore

        self.root = Path(root)
        self.examples = ExampleSet.open(self.root / "examples")
        self.store = ModelStore(self.root / "models")
        self.seg_store = ModelStore(self.root / "seg_models")  # segmentation adapters (learn.seg_adapt)

    @classmethod
    def beside(cls, path) -> LearnWorkspace:
        """The workspace next to a session folder, an image file or in a folder (:func:`learn_folder_for`)."""
        return cls(learn_folder_for(path))

    def reopen(self) -> LearnWorkspace:
        """A new workspace object read from disk (what a restart sees)."""
        return LearnWorkspace(self.root)
