"""Learning from annotations, Qt-free: example sets, training runs, predictions, heat maps, versions.

The Learn dock (``napari_medprompt._qt.learn``) is a view over these objects; tests drive them
without Qt. Torch is imported only when a run, a prediction or a device check needs it.
"""

from napari_medprompt.learn.errors import LearnError
from napari_medprompt.learn.examples import Example, ExampleSet, content_signature, source_name
from napari_medprompt.learn.methods import (
    DeviceChoice,
    MethodChoice,
    backbone_choices,
    estimate_epoch_seconds,
    method_choices,
    pick_device,
)
from napari_medprompt.learn.predict import HeatmapVolume, Prediction, Predictor, check_compatible
from napari_medprompt.learn.run import LearnEvent, LearnRun, RunResult
from napari_medprompt.learn.versions import NO_ACTIVE, activate, compare, delete_version, rollback, version_rows
from napari_medprompt.learn.workspace import LearnWorkspace, learn_folder_for

__all__ = [
    "NO_ACTIVE", "DeviceChoice", "Example", "ExampleSet", "HeatmapVolume", "LearnError", "LearnEvent",
    "LearnRun", "LearnWorkspace", "MethodChoice", "Prediction", "Predictor", "RunResult", "activate",
    "backbone_choices", "check_compatible", "compare", "content_signature", "delete_version",
    "estimate_epoch_seconds", "learn_folder_for", "method_choices", "pick_device", "rollback", "source_name",
    "version_rows",
]
