"""The Learn dock's "Models" tab: the versions of the model store (every training run is one; nothing
is overwritten), which one is active, activating, rolling back, comparing two and deleting one (the
active one only with a replacement).

:class:`ModelsTabMixin` is mixed into :class:`~napari_medprompt._qt.learn.widget.LearnWidget`; a change
of the active model reaches the Predict tab through the dock's ``_model_changed``.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QInputDialog

from napari_medprompt._qt.ui_common import bold, item


class ModelsTabMixin:
    """The Models tab of :class:`~napari_medprompt._qt.learn.widget.LearnWidget` (see the module docstring)."""

    def _store(self):
        return None if self.workspace is None else self.workspace.store

    def refresh_versions(self) -> None:
        from napari_medprompt.learn import LearnError, version_rows

        store = self._store()
        try:
            rows = version_rows(store) if store is not None else []
        except LearnError as err:
            self._message("error", str(err))
            rows = []
        keep = set(self.selected_versions())
        self.versions.setRowCount(len(rows))
        self._version_rows = {r["id"]: r for r in rows}
        for r, row in enumerate(rows):
            metrics = row["metrics"] + (" — RANDOM weights" if row["random_weights"] else "")
            date = str(row["date"] or "").replace("T", " ").replace("+00:00", "")
            cells = [item("✔" if row["active"] else ""), item(row["id"], row["id"]),
                     item(f"{row['method']} on {row['backbone']}"), item(metrics), item(date[5:16])]
            tip = (f"{row['id']}: {row['method']} on {row['backbone']}, trained {date} UTC, status {row['status']}\n"
                   f"data: {row['data']}\n{metrics}" + (f"\nmodality {row['modality']}" if row.get("modality") else ""))
            for it in cells:
                it.setToolTip(tip)
            if row["random_weights"]:
                cells[3].setForeground(QBrush(QColor("#e34a33")))
                cells[3].setToolTip(tip + "\nThe backbone ran on random weights (no pretrained weights were "
                                    "available): this model's predictions are not meaningful")
            if row["active"]:
                bold(cells)
            for c, it in enumerate(cells):
                self.versions.setItem(r, c, it)
            if row["id"] in keep:
                self.versions.selectRow(r)
        self._update_model_label()
        self._update_buttons()

    def active_version(self) -> str | None:
        store = self._store()
        try:
            return None if store is None else store.active
        except Exception:
            return None

    def selected_versions(self) -> list[str]:
        if self.versions.selectionModel() is None:
            return []
        rows = sorted({i.row() for i in self.versions.selectionModel().selectedRows()})
        return [self.versions.item(r, 1).data(Qt.ItemDataRole.UserRole) for r in rows if self.versions.item(r, 1)]

    def select_versions(self, ids) -> None:
        self.versions.clearSelection()
        from qtpy.QtCore import QItemSelectionModel

        for r in range(self.versions.rowCount()):
            if self.versions.item(r, 1).data(Qt.ItemDataRole.UserRole) in set(ids):
                self.versions.selectionModel().select(
                    self.versions.model().index(r, 0),
                    QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)

    def activate_version(self, ids) -> None:
        from napari_medprompt.learn import LearnError, activate

        if not ids:
            self._message("info", "Select the version to activate.")
            return
        try:
            activate(self._store(), ids[0])
        except LearnError as err:
            self._message("warning", str(err))
            return
        self._message("info", f"Version {ids[0]} is the active model.")
        self._after_activation()

    def roll_back(self) -> None:
        from napari_medprompt.learn import LearnError, rollback

        try:
            vid = rollback(self._store())
        except LearnError as err:
            self._message("warning", str(err))
            return
        self._message("info", f"Rolled back: version {vid} is the active model again.")
        self._after_activation()

    def _after_activation(self) -> None:
        self.refresh_versions()
        self._follow_active_backbone()
        self.versions_changed.emit()
        self._model_changed()

    def _follow_active_backbone(self) -> None:
        """Show the active version's backbone in the chooser (predictions run on it)."""
        row = getattr(self, "_version_rows", {}).get(self.active_version() or "")
        if row is not None:
            i = self.backbone.findData(row["backbone"])
            if i >= 0 and i != self.backbone.currentIndex():
                self.backbone.setCurrentIndex(i)

    def compare_selected(self) -> list:
        from napari_medprompt.learn import LearnError, compare

        ids = self.selected_versions()
        if len(ids) != 2:
            self._message("info", "Select exactly two versions to compare.")
            return []
        try:
            rows = compare(self._store(), ids[0], ids[1])
        except LearnError as err:
            self._message("warning", str(err))
            return []

        def cell(v):
            return f"{v:.3f}" if isinstance(v, float) else ("—" if v is None else str(v))

        html = [f"<table cellspacing=4><tr><th></th><th>{ids[0]}</th><th>{ids[1]}</th></tr>"]
        for k, a, b in rows:
            style = " style='color:#e69f00'" if a != b else ""
            html.append(f"<tr><td><b>{k}</b></td><td{style}>{cell(a)}</td><td{style}>{cell(b)}</td></tr>")
        html.append("</table>")
        self.comparison.setHtml("".join(html))
        return rows

    def delete_selected(self, new_active: str | None = None) -> bool:
        """Delete the selected version; the active one needs a replacement (asked for, or ``new_active``)."""
        from napari_medprompt.learn import NO_ACTIVE, LearnError, delete_version

        ids = self.selected_versions()
        if len(ids) != 1:
            self._message("info", "Select one version to delete.")
            return False
        vid, store = ids[0], self._store()
        if self.job is not None and self.job.running:
            self._message("warning", "A model is training: delete versions when it has finished.")
            return False
        if vid == self.active_version() and new_active is None:
            others = [v for v in self._version_rows if v != vid]
            choices = others + ["(no active model)"]
            new_active = self.ask_replacement(vid, choices)
            if new_active is None:
                self._message("info", f"Version {vid} kept (deleting the active model needs a replacement).")
                return False
            if new_active == "(no active model)":
                new_active = NO_ACTIVE
        try:
            active = delete_version(store, vid, new_active=new_active)
        except LearnError as err:
            self._message("warning", str(err))
            return False
        self._message("info", f"Deleted version {vid}." + (f" Version {active} is the active model." if active
                                                           else " No model is active now."))
        self._predictors.pop(vid, None)
        self.refresh_versions()
        self.versions_changed.emit()
        self._model_changed()
        return True

    def ask_replacement(self, vid: str, choices: list[str]) -> str | None:
        """Which version to activate instead of the active ``vid`` being deleted (None: cancel)."""
        choice, ok = QInputDialog.getItem(self, "Delete the active model",
                                          f"Version {vid} is the active model. Activate instead:", choices, 0, False)
        return choice if ok else None
