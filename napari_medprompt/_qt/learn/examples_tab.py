"""The Learn dock's "Examples" tab: the example set as a table with thumbnails; examples added from the
image shown (its current slice, a whole 2D image, the accepted objects of its session) or imported (a
folder with one sub-folder per class, a MedMNIST-style ``.npz``), and removed.

:class:`ExamplesTabMixin` is mixed into :class:`~napari_medprompt._qt.learn.widget.LearnWidget`: it uses
the dock's workspace, controller and widgets (laid out by :mod:`napari_medprompt._qt.learn.ui`) and
reports through the dock's ``_message``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QIcon, QImage, QPixmap
from qtpy.QtWidgets import QFileDialog

from napari_medprompt._qt.learn import ui as learn_ui
from napari_medprompt._qt.ui_common import item


class ExamplesTabMixin:
    """The Examples tab of :class:`~napari_medprompt._qt.learn.widget.LearnWidget` (see the module docstring)."""

    def _schedule_refresh(self) -> None:
        if not self._refresh_timer.isActive():
            self._refresh_timer.start()

    def _examples(self):
        return None if self.workspace is None else self.workspace.examples

    def _class_name(self) -> str | None:
        name = self.class_box.currentText().strip()
        if not name:
            self._message("warning", "Type or choose a class first (e.g. 'benign').")
            return None
        return name

    def add_current_slice(self) -> None:
        from napari_medprompt.learn import LearnError

        img, ex = self._need_image(), self._examples()
        name = self._class_name() if img is not None and ex is not None else None
        if name is None:
            return
        layer, data, session, modality, spacing = img
        try:
            if data.ndim == 2 or getattr(layer, "rgb", False):
                e = ex.add(data, name, source=session.image_name, source_key=session.image_key, origin="image",
                           spacing=spacing[1:], modality=modality)
                kept = ""
                if session.image_class is None:
                    session.set_image_class(name)
                elif session.image_class != name:  # set by the clinician elsewhere: never overwritten here
                    kept = (f" The image's own class stays '{session.image_class}' (change it in the Segment "
                            "or Review panel if it is wrong).")
                self._message("info", f"Added the whole image as '{name}' ({len(ex)} examples).{kept}")
            else:
                z = self.current_slice()
                e = ex.add_slice(data, z, name, source=session.image_name, source_key=session.image_key,
                                 spacing=spacing, modality=modality)
                self._message("info", f"Added slice {e.slice_index} of {session.image_name} as '{name}' "
                                      f"({len(ex)} examples).")
        except LearnError as err:
            self._message("warning", str(err))

    def add_accepted_objects(self) -> list:
        from napari_medprompt.learn import LearnError

        img, ex = self._need_image(), self._examples()
        if img is None or ex is None:
            return []
        layer, data, session, modality, _spacing = img
        try:
            added = ex.add_session(session, data, source=session.image_name, source_key=session.image_key,
                                   modality=modality)
        except LearnError as err:
            self._message("warning", str(err))
            return []
        objs = len({e.object_id for e in added if e.object_id is not None})
        dropped = ex.last_dropped
        gone = (f" Dropped {dropped} example(s) of this image whose slices are no longer accepted."
                if dropped else "")
        self._message("info", f"Added {len(added)} example(s) from {objs} object(s) of {session.image_name} "
                              f"({len(ex)} examples in the set).{gone}")
        return added

    def import_examples(self, path: str | None = None, kind: str = "folder") -> list:
        from napari_medprompt.learn import LearnError

        ex = self._examples()
        if ex is None:
            self._message("warning", "No learn folder yet: open an image first.")
            return []
        if path is None:
            if kind == "folder":
                path = QFileDialog.getExistingDirectory(self, "Folder with one sub-folder per class")
            else:
                path, _ = QFileDialog.getOpenFileName(self, "MedMNIST-style archive", "", "NumPy archive (*.npz)")
            if not path:
                return []
        try:
            added = ex.import_npz(path) if kind == "npz" else ex.import_folder(path)
        except LearnError as err:
            self._message("warning", str(err))
            return []
        self._message("info", f"Imported {len(added)} example(s) from {Path(path).name}.")
        return added

    def selected_examples(self) -> list[str]:
        rows = sorted({i.row() for i in self.examples.selectionModel().selectedRows()})
        return [self.examples.item(r, 1).data(Qt.ItemDataRole.UserRole) for r in rows]

    def remove_selected(self) -> int:
        ex = self._examples()
        uids = self.selected_examples()
        if ex is None or not uids:
            self._message("info", "Select the examples to remove first.")
            return 0
        n = ex.remove(uids)
        self._message("info", f"Removed {n} example(s); {len(ex)} left.")
        return n

    def _thumb(self, uid: str) -> QIcon:
        icon = self._thumbs.get(uid)
        if icon is None:
            arr = np.ascontiguousarray(self.workspace.examples.thumbnail(uid, learn_ui.THUMB))
            h, w = arr.shape[:2]
            if arr.ndim == 2:
                qimg = QImage(arr.data, w, h, w, QImage.Format.Format_Grayscale8)
            else:
                arr = np.ascontiguousarray(arr[..., :3])
                qimg = QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888)
            icon = QIcon(QPixmap.fromImage(qimg.copy()))
            self._thumbs[uid] = icon
        return icon

    def refresh_examples(self) -> None:
        self._seg_tab_refresh()
        ex = self._examples()
        rows = ex.rows() if ex is not None else []
        keep = set(self.selected_examples()) if self.examples.rowCount() else set()
        self.examples.setRowCount(len(rows))
        for r, row in enumerate(rows):
            thumb = item("")
            thumb.setIcon(self._thumb(row["uid"]))
            cells = [thumb, item(row["class"], row["uid"]), item(row["source"] or "—"),
                     item("" if row["slice"] is None else str(row["slice"]), align_right=True),
                     item("" if row["object"] is None else str(row["object"]), align_right=True),
                     item(str(row["group"])[:16])]
            cells[5].setToolTip(str(row["group"]))
            for c, it in enumerate(cells):
                self.examples.setItem(r, c, it)
            if row["uid"] in keep:
                self.examples.selectRow(r)
        if ex is None:
            self.counts.setText("")
        else:
            counts = ex.counts()
            per = " · ".join(f"<b>{c}</b>: {n}" + (" <span style='color:#e34a33'>(needs ≥ 2)</span>" if n < 2 else "")
                             for c, n in counts.items()) or "no classes yet"
            self.counts.setText(f"{per} — {len(ex)} example(s), {ex.n_with_masks} with a mask")
            current = self.class_box.currentText()
            classes = sorted(set(counts) | set(self._session_classes()))
            if [self.class_box.itemText(i) for i in range(self.class_box.count())] != classes:
                self.class_box.blockSignals(True)
                self.class_box.clear()
                self.class_box.addItems(classes)
                self.class_box.setCurrentText(current)
                self.class_box.blockSignals(False)
        self._fill_methods()
        self._update_eta()
        self._update_buttons()

    def _session_classes(self) -> list[str]:
        s = self.ctrl.session
        if s is None:
            return []
        out = set(s.object_classes().values())
        if s.image_class:
            out.add(s.image_class)
        return sorted(out)
