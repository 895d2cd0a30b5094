"""Widgets of the Learn panel (layout only; napari_medprompt._qt.learn.widget and its tab modules wire them up)."""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QProgressBar,
    QScrollArea,
    QSlider,
    QSpinBox,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from napari_medprompt._qt.learn.options import OptionForm
from napari_medprompt._qt.learn.plot import LinePlot
from napari_medprompt._qt.ui_common import button, table

EXAMPLE_COLUMNS = ["", "Class", "Source", "Slice", "Object", "Group"]
EXAMPLE_TIPS = ["Thumbnail (the object's outline in white)", "The class the example teaches",
                "Image it comes from (file name only)", "Slice index in that image",
                "Object (label id) whose mask it carries", "Image/series: a validation split never puts one "
                "group on both sides"]
VERSION_COLUMNS = ["Active", "Version", "Method on backbone", "Metrics", "Date"]
PROB_COLUMNS = ["Class", "Probability"]
OBJECT_COLUMNS = ["Object", "Class given", "Predicted", "Probability", "Slices"]
THUMB = 40
PREDICT_MODES = ["Current slice", "Slice range", "Whole volume", "Every object"]
COMPARE_COLUMNS = ["Object", "Slices", "Base", "Adapted", "Δ Dice"]
COMPARE_TIPS = ["The accepted object", "Its held-out accepted slices (never trained on)",
                "Mean Dice of the base model on them", "Mean Dice of the adapted model on them", "Adapted minus base"]
SEG_VERSION_COLUMNS = ["✔", "Version", "Method", "Objects", "Held-out Dice"]
FAST = "⚡"


def wrapped(text: str = "") -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(True)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return lab


def _lr_box(decimals: int, low: float, high: float, tip: str) -> QDoubleSpinBox:
    """A learning-rate box from ``low`` to ``high`` in steps of 1e-4."""
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(low, high)
    box.setSingleStep(1e-4)
    box.setToolTip(tip)
    return box


def _examples_tab(w) -> QWidget:
    page = QWidget()
    lay = QVBoxLayout(page)
    w.counts = wrapped()
    lay.addWidget(w.counts)
    w.examples = table(EXAMPLE_COLUMNS, stretch=2)
    w.examples.horizontalHeader().setSectionResizeMode(5, QHeaderView.ResizeMode.Interactive)
    w.examples.setColumnWidth(5, 90)
    w.examples.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    w.examples.setIconSize(QSize(THUMB, THUMB))
    w.examples.verticalHeader().setDefaultSectionSize(THUMB + 4)
    for c, tip in enumerate(EXAMPLE_TIPS):
        w.examples.horizontalHeaderItem(c).setToolTip(tip)
    lay.addWidget(w.examples, 1)
    row = QHBoxLayout()
    row.addWidget(QLabel("Class"))
    w.class_box = QComboBox()
    w.class_box.setEditable(True)
    w.class_box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
    w.class_box.lineEdit().setPlaceholderText("e.g. benign, malignant, normal, pneumonia")
    w.class_box.setToolTip("The class given to slices and images added with the buttons below (type a new "
                           "one or pick one already used)")
    row.addWidget(w.class_box, 1)
    lay.addLayout(row)
    grid = QGridLayout()
    w.add_slice = button("Add current slice", "Add the slice the viewer shows (a 2D image: the whole image) "
                         "with the class above, without a mask")
    w.add_objects = button("Add accepted objects", "Add every object of this image that has a class (set in "
                           "the Review panel), one example per accepted slice, with its mask")
    w.import_folder = button("Import folder…", "Import a folder with one sub-folder per class "
                             "(class/case/image.png)")
    w.import_npz = button("Import .npz…", "Import the training split of a MedMNIST-style .npz archive")
    w.remove = button("Remove selected", "Remove the selected examples from the set (nothing else changes)")
    for i, b in enumerate((w.add_slice, w.add_objects, w.import_folder, w.import_npz, w.remove)):
        grid.addWidget(b, i // 2, i % 2)
    lay.addLayout(grid)
    return page


def _train_tab(w) -> QWidget:
    page = QWidget()
    lay = QVBoxLayout(page)
    form = QFormLayout()
    w.method = QComboBox()
    w.method.setToolTip("How the classifier is learnt on top of the frozen image encoder")
    form.addRow("Method", w.method)
    w.method_desc = wrapped()
    form.addRow(w.method_desc)
    w.backbone = QComboBox()
    w.backbone.setToolTip("The frozen image encoder (pretrained weights when available)")
    for cb in (w.method, w.backbone):  # long names (hf-hub:...) must not widen the dock
        cb.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        cb.setMinimumContentsLength(16)
    form.addRow("Backbone", w.backbone)
    w.backbone_desc = wrapped()
    form.addRow(w.backbone_desc)
    lay.addLayout(form)
    box = QGroupBox("Options")
    bl = QVBoxLayout(box)
    w.options = OptionForm()
    bl.addWidget(w.options)
    sched = QFormLayout()
    w.epochs = QSpinBox()
    w.epochs.setRange(0, 1000)
    w.epochs.setToolTip("Passes over the examples (0 for a training-free method)")
    sched.addRow("epochs", w.epochs)
    w.lr = _lr_box(5, 1e-6, 10.0, "Learning rate of the optimiser (the method's default is filled in)")
    sched.addRow("learning rate", w.lr)
    bl.addLayout(sched)
    w.defaults = button("Defaults", "Put every option back to the method's defaults")
    bl.addWidget(w.defaults, 0, Qt.AlignmentFlag.AlignRight)
    lay.addWidget(box)
    w.device = wrapped()
    lay.addWidget(w.device)
    w.eta = wrapped()
    lay.addWidget(w.eta)
    w.train = button("Train", "Train a new model version on the example set in the background")
    lay.addWidget(w.train)
    w.curves = LinePlot("Training", "epoch", "loss", "validation")
    w.curves.placeholder = "curves appear while a model trains"
    w.curves.setMinimumHeight(200)
    lay.addWidget(w.curves, 1)
    w.run_status = wrapped()
    lay.addWidget(w.run_status)
    return page


def _versions_tab(w) -> QWidget:
    page = QWidget()
    lay = QVBoxLayout(page)
    w.versions = table(VERSION_COLUMNS, stretch=3)
    w.versions.setToolTip("Every training run is a version; nothing is overwritten. Select one to activate "
                          "or delete it, two to compare them.")
    lay.addWidget(w.versions, 2)
    row = QHBoxLayout()
    w.activate = button("Activate", "Predict with the selected version from now on")
    w.compare = button("Compare", "Compare the two selected versions side by side")
    w.rollback = button("Roll back", "Activate the version that was active before the current one")
    w.delete = button("Delete", "Delete the selected version (an active one needs a replacement)")
    for b in (w.activate, w.compare, w.rollback, w.delete):
        row.addWidget(b)
    lay.addLayout(row)
    w.comparison = QTextBrowser()
    w.comparison.setPlaceholderText("Select two versions and press Compare")
    lay.addWidget(w.comparison, 1)
    return page


def _predict_tab(w) -> QWidget:
    page = QWidget()
    lay = QVBoxLayout(page)
    w.model_label = wrapped()
    lay.addWidget(w.model_label)
    row = QHBoxLayout()
    w.predict_mode = QComboBox()
    w.predict_mode.addItems(PREDICT_MODES)
    w.predict_mode.setToolTip("What to predict on")
    w.predict_mode.setMinimumContentsLength(13)
    row.addWidget(w.predict_mode, 1)
    w.predict = button("Predict", "Class probabilities and the localization map (where the model looked)")
    row.addWidget(w.predict, 1)
    lay.addLayout(row)
    row = QHBoxLayout()
    w.range_from, w.range_to = QSpinBox(), QSpinBox()
    for sb in (w.range_from, w.range_to):
        sb.setRange(0, 0)
    row.addWidget(QLabel("Slice range"))
    row.addWidget(w.range_from)
    row.addWidget(QLabel("to"))
    row.addWidget(w.range_to)
    row.addStretch(1)
    lay.addLayout(row)
    row = QHBoxLayout()
    row.addWidget(QLabel("Heat map opacity"))
    w.opacity = QSlider(Qt.Orientation.Horizontal)
    w.opacity.setRange(0, 100)
    w.opacity.setValue(50)
    w.opacity.setToolTip("Opacity of the heat-map layer (also in napari's layer controls)")
    row.addWidget(w.opacity, 1)
    lay.addLayout(row)
    row = QHBoxLayout()
    row.addWidget(QLabel("Heat map scale"))
    w.heat_scale = QComboBox()
    w.heat_scale.addItem("per slice", "slice")
    w.heat_scale.addItem("over the volume", "volume")
    w.heat_scale.setToolTip(
        "per slice: each slice's map runs from 0 to 1, so every slice's strongest evidence is equally bright; "
        "brightness compares places within a slice, not slices.\n"
        "over the volume: one range over all predicted slices, so a slice whose map is weaker is dimmer; "
        "brightness compares slices (each slice's map explains the class predicted on it).\nChanging it "
        "re-scales the heat map shown (no new prediction); the layer's name says which scale it has.")
    row.addWidget(w.heat_scale, 1)
    lay.addLayout(row)
    w.prediction_label = wrapped()
    lay.addWidget(w.prediction_label)
    w.probs = table(PROB_COLUMNS, stretch=1, multi=False)
    w.probs.setMaximumHeight(110)
    lay.addWidget(w.probs)
    w.slice_plot = LinePlot("Probability per slice", "slice", "probability")
    w.slice_plot.ylim = (0.0, 1.0)
    w.slice_plot.placeholder = "predict a slice range or the whole volume to see each slice"
    w.slice_plot.setToolTip("Click to show that slice; the dotted line is the slice shown")
    w.slice_plot.setMinimumHeight(200)
    lay.addWidget(w.slice_plot, 1)
    w.object_table = table(OBJECT_COLUMNS, stretch=0, multi=False)
    w.object_table.setToolTip("Each object's answer: the mean probability over its slices")
    w.object_table.setVisible(False)
    lay.addWidget(w.object_table, 1)
    return page


def build_seg_adapter_ui(t) -> None:
    """Create the Segmentation adapter tab's child widgets as attributes of ``t`` (a
    :class:`~napari_medprompt._qt.learn.seg_tab.SegAdapterTab`) and lay them out."""
    lay = QVBoxLayout(t)
    t.note = wrapped()
    lay.addWidget(t.note)
    form = QFormLayout()
    t.method = QComboBox()
    t.method.setToolTip(f"How the segmentation model is adapted; {FAST} = fast on a CPU (encoder outputs "
                        "cached, only a small part trains)")
    t.method.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    t.method.setMinimumContentsLength(16)
    form.addRow("Method", t.method)
    t.method_desc = wrapped()
    form.addRow(t.method_desc)
    t.base_label = wrapped()
    form.addRow("Base", t.base_label)
    lay.addLayout(form)
    box = QGroupBox("Learn from these accepted objects")
    bl = QVBoxLayout(box)
    t.objects = QListWidget()
    t.objects.setToolTip("Objects with accepted (or corrected) slices on this image; the count is the "
                         "number of such slices. CLIPSeg methods learn each object's name as its text prompt.")
    t.objects.setMaximumHeight(110)
    bl.addWidget(t.objects)
    t.reread = button("Refresh", "Read the objects of the current image again")
    bl.addWidget(t.reread, 0, Qt.AlignmentFlag.AlignRight)
    lay.addWidget(box)
    sched = QFormLayout()
    row = QHBoxLayout()
    t.epochs = QSpinBox()
    t.epochs.setRange(1, 500)
    t.epochs.setValue(5)
    t.epochs.setToolTip("Passes over the training slices (fixed: the held-out slices are never used to "
                        "choose an epoch)")
    row.addWidget(t.epochs)
    t.holdout = QDoubleSpinBox()
    t.holdout.setRange(0.05, 0.8)
    t.holdout.setSingleStep(0.05)
    t.holdout.setValue(0.25)
    t.holdout.setToolTip("Share of each object's accepted slices held out for the comparison (a block at "
                         "the end of its range). No object trains on any held-out slice or the slice "
                         "next to one.")
    row.addWidget(QLabel("held out"))
    row.addWidget(t.holdout)
    sched.addRow("epochs", row)
    t.lr = _lr_box(6, 1e-7, 1.0, "Learning rate (the method's recipe value is filled in)")
    sched.addRow("learning rate", t.lr)
    t.image_size = QSpinBox()
    t.image_size.setRange(0, 1024)
    t.image_size.setSingleStep(32)
    t.image_size.setSpecialValueText("model's own")
    t.image_size.setToolTip("Input size in px; 'model's own' = the paper resolution (SAM2 1024, "
                            "MedSAM2 512, CLIPSeg 352). Smaller sizes are for previews and tests")
    sched.addRow("input size", t.image_size)
    lay.addLayout(sched)
    row = QHBoxLayout()
    t.train = button("Train adapter", "Train a new adapter version from the checked objects in the background")
    t.cancel = button("Cancel", "Stop after the current step (a completed epoch is kept as a version)")
    t.cancel.setEnabled(False)
    row.addWidget(t.train, 1)
    row.addWidget(t.cancel)
    lay.addLayout(row)
    t.progress = QProgressBar()
    t.progress.setRange(0, 1000)
    t.progress.setFormat("idle")
    t.progress.setTextVisible(True)
    lay.addWidget(t.progress)
    t.split_label = wrapped()
    lay.addWidget(t.split_label)
    t.curves = LinePlot("Training", "epoch", "loss")
    t.curves.placeholder = "the loss curve appears while an adapter trains"
    t.curves.setMinimumHeight(160)
    lay.addWidget(t.curves, 1)
    t.run_status = wrapped()
    lay.addWidget(t.run_status)
    lay.addWidget(wrapped("<b>Held-out comparison</b> (Dice per object on accepted slices not trained on)"))
    t.compare = table(COMPARE_COLUMNS, stretch=0, multi=False)
    for c, tip in enumerate(COMPARE_TIPS):
        t.compare.horizontalHeaderItem(c).setToolTip(tip)
    t.compare.setMaximumHeight(120)
    lay.addWidget(t.compare)
    lay.addWidget(wrapped("<b>Adapter versions</b> (the Segment panel uses the active one)"))
    t.versions = table(SEG_VERSION_COLUMNS, stretch=3, multi=False)
    t.versions.setMaximumHeight(140)
    lay.addWidget(t.versions)
    row = QHBoxLayout()
    t.activate = button("Activate", "Use the selected adapter version for segmentation from now on")
    t.use_base = button("Use base model", "No adapter: segment with the base model again")
    row.addWidget(t.activate)
    row.addWidget(t.use_base)
    lay.addLayout(row)


def _scrolled(page: QWidget) -> QScrollArea:
    """``page`` in a vertical scroll area: a short dock scrolls instead of squeezing the rows."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    page.setMinimumHeight(page.sizeHint().height())
    area.setWidget(page)
    return area


def build_learn_ui(w) -> None:
    """Create the Learn panel's child widgets as attributes of ``w`` and lay them out."""
    lay = QVBoxLayout(w)
    w.setMinimumWidth(420)
    w.header = wrapped()
    lay.addWidget(w.header)
    w.tabs = QTabWidget()
    w.tabs.addTab(_examples_tab(w), "Examples")
    w.tabs.addTab(_scrolled(_train_tab(w)), "Train")
    w.tabs.addTab(_versions_tab(w), "Models")
    w.tabs.addTab(_scrolled(_predict_tab(w)), "Predict")
    from napari_medprompt._qt.learn.seg_tab import SegAdapterTab

    w.seg_tab = SegAdapterTab(w)
    w.seg_page = _scrolled(w.seg_tab)
    w.tabs.addTab(w.seg_page, "Segmentation adapter")
    lay.addWidget(w.tabs, 1)
    row = QHBoxLayout()
    w.progress = QProgressBar()
    w.progress.setRange(0, 1000)
    w.progress.setTextVisible(True)
    w.progress.setFormat("idle")
    row.addWidget(w.progress, 1)
    w.cancel = button("Cancel", "Stop the running job (training keeps its best completed epoch)")
    w.cancel.setEnabled(False)
    row.addWidget(w.cancel)
    lay.addLayout(row)
    w.status = wrapped()
    lay.addWidget(w.status)
