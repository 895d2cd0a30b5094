"""Text prompts and adapted models in the Segment widget.

"Text" box: type a structure name ("liver", "left kidney"), choose *this slice* or *whole volume*,
press "Segment from text". The model is stock CLIPSeg (CIDAS/clipseg-rd64-refined through the weight
cache; without the weights, offline, the real config with random weights, labelled RANDOM WEIGHTS)
or a text version (VLSM adapter / decoder) of the segmentation model store. It runs in a worker
with a progress bar and a Cancel button. Stock CLIPSeg sees the slices through the display's contrast
limits (what the clinician sees); a stored version through the window it was trained with.

- *this slice*: the mask is a preview on the axial slice shown; Accept commits it ("prompted").
- *whole volume*: every axial slice where the mask is not empty is committed at once as one undo
  step with status "needs review" (what Review lists as to be checked). Like a propagation commit, it
  never writes slices the user prompted, edited (erased too), accepted or rejected, nor voxels of
  other objects, nor a locked object. A cancelled run commits nothing.

The segmentation model store is ``<learn folder>/seg_models`` (:func:`seg_store_for`): the learn
folder next to the image's session folder (:func:`napari_medprompt.learn.learn_folder_for`).
SAM2 adapter versions there whose base model and base weights hash match the loaded SAM2 engine are
offered in the Model box's "Adapter" chooser (see :class:`~.backend_panel.BackendPanel`).
"""

from __future__ import annotations

import threading

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

#: CLIPSeg input size (the paper's 352 px); tests make it smaller.
TEXT_IMAGE_SIZE = 352
STOCK_LABEL = "CLIPSeg (stock, CIDAS/clipseg-rd64-refined)"
SCOPES = {"this slice": "slice", "whole volume": "volume"}
TEXT_RANDOM_BANNER = ("<b>RANDOM WEIGHTS</b>: {model} runs on CLIPSeg with random weights (the trained "
                      "weights are not in the cache): its masks are meaningless (tests and timing only).")
BATCH = 4


class TextPromptError(ValueError):
    """A text prompt that cannot run (the message says why; nothing was changed)."""


# ------------------------------------------------------------------------------ model store
def seg_store_for(session):
    """The segmentation model store of ``session``'s learn folder (None without a session folder or
    when the folder has no ``seg_models`` yet). Never created here: the Learn dock writes it."""
    if session is None or getattr(session, "folder", None) is None:
        return None
    from napari_medprompt.learn.workspace import learn_folder_for
    from napari_medprompt.train.store import ModelStore

    root = learn_folder_for(session.folder) / "seg_models"
    return ModelStore(root) if root.is_dir() else None


def _versions(store) -> list[dict]:
    if store is None:
        return []
    try:
        return [dict(store.get(s["id"]), active=s.get("active")) for s in store.list()]
    except (OSError, ValueError) as err:  # a broken store: offer nothing from it
        import logging

        logging.getLogger(__name__).warning("segmentation model store %s cannot be read: %s", store.root, err)
        return []


def text_versions(store) -> list[dict]:
    """Records of the store's text-prompted CLIPSeg versions (VLSM adapters, decoder fine-tunes)."""
    from napari_medprompt.seg_adapters.registry import available_seg_methods

    text = {m for m in available_seg_methods() if not m.startswith("sam2-")}
    return [r for r in _versions(store) if r.get("method") in text]


def sam2_versions(store, model_name: str | None, state_hash: str | None = None) -> list[dict]:
    """Records of the store's SAM2 adapter versions for base ``model_name`` (and, when given, the base
    weights hash ``state_hash``): adapters of another base are not offered."""
    out = []
    for r in _versions(store):
        b = r.get("backbone") or {}
        if not str(r.get("method", "")).startswith("sam2-") or b.get("name") != model_name:
            continue
        if state_hash is not None and b.get("state_hash") and b["state_hash"] != state_hash:
            continue
        out.append(r)
    return out


def version_label(rec: dict) -> str:
    m = rec.get("metrics") or {}
    sel = m.get("val") or m.get("train") or {}
    dice = sel.get("dice")
    parts = [rec["id"]]
    if dice is not None:
        parts.append(f"dice {float(dice):.2f}")
    objects = (rec.get("seg") or {}).get("objects") or []
    if objects:
        parts.append(", ".join(map(str, objects[:3])) + ("…" if len(objects) > 3 else ""))
    parts.append(rec.get("method") or "?")
    if (rec.get("backbone") or {}).get("random_weights"):
        parts.append("random base")
    return " · ".join(parts) + (" (active)" if rec.get("active") else "")


def engine_state_hash(seg) -> str:
    """Hash of the loaded SAM2 engine's base weights (what an adapter record must carry)."""
    from napari_medprompt.seg_adapters.sam2_engine import _engine_base

    return _engine_base(seg).state_hash()


# ---------------------------------------------------------------------------------- models
def check_text(text: str) -> str:
    """The prompt stripped; :class:`TextPromptError` for an empty one or one longer than CLIP's context."""
    t = (text or "").strip()
    if not t:
        raise TextPromptError("Empty text prompt: type the structure to segment (e.g. 'liver', 'left kidney').")
    from open_clip.tokenizer import SimpleTokenizer

    from napari_medprompt.seg_adapters.clipseg import CONTEXT_LENGTH

    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = SimpleTokenizer()
    n = len(_TOKENIZER.encode(t))
    if n + 2 > CONTEXT_LENGTH:
        raise TextPromptError(f"Text prompt too long: {n} tokens, CLIP's text encoder takes at most "
                              f"{CONTEXT_LENGTH - 2}. Name the structure in a few words.")
    return t


_TOKENIZER = None


def load_text_model(version: str | None, store, device: str = "cpu"):
    """``(TextSegmenter, note)`` for the stock model (``version`` None) or a store version. Stock
    CLIPSeg without cached weights falls back to random weights (``note`` says so)."""
    from napari_medprompt.seg_adapters.segmenter import TextSegmenter

    if version is not None:
        return TextSegmenter.from_store(store, version, device=device), ""
    from napari_medprompt.models.cache import WeightsUnavailable
    from napari_medprompt.seg_adapters.clipseg import load_clipseg
    from napari_medprompt.seg_adapters.vlsm import DecoderFinetune

    note = ""
    try:
        base = load_clipseg("default", device=device, image_size=TEXT_IMAGE_SIZE)
    except (WeightsUnavailable, OSError) as err:
        note = f"CLIPSeg weights unavailable ({err}); running with RANDOM weights."
        base = load_clipseg("random", device=device, image_size=TEXT_IMAGE_SIZE)
    model = DecoderFinetune(base, [], method="clipseg-decoder", image_size=TEXT_IMAGE_SIZE)
    model.decoder.requires_grad_(False)
    return TextSegmenter(model, device), note


def display_window(seg, limits) -> None:
    """Stock CLIPSeg sees the slices through the display's contrast limits ``(low, high)`` (what the
    clinician sees); a stored version keeps the window it was trained with. None: its own default."""
    import dataclasses

    model = seg.model
    if getattr(model, "store_version", None) is not None:
        return
    base = getattr(model, "_stock_preprocess", None)
    if base is None:
        base = model._stock_preprocess = model.preprocess
    if limits is None or not float(limits[1]) > float(limits[0]):
        model.preprocess = base
        return
    lo, hi = float(limits[0]), float(limits[1])
    model.preprocess = dataclasses.replace(base, intensity="window", window=((lo + hi) / 2, hi - lo))


def text_job(get_model, slices, prompt: str, cancel: threading.Event, spacing=None, limits=None):
    """Generator run in a worker: yields ``(done, total)``; returns ``{index: mask}`` of the
    non-empty masks (all of them when not cancelled) and whether it was cancelled."""
    seg = get_model()
    display_window(seg, limits)
    n = len(slices)
    out: dict[int, np.ndarray] = {}
    yield 0, n
    for i in range(0, n, BATCH):
        if cancel.is_set():
            return out, True
        idx = list(range(i, min(i + BATCH, n)))
        probs = seg.probabilities([slices[k][1] for k in idx], prompt, spacing)
        for k, p in zip(idx, probs):
            out[slices[k][0]] = p >= seg.threshold
        yield min(i + BATCH, n), n
    return out, cancel.is_set()


# -------------------------------------------------------------------------------------- UI
class TextPanel(QWidget):
    """Text box, model chooser (stock / store versions), scope, Segment / Cancel, progress, banner."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.text = QLineEdit()
        self.text.setPlaceholderText("structure, e.g. liver, left kidney")
        self.text.setToolTip("Name the structure to segment; Enter runs it")
        self.model = QComboBox()
        self.model.setToolTip("Stock CLIPSeg, or a text version trained in the Learn dock "
                              "(segmentation model store next to the session)")
        self.scope = QComboBox()
        self.scope.addItems(list(SCOPES))
        self.scope.setToolTip("this slice: a preview to accept · whole volume: every slice where the "
                              "structure is found, committed as 'needs review' (your slices are kept)")
        self.refresh = QPushButton("↻")
        self.refresh.setMaximumWidth(28)
        self.refresh.setToolTip("Read the segmentation model store again (versions trained since)")
        self.run_button = QPushButton("Segment from text")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.bar = QProgressBar()
        self.bar.setVisible(False)
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setVisible(False)
        self.fill_models([])

        row1 = QHBoxLayout()
        row1.addWidget(QLabel("Text"))
        row1.addWidget(self.text, 1)
        row2 = QHBoxLayout()
        row2.addWidget(QLabel("Model"))
        row2.addWidget(self.model, 1)
        row2.addWidget(self.refresh)
        row3 = QHBoxLayout()
        row3.addWidget(self.scope)
        row3.addWidget(self.run_button)
        row3.addWidget(self.cancel_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row1)
        lay.addLayout(row2)
        lay.addLayout(row3)
        lay.addWidget(self.bar)
        lay.addWidget(self.banner)

    def fill_models(self, records: list[dict]) -> None:
        current = self.model.currentData()
        self.model.blockSignals(True)
        self.model.clear()
        self.model.addItem(STOCK_LABEL, None)
        for r in records:
            self.model.addItem(version_label(r), r["id"])
            self.model.setItemData(self.model.count() - 1, version_label(r), 3)  # ToolTipRole
        i = self.model.findData(current) if current is not None else 0
        self.model.setCurrentIndex(max(i, 0))
        self.model.blockSignals(False)

    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.text.setEnabled(not running)
        self.model.setEnabled(not running)
        self.scope.setEnabled(not running)
        self.bar.setVisible(running)
        if running:
            self.bar.setRange(0, 0)

    def progress(self, done: int, total: int) -> None:
        self.bar.setRange(0, max(total, 1))
        self.bar.setValue(done)
        self.bar.setFormat(f"{done} / {total} slices")

    def show_weights(self, random_weights: bool, text: str = "") -> None:
        if random_weights:
            self.banner.setText(f"<span style='color:#ff5050'>{TEXT_RANDOM_BANNER.format(model=text)}</span>")
        else:
            self.banner.setText(f"<span style='color:#3cb371'>{text}</span>")
        self.banner.setProperty("random_weights", bool(random_weights))
        self.banner.setVisible(True)


# -------------------------------------------------------------------------------- mixin
class TextPromptMixin:
    """Text prompts and the SAM2 adapter chooser of :class:`~.widget.SegmentWidget`."""

    def _init_text(self) -> None:
        self._text_models: dict = {}  # (store root, version) -> TextSegmenter
        self._text_run = None  # (cancel event, worker)
        self._pending_extra: dict = {}
        self.text_panel.run_button.clicked.connect(lambda: self.segment_text())
        self.text_panel.text.returnPressed.connect(lambda: self.segment_text())
        self.text_panel.cancel_button.clicked.connect(self.cancel_text)
        self.text_panel.refresh.clicked.connect(self.refresh_seg_models)
        self.backend.adapter.activated.connect(lambda _i: self.choose_adapter(self.backend.adapter.currentData()))

    def seg_store(self):
        return seg_store_for(self.ctrl.session)

    def refresh_seg_models(self) -> None:
        """Fill the text model chooser and the SAM2 adapter chooser from the segmentation store."""
        store = self.seg_store()
        self.text_panel.fill_models(text_versions(store))
        seg = self.ctrl.segmenter
        if seg is None or not hasattr(seg, "use_adapter") or store is None:
            self.backend.fill_adapters([], None)
            return
        candidates = sam2_versions(store, getattr(seg, "model_name", None))
        current = (getattr(seg, "adapter_info", None) or {}).get("store_version")
        if not candidates:
            self.backend.fill_adapters([], current)
            return

        def hashed():
            return sam2_versions(store, seg.model_name, engine_state_hash(seg))

        from napari_medprompt._qt.workers import start_worker

        start_worker(hashed, on_result=lambda recs: self.backend.fill_adapters(recs, current)
                     if seg is self.ctrl.segmenter else None,
                     on_error=lambda e: self._warn(f"Could not read the adapter versions: {e}"))

    # --------------------------------------------------------------------- SAM2 adapter choice
    def choose_adapter(self, version: str | None) -> None:
        """Use SAM2 adapter ``version`` of the segmentation store (None: the base model)."""
        seg = self.ctrl.segmenter
        if seg is None or not hasattr(seg, "use_adapter"):
            self._warn("Adapters apply to a SAM2 backend: load one first.")
            return
        if self.run is not None:
            self._warn("Wait for the propagation to end (or cancel it) before switching the model.")
            self.backend.select_adapter((getattr(seg, "adapter_info", None) or {}).get("store_version"))
            return
        store = self.seg_store()
        if version is not None and store is None:
            self._error("No segmentation model store next to this session.")
            return
        self._clear_preview()
        self.prefetcher.stop()
        self._seg_ready = False
        self.backend.adapter.setEnabled(False)

        def job():
            with self._bind_lock:
                if version is None:
                    seg.use_adapter(None)
                    return None
                from napari_medprompt.seg_adapters.sam2_engine import use_store_version

                return use_store_version(seg, store, version)

        def done(info):
            self._seg_ready = True
            self.backend.adapter.setEnabled(True)
            self.backend.show_adapter(info)
            what = f"adapter {version} ({info['method']})" if info else "the base model"
            self._notify("info", f"{getattr(seg, 'model_name', 'SAM2')} now uses {what}.")
            layer = self.ctrl.image_layer
            if layer is not None:
                from napari_medprompt._qt.segment.widget import disk_cache_on

                self.prefetcher.set_segmenter(seg, layer.data.shape[0] if layer.ndim == 3 else 1)
                self.prefetcher.whole_volume = disk_cache_on(seg) and layer.ndim == 3
                self.update_embedded()
                self._follow_slice()
            self._update_buttons()

        def failed(err):
            self._seg_ready = True
            self.backend.adapter.setEnabled(True)
            self.backend.select_adapter((getattr(seg, "adapter_info", None) or {}).get("store_version"))
            self._error(f"Could not use adapter {version}: {err}. The model was not changed.")

        from napari_medprompt._qt.workers import start_worker

        start_worker(job, on_result=done, on_error=failed)

    # ------------------------------------------------------------------------------ text
    def segment_text(self, text: str | None = None, scope: str | None = None):
        """Segment the structure named ``text`` (default: the text box) on the slice shown or over
        the whole volume (``scope`` "slice" / "volume", default: the chooser). Returns the worker."""
        panel = self.text_panel
        if text is not None:
            panel.text.setText(text)
        if scope is not None:
            panel.scope.setCurrentText({v: k for k, v in SCOPES.items()}[scope])
        if self._text_run is not None:
            self._warn("A text segmentation is running: wait for it or cancel it.")
            return None
        if not self._ready(need_segmenter=False):
            return None
        try:
            prompt = check_text(panel.text.text())
        except TextPromptError as err:
            self._error(f"{err} Nothing was changed.")
            return None
        if self.run is not None:
            self._warn("A propagation is running: wait for it or cancel it first. Nothing was changed.")
            return None
        image = self.ctrl.image_layer
        scope = SCOPES[panel.scope.currentText()]
        if image.ndim == 3:
            plane = self.view_plane()
            if plane != "axial":
                self._error(f"Text prompts work in the axial view (the viewer shows the {plane} view): "
                            "roll the dims back to axial. Nothing was changed.")
                return None
        if scope == "volume" and image.ndim != 3:
            scope = "slice"
        data = np.asarray(image.data)
        if scope == "slice":
            z = self.ctrl.current_slice() if image.ndim == 3 else 0
            slices = [(z, data[z] if image.ndim == 3 else data)]
        else:
            slices = [(z, data[z]) for z in range(data.shape[0])]
        spacing = tuple(self.volume.spacing[-2:]) if getattr(self.volume, "spacing", None) is not None else None
        store, version = self.seg_store(), panel.model.currentData()
        key = (str(getattr(store, "root", "")), version)
        cache = self._text_models

        def get_model():
            if key not in cache:
                cache.clear()  # one CLIPSeg in memory
                cache[key] = load_text_model(version, store, _device())
            return cache[key][0]

        cancel = threading.Event()
        self.prefetcher.stop()  # the CPU goes to the text model; prefetching resumes after it
        panel.set_running(True)
        self.ui.status.setText(f"Segmenting '{prompt}' on {'slice ' + str(slices[0][0]) if scope == 'slice' else f'{len(slices)} slices'} …")
        from napari_medprompt._qt.workers import start_worker

        limits = tuple(float(v) for v in image.contrast_limits)
        worker = start_worker(
            text_job, get_model, slices, prompt, cancel, spacing, limits,
            on_yield=lambda p: panel.progress(*p),
            on_result=lambda res, session=self.ctrl.session: self._text_done(res, prompt, scope, key, session),
            on_error=lambda e: self._error(f"Text segmentation failed: {e}. Nothing was changed."),
            on_finish=self._text_finished,
        )
        self._text_run = (cancel, worker)
        return worker

    def cancel_text(self) -> None:
        if self._text_run is not None:
            self._text_run[0].set()

    def _text_finished(self) -> None:
        self._text_run = None
        self.text_panel.set_running(False)
        self._report_text_model()
        self._follow_slice()

    def _report_text_model(self) -> None:
        """Banner (RANDOM WEIGHTS or the model in use) and, once, why the stock weights are missing."""
        entry = self._text_models.get(next(iter(self._text_models), None))
        if entry is not None:
            seg, note = entry
            self.text_panel.show_weights(seg.random_weights, self._text_model_label(seg))
            if note and not getattr(self, "_text_note_shown", False):
                self._text_note_shown = True
                self._warn(note)

    def _text_model_label(self, seg) -> str:
        model = seg.model
        v = getattr(model, "store_version", None)
        return f"version {v} ({model.name})" if v else "stock"

    def _text_provenance(self, seg, prompt: str, scope: str) -> dict:
        model = seg.model
        prov = {
            "backend": "text (CLIPSeg)",
            "model": model.backbone.name,
            "version": getattr(model, "store_version", None),
            "device": str(seg.device),
            "random_weights": bool(seg.random_weights),
            "method": model.name,
            "weights": getattr(model.backbone, "pretrained", None),
            "base_state_hash": model.backbone.state_hash(),
            "text_prompt": prompt,
            "text_scope": scope,
            "threshold": seg.threshold,
            "model_window": (None if model.preprocess.window is None else
                             [model.preprocess.window[0] - model.preprocess.window[1] / 2,
                              model.preprocess.window[0] + model.preprocess.window[1] / 2]),
            "modality": getattr(self.volume, "modality", None),
            "display_preset": self.ui.window.currentText() or None,
            "plane": "axial",
            "plane_slices": None,
        }
        return prov

    def _text_object(self, prompt: str) -> int:
        """The object a text result goes to: the current one when it is named ``prompt`` or still
        empty, else a new object named after the prompt."""
        session = self.ctrl.session
        obj = session.objects.get(self.ctrl.current_object)
        if obj is not None and not obj.locked and (obj.name.strip().lower() == prompt.lower()
                                                   or not obj.slice_status):
            if obj.name.strip().lower() != prompt.lower() and not obj.slice_status:
                self._session_call("rename", obj.id, prompt)
            return obj.id
        return self.new_object(name=prompt)

    def _text_done(self, res, prompt: str, scope: str, key, session=None) -> None:
        masks, cancelled = res
        self._report_text_model()  # before the result's own status line
        seg = self._text_models[key][0] if key in self._text_models else None
        if self.ctrl.session is None or seg is None:
            return
        if session is not self.ctrl.session:  # the image changed while the model ran
            self._notify("info", f"The text segmentation of '{prompt}' was for another image: discarded.")
            return
        if cancelled:
            self.ui.status.setText(f"Text segmentation of '{prompt}' cancelled: nothing was changed.")
            return
        found = {z: m for z, m in masks.items() if m.any()}
        rw = " (RANDOM WEIGHTS: meaningless)" if seg.random_weights else ""
        if not found:
            self._notify("info", f"'{prompt}' was not found{' on slice ' + str(next(iter(masks))) if scope == 'slice' else ''}"
                         f"{rw}: nothing was changed.")
            return
        oid = self._text_object(prompt)
        if not oid:
            return
        prov = self._text_provenance(seg, prompt, scope)
        if scope == "slice":
            self._clear_preview()
            (z, mask), = found.items()
            self._pending[z] = mask
            self._pending_plane = "axial"
            self._pending_extra = prov
            self._show_mask(z, mask, "axial")
            self.ui.status.setText(f"Text preview of '{prompt}' on slice {z}: {int(mask.sum())} px{rw}. "
                                   "Accept commits it.")
            self.preview_updated.emit(z)
            return
        session = self.ctrl.session
        session.begin_undo_group(f"text '{prompt}'")
        try:
            ok = self._session_call("commit_slices", oid, found, "needs review", prov)
        finally:
            session.end_undo_group()
        if not ok:
            return
        info = session.last_commit_info or {}
        skipped = info.get("skipped") or []
        kept = f"; {len(skipped)} slice(s) you prompted, edited or reviewed were kept as they were" if skipped else ""
        self._notify("info", f"'{prompt}' proposed on {len(found) - len(skipped)} slice(s) as 'needs review'"
                             f"{kept}{rw}. Undo takes it back in one step.")


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


