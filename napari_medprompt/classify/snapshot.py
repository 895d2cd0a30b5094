"""Private copies of a model for prediction and explanation while it may be training in another thread.

:func:`snapshot` copies the module tree of a method (new module objects, so hooks, attention switches
and the eval mode set on the copy never reach the original) and clones its trainable tensors; the
frozen backbone's weights and buffers are shared, not copied (no memory cost). A backbone that
trains (full fine-tuning) is cloned like any trainable part.

:func:`state_lock` is a per-model lock: a training loop that holds it while it updates the weights
(``optimizer.step()``) guarantees that a snapshot sees the weights of one step, never a mix of two.
Without it a snapshot taken during a step can mix them; the original is never written either way.
"""

from __future__ import annotations

import copy
import threading
import weakref

import torch
from torch import nn

_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()
_PLAIN = (nn.Module, torch.Tensor, dict, list, tuple, set, frozenset, str, bytes, int, float, bool, type(None))


def state_lock(model: nn.Module) -> threading.RLock:
    """The lock guarding ``model``'s weights (created on first use; one per model object)."""
    with _locks_guard:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.RLock()
        return lock


def snapshot(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that shares its frozen tensors and clones the rest (see module docstring).

    The copy's parameters do not require gradients (explaining needs gradients to activations only).
    """
    memo: dict[int, object] = {}
    for mod in model.modules():
        for t in (*mod._parameters.values(), *mod._buffers.values()):
            if t is not None and not t.requires_grad:
                memo[id(t)] = t  # frozen: shared
        for v in vars(mod).values():
            if not isinstance(v, _PLAIN):
                memo[id(v)] = v  # tokenizers, configs, generators...: shared, never copied
    with state_lock(model):
        twin = copy.deepcopy(model, memo)
    for p in twin.parameters():
        if p.requires_grad:  # only the clones: the shared tensors never require grad
            p.requires_grad_(False)
    return twin
