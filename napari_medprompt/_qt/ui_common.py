"""Small widget builders the docks share: read-only table cells, row-selecting tables, buttons with a tooltip."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QPushButton, QTableWidget, QTableWidgetItem


def item(text: str, data=None, align_right: bool = False) -> QTableWidgetItem:
    """A selectable, read-only table cell; ``data`` goes to its ``UserRole``."""
    it = QTableWidgetItem(text)
    it.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
    if data is not None:
        it.setData(Qt.ItemDataRole.UserRole, data)
    if align_right:
        it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return it


def table(columns: list[str], stretch: int, multi: bool = True) -> QTableWidget:
    """A read-only table without row numbers that selects whole rows (several when ``multi``); its columns
    fit their contents, column ``stretch`` takes the rest of the width."""
    t = QTableWidget(0, len(columns))
    t.setHorizontalHeaderLabels(columns)
    t.verticalHeader().setVisible(False)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection if multi
                       else QAbstractItemView.SelectionMode.SingleSelection)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    t.horizontalHeader().setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
    return t


def button(text: str, tip: str) -> QPushButton:
    b = QPushButton(text)
    b.setToolTip(tip)
    return b


def bold(items) -> None:
    """Set the table cells ``items`` in bold (the active version, the most probable class)."""
    for it in items:
        f = it.font()
        f.setBold(True)
        it.setFont(f)
