"""Layout of the Segment widget (Qt widgets only; the behaviour lives in widget.py)."""

from __future__ import annotations

from types import SimpleNamespace

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_medprompt._qt.shortcuts import keyboard_shortcuts, shortcut_for
from napari_medprompt.imaging.window import FOLLOW_DISPLAY, MODEL_WINDOW_CONVENTIONS, preset_names

DIRECTIONS = {
    "both directions": ("forward", "backward"),
    "up (increasing slice)": ("forward",),
    "down (decreasing slice)": ("backward",),
}


#: Modalities the chooser offers (DICOM codes).
MODALITIES = ("CT", "MR", "DX", "CR", "MG", "PT", "US", "OT")
AUTO_LABEL = "auto (checkpoint or display)"
FOLLOW_DISPLAY_LABEL = "follow the display preset"


def model_window_options(modality: str) -> dict[str, object]:
    """Labels of the "Model window" chooser -> the segmenter's ``model_window`` value. The first
    (the default) is the checkpoint's own convention when it declares one, else the display preset."""
    opts: dict[str, object] = {AUTO_LABEL: None, FOLLOW_DISPLAY_LABEL: FOLLOW_DISPLAY}
    opts.update({f"fixed preset: {name}": name for name in preset_names(modality)})
    opts.update({f"convention: {name}": name for name in MODEL_WINDOW_CONVENTIONS})
    return opts


def model_window_value(label: str):
    """The ``model_window`` value of a chooser label (any modality's)."""
    for modality in ("CT", "OT"):
        opts = model_window_options(modality)
        if label in opts:
            return opts[label]
    return None


def fill_modality(combo: QComboBox, modality: str) -> None:
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(list(MODALITIES) + ([modality] if modality and modality not in MODALITIES else []))
    combo.setCurrentText(modality or "OT")
    combo.blockSignals(False)


def fill_model_windows(combo: QComboBox, modality: str, current: str) -> None:
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(list(model_window_options(modality)))
    combo.setCurrentText(current if combo.findText(current) >= 0 else AUTO_LABEL)
    combo.blockSignals(False)


def _button(text: str, action: str | None, tip: str, key_in_label: bool = True) -> QPushButton:
    key = shortcut_for(action) if action else ""
    b = QPushButton(f"{text} [{key}]" if key and key_in_label else text)
    b.setToolTip(f"{tip} (shortcut: {key})" if key else tip)
    return b


def polarity_text(positive: bool) -> str:
    if positive:
        return ("Click: <b style='color:#00e000'>positive</b> point · Shift+Click: "
                f"<b style='color:#ff4040'>negative</b> · {shortcut_for('toggle_polarity')} toggles")
    return ("Click: <b style='color:#ff4040'>negative</b> point · Shift+Click: "
            f"<b style='color:#00e000'>positive</b> · {shortcut_for('toggle_polarity')} toggles")


def build(owner, backend_panel, objects_panel, text_panel=None) -> SimpleNamespace:
    """Create the widget tree; returns a namespace of the controls (``ui.accept`` ...)."""
    ui = SimpleNamespace()
    ui.image = QComboBox()
    ui.image.setToolTip("The image to segment (a grey 2D image or a volume)")
    ui.labels_source = QComboBox()
    ui.labels_source.setToolTip("Import an existing Labels layer of the same shape into the session")
    ui.window = QComboBox()
    ui.window.setToolTip("Window / level preset: changes only the display contrast, never the voxel values")
    ui.modality = QComboBox()
    ui.modality.setToolTip("The image's modality (CT, MR, DX = X-ray ...): the window presets, the model "
                           "window and the classic backend's rules follow it. Guessed when the file "
                           "does not say; change it here when the guess is wrong.")
    ui.model_window = QComboBox()
    ui.model_window.setToolTip("What the model sees: by default the checkpoint's own convention when it "
                               "declares one (MedSAM2: CT L40/W400, MR 0.5-99.5 %), else the display's "
                               "window preset; or always the display preset, a fixed preset whatever "
                               "the display shows, or a named convention. Recorded with every mask.")
    top = QFormLayout()
    top.addRow("Image", ui.image)
    top.addRow("Labels", ui.labels_source)
    top.addRow("Modality", ui.modality)
    top.addRow("Window", ui.window)
    top.addRow("Model window", ui.model_window)

    model = QGroupBox("Model")
    QVBoxLayout(model).addWidget(backend_panel)
    obj = QGroupBox("Object")
    QVBoxLayout(obj).addWidget(objects_panel)

    prompts = QGroupBox("Prompt")
    ui.polarity = QLabel(polarity_text(True))
    ui.polarity.setWordWrap(True)
    ui.polarity.setToolTip("\n".join(f"{k}: {d}" for k, d in keyboard_shortcuts()))
    ui.plane = QLabel("Prompting in the <b>axial</b> plane.")
    ui.plane.setWordWrap(True)
    ui.plane.setToolTip("Prompts go to the plane the viewer shows: roll the dims (the button at the "
                        "bottom left) for a coronal or sagittal view; propagation follows that plane's axis")
    ui.draw_help = QLabel("'prompts (box)' layer: rectangle = box · path = scribble (points along it) · "
                          "polygon / lasso / ellipse = mask prompt")
    ui.draw_help.setWordWrap(True)
    ui.draw_help.setStyleSheet("color: #b0b0b0; font-size: 11px;")
    ui.accept = _button("Accept", "accept", "Commit the preview of the current object")
    ui.clear = _button("Clear prompts", None, "Remove the points, boxes, scribbles and lassos of the current object")
    row = QHBoxLayout()
    row.addWidget(ui.accept)
    row.addWidget(ui.clear)
    ui.init_source = QComboBox()
    ui.init_source.setToolTip("A Labels layer of the same shape as the image")
    ui.init_from_label = QPushButton("Use as prompt")
    ui.init_from_label.setToolTip("Use the chosen label layer's object on the slice shown (its selected "
                                  "label, else the largest) as a mask prompt: refine, accept, propagate")
    init = QHBoxLayout()
    init.addWidget(QLabel("From label"))
    init.addWidget(ui.init_source, 1)
    init.addWidget(ui.init_from_label)
    pl = QVBoxLayout(prompts)
    pl.addWidget(ui.plane)
    pl.addWidget(ui.polarity)
    pl.addWidget(ui.draw_help)
    pl.addLayout(init)
    pl.addLayout(row)

    prop = QGroupBox("Propagate through the volume")
    ui.whole = QCheckBox("whole volume")
    ui.whole.setChecked(True)
    ui.first, ui.last = QSpinBox(), QSpinBox()
    for sb in (ui.first, ui.last):
        sb.setEnabled(False)
    ui.whole.toggled.connect(lambda on: [sb.setEnabled(not on) for sb in (ui.first, ui.last)])
    ui.direction = QComboBox()
    ui.direction.addItems(list(DIRECTIONS))
    ui.propagate = _button("Propagate", "propagate", "Propagate the current object slice by slice; "
                           "it stops by itself where the object ends")
    ui.cancel = _button("Cancel", "cancel", "Stop the running propagation (results so far are kept)")
    rng = QHBoxLayout()
    rng.addWidget(QLabel("or slices"))
    rng.addWidget(ui.first)
    rng.addWidget(QLabel("to"))
    rng.addWidget(ui.last)
    buttons = QHBoxLayout()
    buttons.addWidget(ui.propagate)
    buttons.addWidget(ui.cancel)
    prl = QVBoxLayout(prop)
    prl.addWidget(ui.whole)
    prl.addLayout(rng)
    prl.addWidget(ui.direction)
    prl.addLayout(buttons)

    ui.undo = _button("Undo", "undo", "Undo the last commit, deletion, hand edit or propagation", False)
    ui.redo = _button("Redo", "redo", "Redo", False)
    ui.save = _button("Save segmentation…", None, "Write the label map as NIfTI with a JSON sidecar")
    hist = QHBoxLayout()
    hist.addWidget(ui.undo)
    hist.addWidget(ui.redo)
    hist.addWidget(ui.save)

    ui.status = QLabel("Open an image to start.")
    ui.status.setWordWrap(True)
    keys = QLabel(" · ".join(f"<b>{k}</b> {d.split(':')[0].split(' (')[0].lower()}"
                             for k, d in keyboard_shortcuts()[:6]))
    keys.setWordWrap(True)
    keys.setStyleSheet("color: #b0b0b0; font-size: 11px;")

    inner = QWidget()
    v = QVBoxLayout(inner)
    v.addLayout(top)
    v.addWidget(model)
    v.addWidget(obj)
    v.addWidget(prompts)
    if text_panel is not None:
        text = QGroupBox("Text prompt")
        QVBoxLayout(text).addWidget(text_panel)
        v.addWidget(text)
    v.addWidget(prop)
    v.addLayout(hist)
    v.addWidget(ui.status)
    v.addWidget(keys)
    v.addStretch(1)
    ui.root = QScrollArea()
    ui.root.setWidgetResizable(True)
    ui.root.setWidget(inner)
    ui.root.setMinimumWidth(400)
    return ui


def compact_combos(root: QWidget, chars: int = 8) -> None:
    """Let combo boxes shrink to the dock's width (long layer or structure names are elided)."""
    for cb in root.findChildren(QComboBox):
        cb.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        cb.setMinimumContentsLength(chars)


def fill_combo(combo: QComboBox, layers, current, placeholder: str) -> None:
    combo.blockSignals(True)
    combo.clear()
    combo.addItem(placeholder, None)
    for ly in layers:
        combo.addItem(ly.name, ly)
    idx = combo.findData(current) if current is not None else 0
    combo.setCurrentIndex(max(idx, 0))
    combo.blockSignals(False)


def fill_windows(combo: QComboBox, names, current: str) -> None:
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(list(names))
    combo.setCurrentText(current)
    combo.blockSignals(False)


def set_range(ui, n_slices: int) -> None:
    for sb in (ui.first, ui.last):
        sb.setRange(0, max(n_slices - 1, 0))
    ui.first.setValue(0)
    ui.last.setValue(max(n_slices - 1, 0))


def slice_range(ui):
    if ui.whole.isChecked():
        return None
    lo, hi = sorted((ui.first.value(), ui.last.value()))
    return lo, hi


def directions(ui) -> tuple[str, ...]:
    return DIRECTIONS[ui.direction.currentText()]


def update_buttons(ui, session, running: bool, seg_ready: bool) -> None:
    has = session is not None
    # Accept / Propagate stay clickable without an image or backend: a click then says what is missing.
    ui.accept.setEnabled(not running)
    ui.propagate.setEnabled(not running)
    ui.cancel.setEnabled(running)
    ui.undo.setEnabled(has and not running and session.can_undo)
    ui.redo.setEnabled(has and not running and session.can_redo)
    ui.save.setEnabled(has and not running)
