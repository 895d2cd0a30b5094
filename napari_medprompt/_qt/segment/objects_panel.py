"""The object list of the Segment widget: pick, create, rename, recolour, lock and delete objects."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QCheckBox,
    QColorDialog,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QWidget,
)

#: Names offered in the object-name box (free text is accepted too).
RADIOLOGY_STRUCTURES = (
    "liver",
    "spleen",
    "kidney left",
    "kidney right",
    "lung left",
    "lung right",
    "heart",
    "aorta",
    "inferior vena cava",
    "pancreas",
    "stomach",
    "gallbladder",
    "urinary bladder",
    "prostate",
    "adrenal gland left",
    "adrenal gland right",
    "esophagus",
    "colon",
    "small bowel",
    "vertebra",
    "rib",
    "femur left",
    "femur right",
    "brain",
    "tumour / lesion",
    "lymph node",
    "cyst",
)


class ObjectsPanel(QWidget):
    """Object chooser and editor. Emits requests; the widget applies them to the session."""

    selected = Signal(int)  # object id (0 = none)
    new_requested = Signal(str)  # name
    renamed = Signal(int, str)
    recolored = Signal(int, tuple)
    lock_toggled = Signal(int, bool)
    delete_requested = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._updating = False
        self.objects = QComboBox()
        self.objects.setToolTip("Objects of this image (label id · name). N / B: next / previous")
        self.new_button = QPushButton("New")
        self.new_button.setToolTip("Start a new object (a new label id) with the name below")
        self.name = QComboBox()
        self.name.setEditable(True)
        self.name.addItems(RADIOLOGY_STRUCTURES)
        self.name.setCurrentText("liver")
        self.name.setToolTip("Structure name: pick one or type your own")
        self.color = QPushButton()
        self.color.setToolTip("Colour of the object in the segmentation layer")
        self.color.setMaximumWidth(40)
        self.locked = QCheckBox("finished (locked)")
        self.locked.setToolTip("A locked object is never overwritten by other objects or propagation")
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Delete the object and its voxels (undoable)")

        top = QHBoxLayout()
        top.addWidget(self.objects, 1)
        top.addWidget(self.new_button)
        name_row = QHBoxLayout()
        name_row.addWidget(self.name, 1)
        name_row.addWidget(self.color)
        bottom = QHBoxLayout()
        bottom.addWidget(self.locked)
        bottom.addStretch(1)
        bottom.addWidget(self.delete_button)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Object", top)
        form.addRow("Name", name_row)
        form.addRow(bottom)

        self.objects.currentIndexChanged.connect(self._on_pick)
        self.new_button.clicked.connect(lambda: self.new_requested.emit(self.name.currentText().strip()))
        self.name.lineEdit().editingFinished.connect(self._on_rename)
        self.name.activated.connect(lambda _i: self._on_rename())
        self.color.clicked.connect(self._on_color)
        self.locked.toggled.connect(self._on_lock)
        self.delete_button.clicked.connect(self._on_delete)

    # -- model -> view ------------------------------------------------------------------------
    def current_id(self) -> int:
        data = self.objects.currentData()
        return int(data) if data is not None else 0

    def set_objects(self, objects: dict, current: int) -> None:
        """Show ``objects`` (id -> SegObject) with ``current`` selected, without emitting signals."""
        self._updating = True
        try:
            self.objects.clear()
            for oid in sorted(objects):
                obj = objects[oid]
                self.objects.addItem(f"{oid} · {obj.name or 'unnamed'}", oid)
            idx = self.objects.findData(current)
            self.objects.setCurrentIndex(idx)
            obj = objects.get(current)
            has = obj is not None
            for w in (self.locked, self.delete_button, self.color):
                w.setEnabled(has)
            if has:
                self.name.setCurrentText(obj.name)
                self.locked.setChecked(bool(obj.locked))
                self._show_color(obj.color)
            else:
                self.locked.setChecked(False)
                self._show_color(None)
        finally:
            self._updating = False

    def _show_color(self, rgb) -> None:
        if rgb is None:
            self.color.setStyleSheet("")
            return
        r, g, b = (int(round(255 * float(c))) for c in rgb[:3])
        self.color.setStyleSheet(f"background-color: rgb({r},{g},{b}); min-height: 18px;")

    # -- view -> requests -----------------------------------------------------------------------
    def _on_pick(self, _index: int) -> None:
        if not self._updating:
            self.selected.emit(self.current_id())

    def _on_rename(self) -> None:
        oid = self.current_id()
        if not self._updating and oid:
            self.renamed.emit(oid, self.name.currentText().strip())

    def _on_color(self) -> None:
        oid = self.current_id()
        if not oid:
            return
        col = QColorDialog.getColor(parent=self, title="Object colour")
        if col.isValid():
            self.recolored.emit(oid, (col.redF(), col.greenF(), col.blueF()))
            self._show_color((col.redF(), col.greenF(), col.blueF()))

    def _on_lock(self, on: bool) -> None:
        oid = self.current_id()
        if not self._updating and oid:
            self.lock_toggled.emit(oid, bool(on))

    def _on_delete(self) -> None:
        oid = self.current_id()
        if oid:
            self.delete_requested.emit(oid)


def qcolor(rgb) -> QColor:
    return QColor.fromRgbF(*(float(c) for c in rgb[:3]))
