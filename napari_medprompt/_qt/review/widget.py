"""The "Review" dock widget: objects with their size and review state, per-slice status, provenance.

A view over the viewer's :class:`~napari_medprompt.session.AnnotationSession` (shared through
``controller_for(viewer)``): it lists the objects (name, label id, slices covered, volume in mL,
review summary, lock), the slices of the selected object with their status (prompted, propagated,
edited, accepted, rejected; click one to show it), accepts or rejects the selected slices or a
from/to range (rejecting clears that object only, on those slices; undo brings it back), and shows
how the object was made (backend, model, version, device, prompts, user, times).
"""

from __future__ import annotations

import logging

from qtpy.QtCore import QItemSelectionModel, QObject, Qt, QTimer, Signal
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QAbstractItemView, QWidget

from napari_medprompt._qt.controller import controller_for, real_viewer
from napari_medprompt._qt.review.ui import CLASS_COLUMN, build_review_ui, class_item, table_item
from napari_medprompt.session import ObjectLockedError, SessionError, SessionSaveError
from napari_medprompt.session.review import STATUS_COLORS, object_rows, provenance_html, slice_rows

log = logging.getLogger(__name__)

class _Relay(QObject):
    """Carries session callbacks (from any thread) to the GUI thread."""

    changed = Signal(object)


class ReviewWidget(QWidget):
    """Review the objects of the current annotation session, slice by slice."""

    def __init__(self, napari_viewer, parent=None) -> None:
        super().__init__(parent)
        self.viewer = real_viewer(napari_viewer)  # napari's per-widget proxy unwrapped: one set of layers
        self.ctrl = controller_for(napari_viewer)
        self.session = None
        self.messages: list[tuple[str, str]] = []  # (level, text), newest last
        self._unsubscribe = None
        self._relay = _Relay()
        self._relay.changed.connect(self._on_event)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(60)  # coalesce the bursts of a propagation into one redraw
        self._timer.timeout.connect(self.refresh)
        self._build()
        self._current_z: int | None = None
        self.viewer.dims.events.current_step.connect(self._mark_current_slice)
        self.ctrl.session_changed.connect(self._bind)
        self.ctrl.current_object_changed.connect(self.select_object)
        self._bind(self.ctrl.session)

    # ----------------------------------------------------------------------------------- layout
    def _build(self) -> None:
        build_review_ui(self)
        self.objects.itemSelectionChanged.connect(self._on_object_selected)
        self.objects.itemChanged.connect(self._on_class_edited)
        self.image_class.lineEdit().editingFinished.connect(self._on_image_class_edited)
        self.image_class.activated.connect(lambda _i: self._on_image_class_edited())
        self.filter.currentTextChanged.connect(lambda _: self._fill_slices())
        self.slices.itemClicked.connect(self._on_slice_clicked)
        self.slices.itemSelectionChanged.connect(self._update_buttons)
        self.accept_shown.clicked.connect(self.accept_shown_slice)
        self.reject_shown.clicked.connect(lambda: self._review([self._shown_slice()], "rejected"))
        self.next_review.clicked.connect(self.next_to_review)
        self.accept_selected.clicked.connect(lambda: self.review_selected("accepted"))
        self.reject_selected.clicked.connect(lambda: self.review_selected("rejected"))
        self.accept_range.clicked.connect(lambda: self.review_range("accepted"))
        self.reject_range.clicked.connect(lambda: self.review_range("rejected"))
        self._update_buttons()

    # ---------------------------------------------------------------------------------- binding
    def _bind(self, session) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.session = session
        if session is not None:
            self._unsubscribe = session.on_change(self._relay.changed.emit)
            n = session.shape[0]
            for sb in (self.range_from, self.range_to):
                sb.setRange(0, n - 1)
        self.refresh()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        try:
            self.viewer.dims.events.current_step.disconnect(self._mark_current_slice)
        except Exception:  # the viewer may already be gone
            pass
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        super().closeEvent(event)

    def _on_event(self, event) -> None:
        if event.kind == "save_failed":
            err = self.session.last_save_error if self.session is not None else None
            self._message("error", f"Autosave failed: {err}")
        if event.kind == "saved":
            if self.session is not None and self.session.last_save_error is None:
                self._update_header()
            return
        if not self._timer.isActive():
            self._timer.start()

    # --------------------------------------------------------------------------------- display
    def selected_object(self) -> int | None:
        rows = self.objects.selectionModel().selectedRows() if self.objects.selectionModel() else []
        if not rows:
            return None
        return self.objects.item(rows[0].row(), 1).data(Qt.ItemDataRole.UserRole)

    def select_object(self, object_id: int) -> None:
        for r in range(self.objects.rowCount()):
            if self.objects.item(r, 1).data(Qt.ItemDataRole.UserRole) == int(object_id):
                self.objects.selectRow(r)
                return

    def refresh(self) -> None:
        """Redraw everything from the session (keeps the selected object and slices)."""
        self._update_header()
        keep = self.selected_object()
        self.objects.blockSignals(True)
        self.objects.setRowCount(0)
        rows = object_rows(self.session) if self.session is not None else []
        self.objects.setRowCount(len(rows))
        for r, row in enumerate(rows):
            name = table_item(row.name)
            name.setBackground(QBrush(QColor.fromRgbF(*row.color, 0.55)))
            span = f" ({row.slice_range[0]}-{row.slice_range[1]})" if row.slice_range else ""
            obj = self.session.objects.get(row.id)
            cells = [name, table_item(str(row.id), row.id, True), table_item(f"{row.slices_covered}{span}"),
                     table_item(f"{row.volume_ml:.1f}", align_right=True), table_item(row.status),
                     table_item("locked" if row.locked else ""), class_item(getattr(obj, "class_name", None))]
            tip = f"{row.name}: label {row.id}, {row.slices_covered} slices{span}, {row.volume_ml:.1f} mL, {row.status}"
            for it in cells:
                it.setToolTip(tip)
            for c, it in enumerate(cells):
                self.objects.setItem(r, c, it)
        self.objects.blockSignals(False)
        self._fill_image_class()
        if keep is not None:
            self.select_object(keep)
        if self.selected_object() is None and rows:
            self.select_object(rows[0].id)
        self._on_object_selected(keep_range=self.selected_object() == keep)

    # ----------------------------------------------------------------------------------- classes
    def known_classes(self) -> list[str]:
        """Classes already given in this session (offered when editing a class)."""
        s = self.session
        if s is None:
            return []
        out = {o.class_name for o in s.objects.values() if getattr(o, "class_name", None)}
        if getattr(s, "image_class", None):
            out.add(s.image_class)
        return sorted(out)

    def _fill_image_class(self) -> None:
        s = self.session
        self.image_class.blockSignals(True)
        self.image_class.clear()
        self.image_class.addItems([""] + self.known_classes())
        self.image_class.setCurrentText(getattr(s, "image_class", None) or "" if s is not None else "")
        self.image_class.setEnabled(s is not None)
        self.image_class.blockSignals(False)

    def _on_class_edited(self, it) -> None:
        if it.column() != CLASS_COLUMN or self.session is None:
            return
        oid = self.objects.item(it.row(), 1).data(Qt.ItemDataRole.UserRole)
        self.set_object_class(oid, it.text())

    def set_object_class(self, object_id: int, name: str | None) -> bool:
        """Give object ``object_id`` the class ``name`` (empty/None: no class); True when it changed."""
        name = (name or "").strip() or None
        obj = self.session.objects.get(int(object_id)) if self.session is not None else None
        if obj is None or obj.class_name == name:
            return False
        try:
            self.session.set_object_class(int(object_id), name)
        except SessionSaveError as err:
            self._message("error", str(err))
        except (SessionError, KeyError, ValueError) as err:
            self._message("warning", str(err).strip("'\""))
            QTimer.singleShot(0, self.refresh)
            return False
        self._message("info", f"'{obj.display_name}' is now " + (f"class '{name}'." if name else "without a class."))
        return True

    def _on_image_class_edited(self) -> None:
        self.set_image_class(self.image_class.currentText())

    def set_image_class(self, name: str | None) -> bool:
        """Give the whole image the class ``name`` (empty/None: none); True when it changed."""
        s = self.session
        name = (name or "").strip() or None
        if s is None or s.image_class == name:
            return False
        try:
            s.set_image_class(name)
        except SessionSaveError as err:
            self._message("error", str(err))
        except (SessionError, ValueError) as err:
            self._message("warning", str(err).strip("'\""))
            return False
        self._message("info", f"The whole image is now class '{name}'." if name else "The image has no class now.")
        return True

    def _update_header(self) -> None:
        s = self.session
        if s is None:
            self.header.setText("No image is being annotated. Choose an image in the Segment panel.")
            return
        where = f"autosaved in {s.folder.name}" if s.folder is not None else "not saved to disk"
        self.header.setToolTip(f"Session folder: {s.folder}" if s.folder is not None else "")
        if s.last_save_error is not None:
            where = "<b style='color:#e34a33'>AUTOSAVE FAILED</b> (work kept in memory)"
        self.header.setText(f"<b>{s.image_name}</b> — {s.shape[0]} slices, {where}")

    def _on_object_selected(self, keep_range: bool = False) -> None:
        oid = self.selected_object()
        if oid is None or self.session is None or oid not in self.session.objects:
            self.provenance.setHtml("")
            self.slices.setRowCount(0)
            self._update_buttons()
            return
        obj = self.session.objects[oid]
        self.provenance.setHtml(provenance_html(obj))
        if not keep_range:
            st = self.session.object_stats(oid)
            if st["slice_range"] is not None:
                self.range_from.setValue(st["slice_range"][0])
                self.range_to.setValue(st["slice_range"][1])
        self._fill_slices()

    def _fill_slices(self) -> None:
        oid = self.selected_object()
        keep = {i.row() for i in self.slices.selectionModel().selectedRows()} if self.slices.selectionModel() else set()
        keep_z = {self.slices.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in keep if self.slices.item(r, 0)}
        self.slices.blockSignals(True)
        self.slices.setRowCount(0)
        rows = slice_rows(self.session, oid, self.filter.currentText()) if oid is not None and self.session else []
        self.slices.setRowCount(len(rows))
        pixel_cm2 = float(self.session.spacing[1] * self.session.spacing[2]) / 100.0 if rows else 0.0
        for r, row in enumerate(rows):
            status = table_item(row.status or "—")
            if row.status in STATUS_COLORS:
                status.setBackground(QBrush(QColor(STATUS_COLORS[row.status])))
                status.setForeground(QBrush(QColor("#111111")))
            for c, it in enumerate([table_item(str(row.slice), row.slice, True), status,
                                    table_item(f"{row.voxels * pixel_cm2:.2f}", align_right=True)]):
                self.slices.setItem(r, c, it)
            if row.slice in keep_z:
                self.slices.selectionModel().select(
                    self.slices.model().index(r, 0),
                    QItemSelectionModel.Select | QItemSelectionModel.Rows)
        self.slices.blockSignals(False)
        self._current_z = None
        self._mark_current_slice()
        self._update_buttons()

    def _mark_current_slice(self, event=None) -> None:
        """Show the slice the viewer displays in bold with a marker, and keep it in view."""
        if self.session is None:
            return
        try:
            z = self._shown_slice()
            if z == self._current_z and event is not None:
                return
            self._mark_row(z)
        except RuntimeError:  # the panel was closed while the viewer lives on
            try:
                self.viewer.dims.events.current_step.disconnect(self._mark_current_slice)
            except Exception:
                pass

    def _mark_row(self, z: int) -> None:
        self._current_z = z
        for r in range(self.slices.rowCount()):
            it = self.slices.item(r, 0)
            here = it.data(Qt.ItemDataRole.UserRole) == z
            font = it.font()
            font.setBold(here)
            it.setFont(font)
            it.setText(f"▶ {it.data(Qt.ItemDataRole.UserRole)}" if here else str(it.data(Qt.ItemDataRole.UserRole)))
            if here:
                self.slices.scrollToItem(it, QAbstractItemView.ScrollHint.PositionAtCenter)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt name): keep the shown slice in view
        super().resizeEvent(event)
        for r in range(self.slices.rowCount()):
            it = self.slices.item(r, 0)
            if it.data(Qt.ItemDataRole.UserRole) == self._current_z:
                self.slices.scrollToItem(it, QAbstractItemView.ScrollHint.PositionAtCenter)
                break

    def _update_buttons(self) -> None:
        oid = self.selected_object()
        has_obj = oid is not None and self.session is not None
        has_sel = has_obj and bool(self.slices.selectionModel().selectedRows())
        locked = has_obj and self.session.objects[oid].locked if has_obj else False
        self.accept_selected.setEnabled(has_sel)
        self.reject_selected.setEnabled(has_sel and not locked)
        self.accept_range.setEnabled(has_obj)
        self.reject_range.setEnabled(has_obj and not locked)
        self.accept_shown.setEnabled(has_obj)
        self.reject_shown.setEnabled(has_obj and not locked)
        self.next_review.setEnabled(has_obj)
        tip = "Unlock the object in the Segment panel to reject its slices" if locked else ""
        for b in (self.reject_selected, self.reject_range, self.reject_shown):
            b.setToolTip(tip or b.toolTip())

    # --------------------------------------------------------------------------------- actions
    def selected_slices(self) -> list[int]:
        rows = sorted(i.row() for i in self.slices.selectionModel().selectedRows())
        return [self.slices.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in rows]

    def _on_slice_clicked(self, item) -> None:
        z = self.slices.item(item.row(), 0).data(Qt.ItemDataRole.UserRole)
        self.jump_to(z)

    def jump_to(self, z: int) -> None:
        if self.ctrl.image_layer is not None:
            self.ctrl.jump_to_slice(z)
        else:
            self.viewer.dims.set_current_step(0, int(z))

    def _shown_slice(self) -> int:
        if self.ctrl.image_layer is not None:
            return self.ctrl.current_slice()
        return int(self.viewer.dims.current_step[0])

    def next_to_review(self) -> int | None:
        """Show the next slice (after the shown one, wrapping) still to review; returns it."""
        oid = self.selected_object()
        if oid is None or self.session is None:
            return None
        todo = [r.slice for r in slice_rows(self.session, oid, "To review")]
        if not todo:
            self._message("info", f"Every slice of '{self.session.objects[oid].display_name}' is reviewed.")
            return None
        z = self._shown_slice()
        nxt = next((t for t in todo if t > z), todo[0])
        self.jump_to(nxt)
        return nxt

    def accept_shown_slice(self) -> None:
        if self._review([self._shown_slice()], "accepted"):
            self.next_to_review()

    def review_selected(self, status: str) -> None:
        self._review(self.selected_slices(), status)

    def review_range(self, status: str) -> None:
        lo, hi = sorted((self.range_from.value(), self.range_to.value()))
        self._review(range(lo, hi + 1), status)

    def _review(self, slices, status: str) -> bool:
        """Accept or reject ``slices`` of the selected object; True when something changed."""
        oid = self.selected_object()
        if oid is None or self.session is None:
            return False
        slices = list(slices)
        name = self.session.objects[oid].display_name
        try:
            done = self.session.set_status(oid, slices, status)
        except SessionSaveError as err:  # applied in memory; the save failure is reported
            done = set(slices)
            self._message("error", str(err))
        except (ObjectLockedError, SessionError, KeyError, ValueError) as err:
            self._message("warning", str(err).strip("'\""))
            return False
        if status == "rejected" and done:
            self.ctrl.refresh_labels(sorted(done))
        if done:
            lo, hi = min(done), max(done)
            span = f"slice {lo}" if lo == hi else f"{len(done)} slices between {lo} and {hi}"
            extra = " and cleared them (other objects kept; Undo restores)" if status == "rejected" else ""
            self._message("info", f"{status.capitalize()} {span} of '{name}'{extra}.")
        else:
            self._message("info", f"'{name}' has nothing on those slices; nothing changed.")
        self.refresh()
        return bool(done)

    def _message(self, level: str, text: str) -> None:
        self.messages.append((level, text))
        color = {"error": "#e34a33", "warning": "#d08c00"}.get(level)
        self.status.setText(f"<span style='color:{color}'>{text}</span>" if color else text)
        try:
            from napari.utils.notifications import show_error, show_info, show_warning

            {"error": show_error, "warning": show_warning}.get(level, show_info)(text)
        except Exception:  # pragma: no cover - notifications are a convenience
            log.info(text)
