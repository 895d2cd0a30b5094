"""Backend chooser: segmenter from the registry, device, checkpoint, weight status, loading.

The weight status line says, before anything is loaded, whether a model's weights are in the cache,
will be downloaded, or are missing while offline (with the fix spelled out); while loading, a
progress bar follows the download; a model running on random weights gets a red banner.

"Adapter" (shown once a SAM2 backend is loaded and the segmentation model store holds adapter
versions for its base model and base weights): "Base model" or one version; choosing one is one
click either way (:meth:`SegmentWidget.choose_adapter`).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from pathlib import Path

from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_medprompt._qt.workers import start_worker
from napari_medprompt.segment.registry import available_segmenters, create_segmenter

log = logging.getLogger(__name__)

BASE_MODEL = "Base model (no adapter)"

RANDOM_BANNER = (
    "<b>RANDOM WEIGHTS</b>: this model has no trained weights, its masks are meaningless "
    "(tests and timing only). Choose a checkpoint or use 'classic'."
)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def weights_status(name: str, checkpoint: str = "", random_weights: bool = False) -> tuple[str, str]:
    """``(level, message)`` for the weights of backend ``name``; level is ok | info | warn | error."""
    info = available_segmenters().get(name)
    if info is None:
        return "error", f"unknown backend {name!r}"
    if not info.needs_weights:
        return "ok", "No weights needed (scikit-image); works offline."
    if random_weights:
        return "warn", RANDOM_BANNER
    if checkpoint:
        p = Path(checkpoint).expanduser()
        if p.is_file():
            return "ok", f"Local checkpoint: {p.name} ({p.stat().st_size / 1e6:.0f} MB)"
        return "error", f"Checkpoint file {p} does not exist: choose the downloaded .pt file."
    try:
        from napari_medprompt.models.cache import cache_dir
        from napari_medprompt.models.sam2_weights import model_spec

        spec = model_spec(info.kwargs.get("model", name))
    except Exception as err:  # the model table is not there: say what we know
        return "info", f"Weights are fetched on load ({err})."
    from huggingface_hub import try_to_load_from_cache

    hf = cache_dir("hf")
    cached = try_to_load_from_cache(spec.repo_id, spec.filename, cache_dir=hf)
    if isinstance(cached, str) and Path(cached).is_file():
        return "ok", f"Weights cached: {spec.filename}"
    url = f"https://huggingface.co/{spec.repo_id}/blob/main/{spec.filename}"
    if _offline():
        return "error", (
            f"Weights missing and offline: {spec.filename} is not in the cache {hf}. Fix: download "
            f"{url} on a connected machine and choose it below as a local checkpoint (or copy the "
            "Hugging Face cache folder into the cache; MEDPROMPT_CACHE_DIR sets it). Or use 'classic'."
        )
    return "info", f"{spec.filename} will be downloaded from {spec.repo_id} on Load (~40-900 MB)."


_COLORS = {"ok": "#3cb371", "info": "#c0c0c0", "warn": "#ff5050", "error": "#ff8c00"}


class _Progress(QObject):
    """Carries download progress from the loading thread to the main thread (queued signal)."""

    bytes_done = Signal(int, int)


def _factory_params(name: str) -> set[str]:
    info = available_segmenters()[name]
    module, _, attr = info.target.partition(":")
    factory = getattr(importlib.import_module(module), attr)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {"checkpoint", "device", "progress"}
    return set(params)


def avoid_llvm_clash() -> bool:
    """Keep triton out of a process whose OpenGL is Mesa's LLVM-based software renderer.

    torchvision imports triton (torch's kernel compiler) when it is installed; triton carries its own
    LLVM, and loading it into a process where Mesa's llvmpipe has already loaded libLLVM crashes
    the process (seen under Xvfb and on machines without a GPU driver). SAM2 inference never uses
    triton, so in that case triton is made unimportable for this process. Returns True if it did.
    """
    if "triton" in sys.modules:
        return False
    try:
        with open("/proc/self/maps") as f:
            mesa_llvm = any("libLLVM" in line for line in f)
    except OSError:  # not Linux: no llvmpipe clash known
        return False
    if mesa_llvm:
        sys.modules["triton"] = None  # `import triton` now raises ImportError; torch copes
        log.warning("OpenGL runs on Mesa's LLVM renderer: triton is disabled in this process "
                    "(it would load a second LLVM and crash); inference does not need it")
    return mesa_llvm


def leave_a_core_for_the_viewer(torch) -> None:
    """Run torch on all but one CPU core, so the viewer's main thread is never starved by inference
    on a machine without a GPU (on a 2-core machine: one thread for the model, one for the GUI)."""
    cores = os.cpu_count() or 1
    if cores > 1 and torch.get_num_threads() >= cores:
        torch.set_num_threads(cores - 1)


def preimport(name: str) -> None:
    """Import the backend's module (and torch / sam2 for model backends) on the main thread.

    Importing these native libraries for the first time from a worker thread is avoided on
    purpose (one-off, a few seconds); loading, binding and inference then run in workers.
    """
    info = available_segmenters()[name]
    if info.needs_weights:
        avoid_llvm_clash()
        import torch
        import torchvision  # noqa: F401

        leave_a_core_for_the_viewer(torch)

        try:
            import sam2.build_sam  # noqa: F401
            import sam2.sam2_image_predictor  # noqa: F401
        except ImportError:
            pass
    _factory_params(name)


def load_segmenter(name: str, checkpoint: str = "", device: str = "auto", random_weights=False, progress=None):
    """Create backend ``name`` with only the options it takes (runs in a worker thread)."""
    params = _factory_params(name)
    kwargs = {}
    if "checkpoint" in params:
        kwargs["checkpoint"] = "random" if random_weights else (checkpoint or None)
    if "device" in params:
        kwargs["device"] = device
    if "progress" in params and progress is not None:
        kwargs["progress"] = progress
    if "cache_dir" in params:  # embeddings precomputed by medprompt-embed (disk cache once it exists)
        from napari_medprompt.segment.embed import plugin_cache_dir

        kwargs["cache_dir"] = plugin_cache_dir()
    return create_segmenter(name, **kwargs)


class BackendPanel(QWidget):
    """Backend / device / checkpoint chooser with a Load button; emits ``loaded(segmenter)``."""

    loaded = Signal(object)
    failed = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._progress = _Progress()
        self._worker = None
        self.backend = QComboBox()
        for name, info in available_segmenters().items():
            self.backend.addItem(name)
            self.backend.setItemData(self.backend.count() - 1, info.description, 3)  # ToolTipRole
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.device.setToolTip("auto = CUDA GPU when there is one, else CPU")
        self.checkpoint = QLineEdit()
        self.checkpoint.setPlaceholderText("cached / downloaded weights (or choose a .pt file)")
        browse = QPushButton("…")
        browse.setMaximumWidth(28)
        browse.clicked.connect(self._browse)
        self.random = QCheckBox("random weights (testing only)")
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(  # selectable, so a path or an error can be copied
            self.status.textInteractionFlags() | Qt.TextInteractionFlag.TextSelectableByMouse)
        self.bar = QProgressBar()
        self.bar.setVisible(False)
        self.load_button = QPushButton("Load backend")
        self.adapter = QComboBox()
        self.adapter.setToolTip("SAM2 adapters trained in the Learn dock for this base model and checkpoint "
                                "(segmentation model store next to the session). 'Base model' = no adapter.")
        self.adapter_label = QLabel("Adapter")
        self.adapter_status = QLabel()
        self.adapter_status.setWordWrap(True)
        self.fill_adapters([], None)
        self.embedded = QLabel()
        self.embedded.setToolTip("Slices whose image embedding is computed (memory or the disk cache "
                                 "medprompt-embed created): a click there needs no encoder run. With the "
                                 "disk cache, the whole volume is embedded in the background while idle.")
        self.embedded.setWordWrap(True)
        self.embedded.setVisible(False)

        form = QFormLayout()
        form.addRow("Backend", self.backend)
        form.addRow("Device", self.device)
        row = QHBoxLayout()
        row.addWidget(self.checkpoint)
        row.addWidget(browse)
        form.addRow("Weights", row)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(form)
        lay.addWidget(self.random)
        lay.addWidget(self.status)
        lay.addWidget(self.bar)
        lay.addWidget(self.load_button)
        arow = QHBoxLayout()
        arow.addWidget(self.adapter_label)
        arow.addWidget(self.adapter, 1)
        lay.addLayout(arow)
        lay.addWidget(self.adapter_status)
        lay.addWidget(self.embedded)

        self.backend.currentTextChanged.connect(self.update_status)
        self.checkpoint.editingFinished.connect(self.update_status)
        self.random.toggled.connect(self.update_status)
        self.load_button.clicked.connect(self.load)
        self._progress.bytes_done.connect(self._on_bytes)
        if self.backend.findText("classic") >= 0:
            self.backend.setCurrentText("classic")
        self.update_status()

    def update_status(self, *_):
        name = self.backend.currentText()
        info = available_segmenters().get(name)
        needs = bool(info and info.needs_weights)
        for w in (self.checkpoint, self.random, self.device):
            w.setEnabled(needs)
        level, msg = weights_status(name, self.checkpoint.text().strip(), self.random.isChecked())
        self.set_status(level, msg)

    def set_status(self, level: str, msg: str) -> None:
        self.status.setText(f"<span style='color:{_COLORS.get(level, '#c0c0c0')}'>{msg}</span>")
        self.status.setProperty("level", level)

    def fill_adapters(self, records: list[dict], current: str | None) -> None:
        """Offer "Base model" and the adapter versions ``records`` (hidden when there are none)."""
        from napari_medprompt._qt.segment.text_prompt import version_label

        self.adapter.blockSignals(True)
        self.adapter.clear()
        self.adapter.addItem(BASE_MODEL, None)
        for r in records:
            self.adapter.addItem(version_label(r), r["id"])
            self.adapter.setItemData(self.adapter.count() - 1, version_label(r), 3)  # ToolTipRole
        self.adapter.blockSignals(False)
        self.select_adapter(current)
        show = bool(records) or current is not None
        for w in (self.adapter, self.adapter_label, self.adapter_status):
            w.setVisible(show)

    def select_adapter(self, version: str | None) -> None:
        self.adapter.blockSignals(True)
        i = self.adapter.findData(version) if version is not None else 0
        self.adapter.setCurrentIndex(max(i, 0))
        self.adapter.blockSignals(False)

    def show_adapter(self, info: dict | None) -> None:
        """Say which weights the engine uses now (after a switch)."""
        self.select_adapter((info or {}).get("store_version"))
        if info is None:
            self.adapter_status.setText("Using the base model (no adapter).")
        else:
            self.adapter_status.setText(f"Using adapter {info.get('store_version') or info.get('source')} "
                                        f"({info.get('method')}, {info.get('trainable_parameters', 0):,} trained "
                                        "parameters) on the base model.")

    def _browse(self):
        path, _ = QFileDialog.getOpenFileName(self, "SAM2 checkpoint", "", "Checkpoints (*.pt *.pth)")
        if path:
            self.checkpoint.setText(path)
            self.update_status()

    def _on_bytes(self, done: int, total: int) -> None:
        self.bar.setVisible(True)
        if total > 0:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(1000 * done / total))
            self.bar.setFormat(f"downloading {done / 1e6:.0f} / {total / 1e6:.0f} MB")
        else:
            self.bar.setRange(0, 0)

    def load(self) -> None:
        """Create the chosen backend in a worker; ``loaded`` or ``failed`` follows."""
        if self._worker is not None:
            return
        name = self.backend.currentText()
        self.load_button.setEnabled(False)
        self.set_status("info", f"Loading {name} …")
        self.bar.setVisible(True)
        self.bar.setRange(0, 0)
        try:
            preimport(name)
        except Exception as err:  # missing optional dependency: say so, keep the viewer alive
            self._failed(err)
            self._done()
            return
        self._worker = start_worker(
            load_segmenter,
            name,
            self.checkpoint.text().strip(),
            self.device.currentText(),
            self.random.isChecked(),
            self._progress.bytes_done.emit,
            on_result=self._loaded,
            on_error=self._failed,
            on_finish=self._done,
        )

    def _loaded(self, seg) -> None:
        desc = getattr(seg, "model_name", None) or getattr(seg, "name", "backend")
        dev = getattr(seg, "device", None)
        status = seg.weights_status() if hasattr(seg, "weights_status") else {}
        if getattr(seg, "random_weights", False):
            self.set_status("warn", RANDOM_BANNER)
        elif status.get("message"):
            self.set_status("ok", f"Loaded {status['message']}")
        else:
            self.set_status("ok", f"Loaded {desc}" + (f" on {dev}" if dev else ""))
        self.loaded.emit(seg)

    def _failed(self, err: BaseException) -> None:
        msg = f"Could not load {self.backend.currentText()}: {err}"
        self.set_status("error", msg)
        self.failed.emit(msg)

    def _done(self) -> None:
        self._worker = None
        self.bar.setVisible(False)
        self.load_button.setEnabled(True)
