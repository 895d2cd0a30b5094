"""Train a segmentation adapter from the objects a clinician accepted, and compare it with the base model
on accepted slices it never saw (Qt-free; the Learn dock's "Segmentation adapter" tab is a view over it).

Data. Each object of the annotation session with accepted (or corrected: "edited") slices gives one
training sample per such slice with a non-empty mask: the slice, the object's mask on it, and

- for the CLIPSeg methods (``vlsm-*``, ``clipseg-decoder``): the object's *name* as the text prompt
  ("liver", "left kidney"): objects without a name cannot teach a text prompt and are refused;
- for the SAM2 methods (``sam2-adapter``, ``sam2-adapter-decoder``, ``sam2-decoder``): a training pair
  (:class:`~napari_medprompt.seg_adapters.pairs.Sam2PairData`) with the prompt the clinician recorded
  on that slice; training simulates box + click prompts from the mask.

Slices are seen through one intensity window (``window``; default the volume's 0.5-99.5
percentiles, recorded with the version): SAM2 pairs carry it per slice; CLIPSeg models get it as their
preprocessing (``intensity="window"``), saved with the version, so a text segmentation with the
version sees raw slices exactly as training did.

Held-out slices. Before training, some accepted slices are set aside and never trained on:

- several images (several sessions): whole images are held out (about ``holdout`` of them);
- one image: per object, a contiguous block of about ``holdout`` of its accepted slices (at least one)
  at the end of its slice range is held out. No object trains on any held-out slice of any object,
  nor on the ``gap`` slices next to one (neighbouring CT/MR slices are near-copies of each other, and
  adapters of the image encoder would otherwise learn the held-out pixels through another object).
  When the gap would leave an object nothing to train on, only the held-out slices themselves are left
  out for it and :attr:`SegAdaptRun.split_note` says so; when even that leaves nothing, the run is refused.

The slices, masks and prompts of the training and held-out samples are copied when the run is
constructed (on the caller's thread): later edits of the session (a slice erased or rejected, an object
deleted) do not change what the run trains on or measures; :meth:`SegAdaptRun.events` never reads the
session.

The held-out slices are not used for model selection either: the run trains a fixed number of epochs
(no validation split, no early stopping), then measures Dice (per slice at the model's input size,
threshold 0.5, mean over the object's held-out slices) of the base model and of the adapted model.

Versions go into the workspace's segmentation model store (:attr:`LearnWorkspace.seg_store`,
``<learn folder>/seg_models/``), never activated by training: :func:`activate_seg` does that when the
user chooses. The record carries ``seg`` (family, base, objects, prompts, held-out Dice, split, window).

Bad input raises :class:`~napari_medprompt.learn.errors.LearnError` in the constructor, before any work
and without writing anything.

The methods and their families are in :mod:`~napari_medprompt.learn.seg_methods`, the accepted objects and
the held-out split in :mod:`~napari_medprompt.learn.seg_samples`, the store's versions and activation in
:mod:`~napari_medprompt.learn.seg_versions`; their names are importable from here as well.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from napari_medprompt.learn.errors import LearnError
from napari_medprompt.learn.loop_run import LearnEvent, LoopRun, done_event, end_message
from napari_medprompt.learn.seg_methods import (
    CLIPSEG_FAMILY,
    DEFAULT_SAM2_BASE,
    SAM2_FAMILY,
    SegMethodRow,
    cached_base_weights,
    family_of,
    seg_method_rows,
)
from napari_medprompt.learn.seg_samples import (
    AcceptedObject,
    Sample,
    accepted_objects,
    hold_out,
    loop_data,
    slices_by_object,
    snapshot,
)
from napari_medprompt.learn.seg_versions import activate_seg, deactivate_seg, seg_versions

__all__ = [
    "CLIPSEG_FAMILY", "CLIP_CONTEXT", "DEFAULT_SAM2_BASE", "RANDOM_SEG_WARNING", "SAM2_FAMILY", "SEG_STORE",
    "AcceptedObject", "ObjectDice", "SegAdaptRun", "SegMethodRow", "SegRunResult", "accepted_objects",
    "activate_seg", "cached_base_weights", "deactivate_seg", "family_of", "seg_method_rows", "seg_versions",
]

SEG_STORE = "seg_models"
RANDOM_SEG_WARNING = "the base model runs on RANDOM weights (no pretrained weights here): Dice figures are not meaningful"
CLIP_CONTEXT = 77  # CLIP's text context in tokens, start and end tokens included
_TOKENIZER = []


def _n_tokens(text: str) -> int:
    """Tokens of ``text`` as CLIPSeg's text encoder sees it (CLIP BPE + start and end)."""
    if not _TOKENIZER:
        from open_clip.tokenizer import SimpleTokenizer

        _TOKENIZER.append(SimpleTokenizer())
    return len(_TOKENIZER[0].encode(text)) + 2


@dataclass
class ObjectDice:
    name: str
    n_heldout: int
    base: float
    adapted: float | None = None


@dataclass
class SegRunResult:
    version: str | None
    status: str
    comparison: list[ObjectDice] = field(default_factory=list)
    random_weights: bool = False
    cancelled: bool = False
    message: str = ""
    metrics: dict = field(default_factory=dict)



def _default_window(volume: np.ndarray) -> tuple[float, float]:
    v = np.asarray(volume, dtype=np.float32)
    step = max(1, v.size // 2_000_000)
    lo, hi = np.percentile(v.reshape(-1)[::step], [0.5, 99.5])
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


class SegAdaptRun(LoopRun):
    """Train ``method`` from the accepted objects of ``session`` over ``volume`` (Z, Y, X) or (Y, X).

    ``sources``: instead of one session, a list of ``(session, volume)`` (several images: whole images
    are held out). ``object_ids``: which objects of the (first) session to learn from (default: all that
    can); objects of other sessions are matched by name. ``store``: a ModelStore or its folder.
    ``base``: a loaded base model to reuse (a :class:`~napari_medprompt.seg_adapters.sam2_model.Sam2Base`
    or a CLIPSeg base; ``clipseg-decoder`` trains the base's decoder in place, so it always builds its
    own). ``backbone``: the base model name (SAM2 / MedSAM2 name for the SAM2 methods). ``pretrained``:
    "random" (the default here: no weights can be downloaded), "default" or a checkpoint file.
    """

    def __init__(self, session=None, volume=None, store=None, *, method: str = "sam2-decoder", sources=None,
                 object_ids=None, pretrained: str | None = "random", backbone: str | None = None, base=None,
                 options: dict | None = None, epochs: int = 3, lr: float | None = None, batch_size: int = 2,
                 holdout: float = 0.25, gap: int = 1, seed: int = 0, device: str = "cpu",
                 window: tuple[float, float] | None = None) -> None:
        from napari_medprompt.seg_adapters.registry import available_seg_methods, validate_seg_options
        from napari_medprompt.train.store import ModelStore, StoreError

        if method not in available_seg_methods():
            raise LearnError(f"unknown segmentation method {method!r}; choose one of "
                             f"{', '.join(available_seg_methods())}")
        self.method, self.family = method, family_of(method)
        self.info = available_seg_methods()[method]
        try:
            self.options = validate_seg_options(method, options)
        except ValueError as err:
            raise LearnError(str(err)) from None
        self.options = {k: v for k, v in self.options.items() if not (k == "image_size" and v is None)}
        if sources is None:
            if session is None or volume is None:
                raise LearnError("no image: open an image and annotate (accept) objects on it first")
            sources = [(session, volume)]
        self.sources = []
        for s, v in sources:
            v = np.asarray(v)
            v = v[None] if v.ndim == 2 else v
            if v.ndim != 3 or tuple(v.shape) != tuple(s.shape):
                raise LearnError(f"the image of {s.image_name!r} has shape {v.shape}, its annotations {s.shape}; "
                                 "reopen the image with its own session")
            self.sources.append((s, v))
        if backbone is None:
            backbone = DEFAULT_SAM2_BASE if self.family == SAM2_FAMILY else None
        if base is not None:
            self._check_base(base, backbone)
        self.base, self.backbone_name, self.pretrained = base, backbone, pretrained
        self.epochs, self.lr, self.batch_size = int(epochs), lr, int(batch_size)
        if self.epochs < 1:
            raise LearnError("train at least one epoch")
        if not 0 < float(holdout) < 1:
            raise LearnError(f"the held-out share must be between 0 and 1, got {holdout}")
        self.holdout, self.gap, self.seed, self.device = float(holdout), max(0, int(gap)), int(seed), device
        self.window = tuple(window) if window is not None else _default_window(self.sources[0][1])
        if not self.window[1] > self.window[0]:
            raise LearnError(f"intensity window {self.window} is empty (high must exceed low)")
        self.objects = self._choose_objects(object_ids)
        self.train_samples, self.heldout_samples, self.split_note = self._split()
        snapshot(self.train_samples + self.heldout_samples, self.sources)
        self.image_names = [s.image_name for s, _v in self.sources]
        self.store = store if (store is None or isinstance(store, ModelStore)) else ModelStore(store)
        try:
            if self.store is not None:
                self.store.list()  # a corrupt store is reported now, before any training
        except StoreError as err:
            raise LearnError(str(err)) from None
        self._stop = threading.Event()
        self.result: SegRunResult | None = None
        self.model = None
        self.random_weights = False
        self.comparison: list[ObjectDice] = []

    # ------------------------------------------------------------------------------ checks
    def _check_base(self, base, backbone) -> None:
        want = SAM2_FAMILY if hasattr(base, "net") and hasattr(base, "describe") else CLIPSEG_FAMILY
        if want != self.family:
            raise LearnError(f"{self.method} adapts a {'SAM2' if self.family == SAM2_FAMILY else 'CLIPSeg'} model, "
                             f"but the given base model is {getattr(base, 'name', type(base).__name__)!r}")
        if self.family == SAM2_FAMILY and backbone and base.name != backbone:
            raise LearnError(f"the given base model is {base.name!r}, the run asks for {backbone!r}")

    def _choose_objects(self, object_ids) -> list[str]:
        first = accepted_objects(self.sources[0][0])
        if not first:
            raise LearnError(f"{self.sources[0][0].image_name!r} has no objects: segment and accept objects first")
        if object_ids is not None:
            wanted = {int(i) for i in object_ids}
            unknown = wanted - {o.object_id for o in first}
            if unknown:
                raise LearnError(f"no object with id {', '.join(map(str, sorted(unknown)))} in this image")
            chosen = [o for o in first if o.object_id in wanted]
        else:
            chosen = [o for o in first if o.problem is None] or first
        if not chosen:
            raise LearnError("choose at least one accepted object to learn from")
        several = len(self.sources) > 1
        problems = []
        for o in chosen:
            if o.problem and not (several and o.slices):
                problems.append(f"{o.label}: {o.problem}")
            elif self.family == CLIPSEG_FAMILY and not o.name:
                problems.append(f"{o.label} has no name: the CLIPSeg methods learn the object's name as the text "
                                "prompt; name it (e.g. 'liver') in the Segment panel")
        if problems:
            raise LearnError("cannot train from " + "; ".join(problems))
        if self.family == CLIPSEG_FAMILY:
            for o in chosen:
                n = _n_tokens(o.name)
                if n > CLIP_CONTEXT:
                    raise LearnError(f"the name of {o.label!r} is {n} CLIP tokens long; CLIP's text context holds "
                                     f"{CLIP_CONTEXT}: name the structure in a few words (e.g. 'liver')")
        names = [o.label for o in chosen]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise LearnError(f"several chosen objects are named {', '.join(dup)}: give each structure its own name")
        self._chosen = chosen
        return names

    def _samples_of(self, src: int) -> list[Sample]:
        session = self.sources[src][0]
        objs = accepted_objects(session)
        if src == 0:
            want = {o.object_id: o.label for o in self._chosen}
            pick = [(o, want[o.object_id]) for o in objs if o.object_id in want]
        else:
            pick = [(o, o.label) for o in objs if o.label in self.objects]
        return [Sample(src, name, o.object_id, z) for o, name in pick for z in o.slices]

    def _split(self):
        samples = [s for i in range(len(self.sources)) for s in self._samples_of(i)]
        return hold_out(self.sources, samples, self.objects, self.holdout, self.gap, self.seed)

    # ------------------------------------------------------------------------------ data
    @property
    def train_slices(self) -> dict[str, list[int]]:
        return slices_by_object(self.train_samples)

    @property
    def heldout_slices(self) -> dict[str, list[int]]:
        return slices_by_object(self.heldout_samples)

    # ------------------------------------------------------------------------------ run
    def config(self):
        from napari_medprompt.train.loop import TrainConfig

        kw = {"lr": self.lr} if self.lr is not None else {}
        return TrainConfig(method=self.method, backbone=self.backbone_name or "", pretrained=self.pretrained,
                           method_options=dict(self.options), seed=self.seed, epochs=self.epochs,
                           batch_size=self.batch_size, val_fraction=0.0, patience=0, device=str(self.device),
                           stop_event=self._stop, **kw)

    def _build(self):
        """(the adapter model, the base model it is compared against). SAM2: one model (its adapters
        start as the identity, its decoder as the base's, so before training it *is* the base); CLIPSeg:
        the stock decoder without adapters on the same frozen CLIPSeg, measured before the adapter model
        is built (a callable here: dense adapters hook into the shared encoders)."""
        import importlib

        import torch

        from napari_medprompt.seg_adapters.registry import build_seg_model

        config = self.config()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if self.family == SAM2_FAMILY:
                if self.base is None:
                    try:
                        model = build_seg_model(config, list(self.objects), self.device)
                    except (ValueError, OSError) as err:
                        raise LearnError(f"the base model for {self.method} cannot be built: {err}") from err
                else:
                    from napari_medprompt.seg_adapters.sam2_model import Sam2AdapterModel

                    opts = {k: v for k, v in self.options.items() if k != "image_size"}
                    model = Sam2AdapterModel(self.base, self.method, **opts).to(self.device)
                return model, model
            from napari_medprompt.seg_adapters.clipseg import check_base_name, load_clipseg
            from napari_medprompt.seg_adapters.vlsm import DecoderFinetune

            base = self.base
            if base is None or self.method == "clipseg-decoder":  # the decoder trains in place: its own copy
                try:
                    check_base_name(config.backbone)
                    base = load_clipseg(self.pretrained, device=self.device)
                except (ValueError, OSError) as err:
                    raise LearnError(f"the base model for {self.method} cannot be built: {err}") from err
            flags = [(p, p.requires_grad) for p in base.parameters()]
            stock = DecoderFinetune(base, [], method="clipseg-decoder",
                                    image_size=self.options.get("image_size", 352))
            for p, f in flags:
                p.requires_grad_(f)
            stock.preprocess = self._windowed(stock.preprocess)
        module, _, attr = self.info.target.partition(":")
        make = getattr(importlib.import_module(module), attr)
        seed = self.seed

        def build():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = make(base, list(self.objects), method=self.method, **self.options).to(self.device)
            model.preprocess = self._windowed(model.preprocess)
            return model

        return build, stock

    def _windowed(self, preprocess):
        """The CLIPSeg preprocessing with this run's intensity window: saved with the version, so text
        segmentation with it sees raw slices through the same window as training."""
        import dataclasses

        lo, hi = self.window
        return dataclasses.replace(preprocess, intensity="window", window=((lo + hi) / 2, hi - lo))

    def evaluate(self, model, samples=None) -> dict[str, tuple[int, float]]:
        """``{object name: (n held-out slices, mean Dice)}`` of ``model`` on ``samples`` (default: the
        held-out slices), each slice at the model's input size, threshold 0.5."""
        import torch

        from napari_medprompt.train.preprocess import preprocess_of
        from napari_medprompt.train.task import SegmentationTask

        samples = self.heldout_samples if samples is None else samples
        out = {}
        was = model.training
        model.train(False)
        try:
            for name in self.objects:
                mine = [s for s in samples if s.object_name == name]
                if not mine:
                    continue
                data = loop_data(mine, self.family, self.window)
                t = SegmentationTask.tensors(data, preprocess_of(model), True)
                with torch.no_grad():
                    m = SegmentationTask().evaluate(model, t, None, max(1, self.batch_size), self.device,
                                                    contextlib.nullcontext)
                out[name] = (len(mine), float(m["dice"]))
        finally:
            model.train(was)
        return out

    def events(self):
        """Train; yields :class:`~napari_medprompt.learn.run.LearnEvent` s: start, features, step, epoch,
        (stopped), version, compare, done. :attr:`result` is set at the end."""
        if self.store is None:
            raise LearnError("no model store to write the adapter to")
        from napari_medprompt.train.loop import resolve_device

        self.device = str(resolve_device(self.device))  # "auto": CUDA, then MPS, then CPU (here, in the worker)
        t0 = time.perf_counter()
        model, base_model = self._build()
        rw = bool(getattr(base_model.backbone, "random_weights", False))
        self.random_weights = rw
        train = loop_data(self.train_samples, self.family, self.window)
        try:
            train.validate()
        except ValueError as err:
            raise LearnError(str(err)) from None
        base_scores = self.evaluate(base_model)
        if model is not base_model and not hasattr(model, "seg_logits"):
            model = model()  # CLIPSeg adapters: built after the stock model was measured
        config = self.config()
        share = 0.9

        def annotate(ev, out):
            if ev.kind == "start":
                out.message = "; ".join(m for m in (RANDOM_SEG_WARNING if rw else "", self.split_note) if m)
            elif ev.kind == "features":
                out.progress = 0.1 * share * ev.step / max(1, ev.steps)
            elif ev.kind in ("step", "epoch"):
                if ev.steps:
                    out.progress = share * (0.1 + 0.9 * ev.step / ev.steps)
                elif ev.epochs:
                    out.progress = share * ev.epoch / ev.epochs

        final = yield from self._follow_loop(config, train, model, rw, annotate, skip=("checkpoint", "version"))
        model = self.model
        status = final.get("status", "failed")
        vid = None
        comparison = []
        if status != "stopped-before-first-epoch":
            adapted = self.evaluate(model)
            for name in self.objects:
                if name in base_scores or name in adapted:
                    n, b = base_scores.get(name, (adapted.get(name, (0, None))[0], float("nan")))
                    comparison.append(ObjectDice(name, n, b, adapted.get(name, (n, None))[1]))
            self.comparison = comparison
            yield LearnEvent("compare", progress=0.95, random_weights=rw,
                             metrics={"comparison": [c.__dict__ for c in comparison]},
                             message="held-out Dice: " + ", ".join(
                                 f"{c.name} {c.base:.3f} → {c.adapted:.3f}" for c in comparison))
            seg = {"family": self.family, "base": _base_name(model), "random_weights": rw,
                   "objects": list(self.objects), "prompts": list(self.objects) if self.family == CLIPSEG_FAMILY else [],
                   "heldout": {c.name: {"base": c.base, "adapted": c.adapted, "n": c.n_heldout} for c in comparison},
                   "split": self.split_note, "window": list(self.window), "train_slices": self.train_slices,
                   "heldout_slices": self.heldout_slices, "images": list(self.image_names),
                   "cancelled": self.cancelled, "seconds": round(time.perf_counter() - t0, 3)}
            vid = self._save_version(model, config, final, status, parent=None, activate=False, notes={"seg": seg})
            yield LearnEvent("version", progress=0.99, random_weights=rw, version=vid,
                             message=f"saved as version {vid} (not active: activate it to use it)"
                             + (" — RANDOM weights" if rw else ""))
        msg = end_message(status, final, vid)
        if rw:
            msg += " — " + RANDOM_SEG_WARNING
        self.result = SegRunResult(vid, status, comparison, rw, self.cancelled, msg, final)
        yield done_event(final, msg, rw, vid)



def _base_name(model) -> str:
    return str(getattr(model.backbone, "name", "") or "")

