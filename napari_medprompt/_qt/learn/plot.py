"""A small line-plot widget drawn with QPainter: axes with ticks, several named series, a legend.

Used for the live training curves (loss and the validation metric, each on its own axis) and the
per-slice probability plot of a volume. Redrawing costs well under a millisecond for a few hundred
points, so the curves can follow every training step without stalling the viewer (no plotting
library needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from qtpy.QtCore import QPointF, QRectF, Qt, Signal
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

PALETTE = ["#56b4e9", "#e69f00", "#009e73", "#f0e442", "#cc79a7", "#d55e00", "#0072b2", "#999999"]


@dataclass
class Series:
    name: str
    color: str
    axis: str = "left"  # "left" | "right"
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)
    dashed: bool = False
    markers: bool = False


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step - 1e-9) * step
    out, v = [], start
    while v <= hi + 1e-9 * step:
        out.append(round(v, 10))
        v += step
    return out


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.0e}"
    return f"{v:g}"


class LinePlot(QWidget):
    """Lines on one or two y axes over a shared x axis.

    ``set_series(name, xs, ys)`` / ``append(name, x, y)`` change the data; ``set_marker(x)`` draws a
    vertical line (e.g. the slice shown). Clicking the plot emits ``clicked(x)`` in data units.
    """

    clicked = Signal(float)

    def __init__(self, title: str = "", xlabel: str = "", ylabel: str = "", y2label: str = "",
                 parent=None) -> None:
        super().__init__(parent)
        self.title, self.xlabel, self.ylabel, self.y2label = title, xlabel, ylabel, y2label
        self.series: dict[str, Series] = {}
        self.ylim: tuple[float, float] | None = None  # fixed left range (None: from the data)
        self.y2lim: tuple[float, float] | None = None
        self.xlim: tuple[float, float] | None = None
        self.marker: float | None = None
        self.placeholder = "no data yet"
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    # ------------------------------------------------------------------------------------ data
    def add_series(self, name: str, color: str | None = None, axis: str = "left", dashed: bool = False,
                   markers: bool = False) -> Series:
        s = Series(name, color or PALETTE[len(self.series) % len(PALETTE)], axis, dashed=dashed, markers=markers)
        self.series[name] = s
        self.update()
        return s

    def set_series(self, name: str, xs, ys, **kw) -> None:
        s = self.series.get(name) or self.add_series(name, **kw)
        s.xs, s.ys = [float(x) for x in xs], [float(y) for y in ys]
        self.update()

    def append(self, name: str, x: float, y: float) -> None:
        s = self.series.get(name) or self.add_series(name)
        s.xs.append(float(x))
        s.ys.append(float(y))
        self.update()

    def clear(self) -> None:
        self.series.clear()
        self.marker = None
        self.update()

    def set_marker(self, x: float | None) -> None:
        self.marker = x
        self.update()

    def n_points(self) -> int:
        return sum(len(s.xs) for s in self.series.values())

    # ----------------------------------------------------------------------------------- layout
    def _ranges(self):
        def span(vals, fixed):
            if fixed is not None:
                return fixed
            vals = [v for v in vals if math.isfinite(v)]
            if not vals:
                return (0.0, 1.0)
            lo, hi = min(vals), max(vals)
            if hi - lo < 1e-12:
                lo, hi = lo - 0.5, hi + 0.5
            pad = 0.05 * (hi - lo)
            return (lo - pad, hi + pad)

        xs = [x for s in self.series.values() for x in s.xs]
        left = [y for s in self.series.values() if s.axis == "left" for y in s.ys]
        right = [y for s in self.series.values() if s.axis == "right" for y in s.ys]
        xr = self.xlim or ((min(xs), max(xs)) if xs else (0.0, 1.0))
        if xr[1] - xr[0] < 1e-12:
            xr = (xr[0] - 0.5, xr[1] + 0.5)
        return xr, span(left, self.ylim), (span(right, self.y2lim) if right or self.y2lim else None)

    def _plot_rect(self) -> QRectF:
        has_right = any(s.axis == "right" for s in self.series.values()) or self.y2lim is not None
        top = 20 if self.title else 8
        return QRectF(46, top, max(self.width() - 46 - (56 if has_right else 12), 10),
                      max(self.height() - top - 34 - 14, 10))

    def mousePressEvent(self, event) -> None:  # noqa: N802 (Qt name)
        rect = self._plot_rect()
        (x0, x1), _, _ = self._ranges()
        pos = event.position() if hasattr(event, "position") else event.pos()
        if rect.width() > 0 and rect.left() <= pos.x() <= rect.right():
            self.clicked.emit(x0 + (pos.x() - rect.left()) / rect.width() * (x1 - x0))
        super().mousePressEvent(event)

    # ------------------------------------------------------------------------------------ paint
    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt name)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        fg = pal.color(pal.ColorRole.WindowText)
        grid = QColor(fg)
        grid.setAlpha(40)
        font = QFont(self.font())
        font.setPointSizeF(max(font.pointSizeF() * 0.85, 7))
        p.setFont(font)
        rect = self._plot_rect()
        (x0, x1), (y0, y1), right = self._ranges()

        def px(x):
            return rect.left() + (x - x0) / (x1 - x0) * rect.width()

        def py(y, lim):
            lo, hi = lim
            return rect.bottom() - (y - lo) / (hi - lo) * rect.height()

        if self.title:
            p.setPen(fg)
            p.drawText(QRectF(0, 0, self.width(), 18), Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter,
                       self.title)
        p.setPen(QPen(grid, 1))
        for t in nice_ticks(y0, y1, 4):
            y = py(t, (y0, y1))
            p.drawLine(QPointF(rect.left(), y), QPointF(rect.right(), y))
            p.setPen(fg)
            p.drawText(QRectF(0, y - 8, rect.left() - 4, 16), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                       _fmt(t))
            p.setPen(QPen(grid, 1))
        if right is not None:
            for t in nice_ticks(right[0], right[1], 4):
                y = py(t, right)
                p.setPen(fg)
                p.drawText(QRectF(rect.right() + 4, y - 8, 42, 16),
                           Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, _fmt(t))
        integer_x = all(float(x).is_integer() for s in self.series.values() for x in s.xs)
        for t in nice_ticks(x0, x1, 6):
            if integer_x and not float(t).is_integer():
                continue
            x = px(t)
            p.setPen(QPen(grid, 1))
            p.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
            p.setPen(fg)
            p.drawText(QRectF(x - 30, rect.bottom() + 2, 60, 14), Qt.AlignmentFlag.AlignHCenter, _fmt(t))
        p.setPen(QPen(fg, 1))
        p.drawRect(rect)
        if self.xlabel:
            p.drawText(QRectF(rect.left(), rect.bottom() + 15, rect.width(), 14), Qt.AlignmentFlag.AlignHCenter,
                       self.xlabel)
        if self.ylabel:
            p.save()
            p.translate(10, rect.center().y())
            p.rotate(-90)
            p.drawText(QRectF(-rect.height() / 2, -9, rect.height(), 14), Qt.AlignmentFlag.AlignHCenter, self.ylabel)
            p.restore()
        if self.y2label and right is not None:
            p.save()
            p.translate(self.width() - 12, rect.center().y())
            p.rotate(90)
            p.drawText(QRectF(-rect.height() / 2, -9, rect.height(), 14), Qt.AlignmentFlag.AlignHCenter, self.y2label)
            p.restore()
        if not self.n_points():
            p.drawText(rect, Qt.AlignmentFlag.AlignCenter, self.placeholder)
        p.setClipRect(rect.adjusted(-3, -3, 3, 3))
        for s in self.series.values():
            lim = right if s.axis == "right" and right is not None else (y0, y1)
            pts = [QPointF(px(x), py(y, lim)) for x, y in zip(s.xs, s.ys) if math.isfinite(y)]
            if not pts:
                continue
            pen = QPen(QColor(s.color), 2)
            if s.dashed:
                pen.setStyle(Qt.PenStyle.DashLine)
            p.setPen(pen)
            if len(pts) > 1:
                path = QPainterPath(pts[0])
                for q in pts[1:]:
                    path.lineTo(q)
                p.drawPath(path)
            if s.markers or len(pts) == 1:
                p.setBrush(QColor(s.color))
                for q in pts:
                    p.drawEllipse(q, 2.5, 2.5)
                p.setBrush(Qt.BrushStyle.NoBrush)
        if self.marker is not None and x0 <= self.marker <= x1:
            mc = QColor(fg)
            mc.setAlpha(160)
            p.setPen(QPen(mc, 1, Qt.PenStyle.DotLine))
            x = px(self.marker)
            p.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
        p.setClipping(False)
        # legend (top-left inside the plot)
        x, y = rect.left() + 6, rect.top() + 4
        shown = [s for s in self.series.values() if s.xs]
        if shown:
            bg = QColor(pal.color(pal.ColorRole.Window))
            bg.setAlpha(200)
            width = max(p.fontMetrics().horizontalAdvance(s.name + (" (right axis)" if s.axis == "right" else ""))
                        for s in shown)
            p.fillRect(QRectF(x - 3, y - 1, width + 26, 14 * len(shown) + 2), bg)
        for s in self.series.values():
            if not s.xs:
                continue
            p.setPen(QPen(QColor(s.color), 3))
            p.drawLine(QPointF(x, y + 7), QPointF(x + 14, y + 7))
            p.setPen(fg)
            label = s.name + (" (right axis)" if s.axis == "right" and right is not None else "")
            p.drawText(QRectF(x + 18, y, 220, 14), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, label)
            y += 14
        p.end()
