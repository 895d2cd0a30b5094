"""An option form built from a method's option schema (:class:`~napari_medprompt.classify.base.OptionSpec`).

One row per option: a check box (bool), a spin box (int / float, with the schema's range), a combo box
(str with choices), or a line edit (free str, lists as comma-separated values, dicts as JSON). Each
row's tooltip is the option's one-line help; "Defaults" puts every value back. ``values()`` returns
only what differs from the defaults, validated through
:func:`~napari_medprompt.classify.base.validate_method_options` (the same check the CLI runs).
"""

from __future__ import annotations

import json

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QWidget,
)

_BIG = 1_000_000_000


class OptionForm(QWidget):
    """The editable options of one method."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.form = QFormLayout(self)
        self.form.setContentsMargins(0, 0, 0, 0)
        self.info = None
        self.editors: dict[str, QWidget] = {}

    def set_method(self, info) -> None:
        """Rebuild the rows for ``info`` (a :class:`MethodInfo`, or None for no method)."""
        while self.form.rowCount():
            self.form.removeRow(0)
        self.editors = {}
        self.info = info
        if info is None:
            return
        if not info.options:
            self.form.addRow(QLabel("<i>this method has no options</i>"))
        for spec in info.options:
            ed = self._editor(spec)
            ed.setToolTip(spec.describe())
            label = QLabel(spec.name.replace("_", " "))
            label.setToolTip(spec.help)
            self.form.addRow(label, ed)
            self.editors[spec.name] = ed
        self.reset()

    def _editor(self, spec) -> QWidget:
        if spec.type is bool:
            return QCheckBox()
        if spec.type is int and spec.default is not None:
            sb = QSpinBox()
            sb.setRange(int(spec.min) if spec.min is not None else -_BIG, int(spec.max) if spec.max is not None else _BIG)
            return sb
        if spec.type is float and spec.default is not None:
            sb = QDoubleSpinBox()
            import math

            small = abs(spec.default) if spec.default else 1.0
            sb.setDecimals(min(max(3, 2 - math.floor(math.log10(small))), 10))  # 1e-5 shows as 0.0000100
            sb.setRange(float(spec.min) if spec.min is not None else -1e9, float(spec.max) if spec.max is not None else 1e9)
            step = abs(spec.default) / 10 if spec.default else 0.1
            sb.setSingleStep(step)
            return sb
        if spec.type is str and spec.choices:
            cb = QComboBox()
            cb.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            cb.setMinimumContentsLength(10)
            cb.addItems([str(c) for c in spec.choices])
            return cb
        le = QLineEdit()
        if spec.default is None:
            le.setPlaceholderText("automatic")
        return le

    def reset(self) -> None:
        """Every editor back to the schema's default."""
        if self.info is None:
            return
        for spec in self.info.options:
            self._set(spec, self.editors[spec.name], spec.default)

    @staticmethod
    def _set(spec, ed, value) -> None:
        if isinstance(ed, QCheckBox):
            ed.setChecked(bool(value))
        elif isinstance(ed, (QSpinBox, QDoubleSpinBox)):
            ed.setValue(value)
        elif isinstance(ed, QComboBox):
            ed.setCurrentText(str(value))
        elif value is None:
            ed.setText("")
        elif spec.type is list and spec.item_type in (int, float):
            ed.setText(", ".join(str(v) for v in value))
        elif spec.type is list:  # strings may hold commas: JSON
            ed.setText(json.dumps(list(value)))
        elif spec.type is dict:
            ed.setText(json.dumps(value))
        else:
            ed.setText(str(value))

    def raw_values(self) -> dict:
        """The editors' values as typed (None for an empty "automatic" field)."""
        out = {}
        if self.info is None:
            return out
        for spec in self.info.options:
            ed = self.editors[spec.name]
            if isinstance(ed, QCheckBox):
                out[spec.name] = ed.isChecked()
            elif isinstance(ed, (QSpinBox, QDoubleSpinBox)):
                out[spec.name] = ed.value()
            elif isinstance(ed, QComboBox):
                out[spec.name] = ed.currentText()
            else:
                text = ed.text().strip()
                out[spec.name] = None if text == "" and spec.default is None else text
        return out

    def values(self) -> dict:
        """Options that differ from the defaults, checked against the schema (``ValueError`` names a
        bad value)."""
        from napari_medprompt.classify.base import validate_method_options

        if self.info is None:
            return {}
        full = validate_method_options(self.info.name, self.raw_values())
        defaults = self.info.default_options()
        return {k: v for k, v in full.items() if v != defaults.get(k)}

    def set_values(self, options: dict) -> None:
        if self.info is None:
            return
        for spec in self.info.options:
            if spec.name in options:
                self._set(spec, self.editors[spec.name], options[spec.name])
