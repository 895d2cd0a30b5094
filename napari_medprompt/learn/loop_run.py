"""What the learn package's training runs share (:class:`~napari_medprompt.learn.run.LearnRun` and
:class:`~napari_medprompt.learn.seg_adapt.SegAdaptRun`): the :class:`LearnEvent` s they make of the
training loop's events, cancelling from any thread, running to the end in the caller's thread, following
the loop, and how a run ends (a new version of the model store, the closing message, the ``done`` event).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class LearnEvent:
    """One progress report of a run.

    ``kind``: start, features, step, epoch, stopped, version, done (a segmentation-adapter run also
    reports compare: the held-out Dice of the base and the adapted model). The first event comes after
    the backbone is built (looking for weights that cannot be downloaded can take a minute).
    ``progress`` in 0..1 over the whole run; ``val_metric`` is the validation value of the monitored
    metric (balanced accuracy by default) when there is a validation split."""

    kind: str
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    loss: float | None = None
    val_metric: float | None = None
    metrics: dict | None = None
    eta_s: float | None = None
    progress: float = 0.0
    message: str = ""
    random_weights: bool = False
    version: str | None = None

    @classmethod
    def of(cls, ev, random_weights: bool) -> LearnEvent:
        """The training loop's event ``ev`` (a :class:`~napari_medprompt.train.loop.TrainEvent`) as a
        LearnEvent, with progress 0 and no validation value (the run sets them)."""
        return cls(ev.kind, ev.epoch, ev.epochs, ev.step, ev.steps, ev.loss, None, ev.metrics, ev.eta_s, 0.0,
                   ev.message, random_weights)


class LoopRun:
    """A run over the training loop. A subclass sets ``_stop`` (the loop's ``stop_event``) and ``store``
    in its constructor, and :attr:`result` at the end of :meth:`events`."""

    _stop: threading.Event
    result = None
    model = None  # the trained model, once the loop has ended

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def cancel(self) -> None:
        """Stop before the next training step (from any thread): the best completed epoch is kept as a
        version; a run with no completed epoch writes nothing."""
        self._stop.set()

    def events(self):
        """Train; yields :class:`LearnEvent` s and ends with ``done`` (see :attr:`result`)."""
        raise NotImplementedError

    def run(self, callback=None):
        """Run to the end in this thread (``callback(event)`` for each event); returns the result."""
        for ev in self.events():
            if callback is not None:
                callback(ev)
        return self.result

    def _follow_loop(self, config, data, model, random_weights: bool, annotate, skip=()):
        """Run the training loop (:func:`~napari_medprompt.train.loop.train_iter`) and yield each of its
        events as a :class:`LearnEvent`, once ``annotate(loop event, learn event)`` has set its progress
        and message, except ``done`` and the kinds in ``skip``. Returns (to ``yield from``) the final
        metrics; the trained model is then :attr:`model`."""
        from napari_medprompt.train.loop import train_iter

        done = None
        for ev in train_iter(config, data, model):
            if ev.kind == "done":
                done = ev
                continue
            if ev.kind in skip:
                continue
            out = LearnEvent.of(ev, random_weights)
            annotate(ev, out)
            yield out
        self.model = done.model
        return dict(done.metrics or {})

    def _save_version(self, model, config, final: dict, status: str, *, parent, activate: bool,
                      notes: dict) -> str:
        """Add the trained ``model`` to the store as a new version (its config, training-set fingerprint,
        final metrics, preprocessing and ``status``); returns the version id, also set as
        ``model.store_version``."""
        saved = {k: v for k, v in final.items() if k not in ("written", "version")}
        vid = self.store.add(model, config=config.to_dict(), data_fingerprint=final.get("train_set_sha256"),
                             metrics=saved, preprocess=model.preprocess, parent=parent, activate=activate,
                             status=status, notes=notes)
        model.store_version = vid
        return vid


def end_message(status: str, final: dict, vid: str | None) -> str:
    """How a run ended, in words: cancelled before the first epoch (nothing saved), cancelled (the epoch
    kept), or trained (the version and its status)."""
    if status == "stopped-before-first-epoch":
        return "cancelled before the first epoch completed: nothing was saved"
    if status == "stopped":
        return f"cancelled: kept epoch {final.get('best_epoch')} as version {vid}"
    return f"trained version {vid} ({status})"


def done_event(final: dict, message: str, random_weights: bool, vid: str | None) -> LearnEvent:
    """The last event of a run: the kept epoch, the planned epochs and the final metrics."""
    return LearnEvent("done", epoch=final.get("best_epoch", 0), epochs=final.get("epochs_planned", 0),
                      metrics=final, progress=1.0, message=message, random_weights=random_weights, version=vid)
