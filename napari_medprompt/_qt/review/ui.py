"""Widgets of the Review panel (layout only; napari_medprompt._qt.review.widget wires them up)."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QStyledItemDelegate,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
)

from napari_medprompt._qt.ui_common import button, table
from napari_medprompt._qt.ui_common import item as table_item  # noqa: F401 (the Review widget's cells)
from napari_medprompt.session.review import REVIEW_PLANES, SLICE_FILTERS

OBJECT_COLUMNS = ["Name", "ID", "Slices", "mL", "Review", "Lock", "Class"]
CLASS_COLUMN = 6
OBJECT_TIPS = ["Object name", "Label id in the segmentation", "Slices covered (first-last)",
               "Volume in millilitres, from the voxel spacing", "Review state of its slices",
               "Locked (finished) objects are never overwritten",
               "The object's class for learning (e.g. benign, malignant): double-click to set or change it; "
               "empty = no class"]
SLICE_COLUMNS = ["Slice", "Status", "Area (cm²)"]


def slice_columns(plane: str) -> list[str]:
    """Headers of the slice list for ``plane`` ("axial": the plain ones)."""
    return SLICE_COLUMNS if plane == "axial" else [f"{plane.capitalize()} slice", *SLICE_COLUMNS[1:]]


class ClassDelegate(QStyledItemDelegate):
    """Edits a class cell with an editable combo box offering the classes already used."""

    def __init__(self, classes_fn, parent=None) -> None:
        super().__init__(parent)
        self._classes = classes_fn

    def createEditor(self, parent, option, index):  # noqa: N802 (Qt name)
        box = QComboBox(parent)
        box.setEditable(True)
        box.addItems([""] + list(self._classes()))
        return box

    def setEditorData(self, editor, index):  # noqa: N802 (Qt name)
        editor.setCurrentText(index.data() or "")

    def setModelData(self, editor, model, index):  # noqa: N802 (Qt name)
        model.setData(index, editor.currentText().strip())


def class_item(text: str | None) -> QTableWidgetItem:
    """An editable class cell (empty: no class)."""
    it = QTableWidgetItem(text or "")
    it.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsEditable)
    return it


def build_review_ui(w) -> None:
    """Create the Review panel's child widgets as attributes of ``w`` and lay them out."""
    lay = QVBoxLayout(w)
    w.setMinimumWidth(400)
    w.header = QLabel()
    w.header.setWordWrap(True)
    lay.addWidget(w.header)
    crow = QHBoxLayout()
    crow.addWidget(QLabel("Class of the whole image"))
    w.image_class = QComboBox()
    w.image_class.setEditable(True)
    w.image_class.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
    w.image_class.lineEdit().setPlaceholderText("none (e.g. normal, pneumonia)")
    w.image_class.setToolTip("An image-level label (e.g. for an X-ray): press Enter to set it; empty = none")
    crow.addWidget(w.image_class, 1)
    lay.addLayout(crow)

    w.objects = table(OBJECT_COLUMNS, stretch=0, multi=False)
    for c, tip in enumerate(OBJECT_TIPS):
        w.objects.horizontalHeaderItem(c).setToolTip(tip)
    w.objects.setToolTip("Objects of this image. Select one to review its slices; double-click its Class "
                         "cell to give it a class for learning.")
    w.objects.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                              | QAbstractItemView.EditTrigger.EditKeyPressed)
    w.objects.setItemDelegateForColumn(CLASS_COLUMN, ClassDelegate(w.known_classes, w.objects))
    lay.addWidget(w.objects, 1)

    box = QGroupBox("Slices of the selected object")
    bl = QVBoxLayout(box)
    row = QHBoxLayout()
    row.addWidget(QLabel("Plane"))
    w.plane = QComboBox()
    for plane in REVIEW_PLANES:
        w.plane.addItem(plane.capitalize(), plane)
    w.plane.setToolTip("Which slices to list and to accept or reject: axial, or whole coronal / sagittal "
                       "slices (follows the plane the viewer shows when you roll the dims)")
    row.addWidget(w.plane, 1)
    row.addWidget(QLabel("Show"))
    w.filter = QComboBox()
    w.filter.addItems(list(SLICE_FILTERS))
    w.filter.setToolTip("Which slices to list; 'To review' hides accepted and rejected ones")
    row.addWidget(w.filter, 1)
    bl.addLayout(row)
    w.slices = table(SLICE_COLUMNS, stretch=1, multi=True)
    w.slices.setToolTip("Click a slice to show it in the viewer; Shift/Ctrl-click selects several")
    bl.addWidget(w.slices, 3)
    shown = QHBoxLayout()
    w.accept_shown = button("Accept shown ▶", "Accept the slice the viewer shows, then go to the next "
                             "slice still to review")
    w.reject_shown = button("Reject shown", "Clear this object on the slice the viewer shows (other "
                             "objects are kept; undo restores)")
    w.next_review = button("Next to review ▶", "Show the next slice that is prompted, propagated or "
                            "edited but not yet accepted or rejected")
    for b in (w.accept_shown, w.reject_shown, w.next_review):
        shown.addWidget(b)
    bl.addLayout(shown)
    sel = QHBoxLayout()
    w.accept_selected = button("Accept selected", "Mark the selected slices as checked and correct")
    w.reject_selected = button("Reject selected", "Clear this object on the selected slices (other "
                                "objects are kept; undo restores)")
    sel.addWidget(w.accept_selected)
    sel.addWidget(w.reject_selected)
    bl.addLayout(sel)
    rng = QGridLayout()
    w.range_from, w.range_to = QSpinBox(), QSpinBox()
    for sb in (w.range_from, w.range_to):
        sb.setRange(0, 0)
        sb.setKeyboardTracking(False)
    w.range_label = QLabel("Slices from")
    rng.addWidget(w.range_label, 0, 0)
    rng.addWidget(w.range_from, 0, 1)
    rng.addWidget(QLabel("to"), 0, 2)
    rng.addWidget(w.range_to, 0, 3)
    w.accept_range = button("Accept range", "Accept every slice of the range that has this object")
    w.reject_range = button("Reject range", "Clear this object on every slice of the range (other "
                             "objects are kept; undo restores)")
    rng.addWidget(w.accept_range, 1, 0, 1, 2)
    rng.addWidget(w.reject_range, 1, 2, 1, 2)
    bl.addLayout(rng)
    lay.addWidget(box, 3)

    pbox = QGroupBox("Provenance")
    pl = QVBoxLayout(pbox)
    w.provenance = QTextBrowser()
    w.provenance.setOpenLinks(False)
    pl.addWidget(w.provenance)
    lay.addWidget(pbox, 1)
    w.status = QLabel()
    w.status.setWordWrap(True)
    lay.addWidget(w.status)
