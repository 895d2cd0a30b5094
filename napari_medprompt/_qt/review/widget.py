"""The "Review" dock widget: objects with their size and review state, per-slice status, provenance.

A view over the viewer's :class:`~napari_medprompt.session.AnnotationSession` (shared through
``controller_for(viewer)``): it lists the objects (name, label id, slices covered, volume in mL,
review summary, lock), the slices of the selected object with their status (prompted, propagated,
edited, accepted, rejected; click one to show it), accepts or rejects the selected slices or a
from/to range (rejecting clears that object only, on those slices; undo brings it back), and shows
how the object was made (backend, model, version, device, prompts, user, times).

The *Plane* chooser (axial, or whole coronal / sagittal slices) is in
:mod:`napari_medprompt._qt.review.planes`.
"""

from __future__ import annotations

import logging

import numpy as np
from qtpy.QtCore import QItemSelectionModel, QObject, Qt, QTimer, Signal
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QAbstractItemView, QWidget

from napari_medprompt._qt.controller import controller_for, real_viewer
from napari_medprompt._qt.review.planes import ReviewPlanes
from napari_medprompt._qt.review.ui import CLASS_COLUMN, build_review_ui, class_item, slice_columns, table_item
from napari_medprompt.segment.planes import VIEW_3D, plane_axis
from napari_medprompt.session import ObjectLockedError, SessionError, SessionSaveError
from napari_medprompt.session.review import (
    REVIEW_PLANES,
    STATUS_COLORS,
    object_rows,
    plane_slice_rows,
    plane_voxels,
    provenance_html,
)

log = logging.getLogger(__name__)

class _Relay(QObject):
    """Carries session callbacks (from any thread) to the GUI thread."""

    changed = Signal(object)


class ReviewWidget(ReviewPlanes, QWidget):
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
        self._syncing_plane = False
        self.viewer.dims.events.current_step.connect(self._mark_current_slice)
        self.viewer.dims.events.order.connect(self._follow_view)
        self.viewer.dims.events.ndisplay.connect(self._follow_view)
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
        self.plane.currentIndexChanged.connect(self._on_plane_chosen)
        self.slices.itemClicked.connect(self._on_slice_clicked)
        self.slices.itemSelectionChanged.connect(self._update_buttons)
        self.accept_shown.clicked.connect(self.accept_shown_slice)
        self.reject_shown.clicked.connect(self.reject_shown_slice)
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
        volume = session is not None and len(session.shape) == 3 and min(session.shape) > 1
        self.plane.setEnabled(volume)  # a 2D image (or a single slice) has only its own plane
        if not volume and self.chosen_plane() != "axial":
            self._syncing_plane = True
            try:
                self.set_plane("axial")
            finally:
                self._syncing_plane = False
        self._follow_view()
        self._set_range_limits()
        self.refresh()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        self._disconnect_dims()
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
            self._range_to_object()
        self._fill_slices()

    def _range_to_object(self) -> None:
        """Set the from/to range to the first and last slice of the chosen plane the object covers."""
        oid = self.selected_object()
        if oid is None or self.session is None or oid not in self.session.objects:
            return
        plane = self.chosen_plane()
        if plane == "axial":
            span = self.session.object_stats(oid)["slice_range"]
        else:
            present = np.flatnonzero(plane_voxels(self.session, oid, plane))
            span = (int(present[0]), int(present[-1])) if present.size else None
        if span is not None:
            self.range_from.setValue(span[0])
            self.range_to.setValue(span[1])

    def _fill_slices(self) -> None:
        oid = self.selected_object()
        keep = {i.row() for i in self.slices.selectionModel().selectedRows()} if self.slices.selectionModel() else set()
        keep_z = {self.slices.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in keep if self.slices.item(r, 0)}
        plane = self.chosen_plane()
        self.slices.blockSignals(True)
        self.slices.setRowCount(0)
        self.slices.setHorizontalHeaderLabels(slice_columns(plane))
        rows = (plane_slice_rows(self.session, oid, plane, self.filter.currentText())
                if oid is not None and self.session and oid in self.session.objects else [])
        self.slices.setRowCount(len(rows))
        # the pixel area of a slice of this plane: the spacing of the two other axes
        if rows:
            ax = REVIEW_PLANES[plane]
            sp = [float(v) for i, v in enumerate(self.session.spacing) if i != ax]
            pixel_cm2 = sp[0] * sp[1] / 100.0
        for r, row in enumerate(rows):
            status = table_item(row.status or "—")
            if row.status in STATUS_COLORS:
                status.setBackground(QBrush(QColor(STATUS_COLORS[row.status])))
                status.setForeground(QBrush(QColor("#111111")))
            area = table_item(f"{row.voxels * pixel_cm2:.2f}", row.voxels, align_right=True)
            area.setToolTip(f"{row.voxels} voxels on {plane} slice {row.slice}")
            for c, it in enumerate([table_item(str(row.slice), row.slice, True), status, area]):
                self.slices.setItem(r, c, it)
            if row.slice in keep_z:
                self.slices.selectionModel().select(
                    self.slices.model().index(r, 0),
                    QItemSelectionModel.Select | QItemSelectionModel.Rows)
        self.slices.blockSignals(False)
        self._current_z = None
        self._mark_current_slice()
        self._update_buttons()

    # --------------------------------------------------------------------------------- display
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
            self._disconnect_dims()

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
        """The selected rows' slice indices (of the chosen plane)."""
        rows = sorted(i.row() for i in self.slices.selectionModel().selectedRows())
        return [self.slices.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in rows]

    def _on_slice_clicked(self, item) -> None:
        z = self.slices.item(item.row(), 0).data(Qt.ItemDataRole.UserRole)
        self.jump_to(z)

    def jump_to(self, z: int, plane: str | None = None) -> None:
        """Show slice ``z`` of ``plane`` (default: the chosen plane); a 2D view is rolled to that plane."""
        plane = plane or self.chosen_plane()
        layer = self.ctrl.image_layer
        if layer is None or layer.ndim != 3:
            if plane == "axial":
                if layer is not None:
                    self.ctrl.jump_to_slice(z)
                else:
                    self.viewer.dims.set_current_step(0, int(z))
            return
        world_ax = self._show_plane_in_view(plane)
        dims = self.viewer.dims
        offset = dims.ndim - layer.ndim
        ax = plane_axis(plane)
        data = np.asarray(layer.world_to_data(np.asarray(dims.point, float)[offset:]), float)
        data[ax] = int(min(max(int(z), 0), layer.data.shape[ax] - 1))
        target = np.asarray(layer.data_to_world(data), float)
        dims.set_point(offset + world_ax, float(target[world_ax]))

    def _shown_slice(self) -> int:
        """The slice of the chosen plane the viewer is on."""
        plane = self.chosen_plane()
        if plane != "axial":
            return self.view_index(plane)
        if self.ctrl.image_layer is not None:
            return self.ctrl.current_slice()
        return int(self.viewer.dims.current_step[0])

    def next_to_review(self) -> int | None:
        """Show the next slice of the chosen plane (after the shown one, wrapping) still to review; returns it."""
        oid = self.selected_object()
        if oid is None or self.session is None:
            return None
        plane = self.chosen_plane()
        todo = [r.slice for r in plane_slice_rows(self.session, oid, plane, "To review")]
        if not todo:
            where = "slice" if plane == "axial" else f"{plane} slice"
            self._message("info", f"Every {where} of '{self.session.objects[oid].display_name}' is reviewed.")
            return None
        z = self._shown_slice()
        nxt = next((t for t in todo if t > z), todo[0])
        self.jump_to(nxt)
        return nxt

    def _shown_in_plane(self) -> int | None:
        """The shown slice of the chosen plane; None (with a message) when a 2D view shows another plane
        (a coronal / sagittal decision is made on the slice the user sees)."""
        plane = self.chosen_plane()
        shown = self.view_plane()
        if plane != "axial" and shown != VIEW_3D and shown != plane:
            self._message("warning", f"The viewer shows the {shown} plane: click a {plane} slice in the list "
                                     f"(or roll the dims to {plane}) first.")
            return None
        return self._shown_slice()

    def accept_shown_slice(self) -> None:
        z = self._shown_in_plane()
        if z is not None and self._review([z], "accepted"):
            self.next_to_review()

    def reject_shown_slice(self) -> None:
        z = self._shown_in_plane()
        if z is not None:
            self._review([z], "rejected")

    def review_selected(self, status: str) -> None:
        self._review(self.selected_slices(), status)

    def review_range(self, status: str) -> None:
        lo, hi = sorted((self.range_from.value(), self.range_to.value()))
        self._review(range(lo, hi + 1), status)

    def _review(self, slices, status: str) -> bool:
        """Accept or reject ``slices`` (of the chosen plane) of the selected object; True when something changed."""
        if self.chosen_plane() != "axial":
            return self._review_plane(slices, status)
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
