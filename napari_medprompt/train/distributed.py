"""Running under ``torchrun``: process group from the environment, sharding, gathering, reduction.

``torchrun --nproc_per_node N [--nnodes M --rdzv-endpoint host:port ...] $(which medprompt-train) ...``
starts N processes per node with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` set. :func:`init_from_env` joins them into one process group: **NCCL** when the run
uses CUDA (one GPU per process, ``cuda:LOCAL_RANK``), **Gloo** on CPUs. Without those variables (a
plain ``medprompt-train``) everything here is a no-op for one process: ``rank 0`` of ``world 1``.

What the commands do with it:

- data is sharded with :class:`torch.utils.data.DistributedSampler` (``shuffle=False``: rank ``r``
  takes images ``r, r + N, ...``, padded to equal length) and results are put back in the original
  order by :func:`gather_ordered`, so the gathered tensor is the one a single process computes;
- methods that train on cached features compute them sharded and gather them once (every rank then
  holds all features; nothing is recomputed per epoch);
- gradients go through :class:`~torch.nn.parallel.DistributedDataParallel` (:func:`wrap_ddp`); each
  step's global batch (drawn from the same seeded generator on every rank) is split across ranks
  (:func:`split_batch`) with the loss weighted by the rank's share, so DDP's gradient mean is the
  single-process gradient of the whole batch (two CPU processes give the one-process weights
  within floating-point tolerance); random draws inside a step (a segmentation sample's prompt
  phrasing) come from :func:`step_generator`, seeded alike on every rank;
- a resume state is read by rank 0 and handed to every rank (:func:`from_main`), so nodes without a
  shared file system resume together;
- metrics are computed from gathered predictions (identical on every rank), counts are summed with
  :func:`all_reduce_sum`; checkpoints, store versions, tables, logs and progress bars come from rank 0
  only (:func:`is_main`);
- a rank that dies: ``torchrun`` ends the other ranks (SIGTERM) and reports the failed rank; every
  file the commands write is written atomically by rank 0 (temp file + rename), so an interrupted
  run leaves complete files or none. Collectives time out after ``MEDPROMPT_DIST_TIMEOUT_S``
  (default 600 s) instead of waiting for ever.
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
from dataclasses import dataclass

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "gloo" | "nccl" | None (one process)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        if not self.enabled:
            return "one process"
        return f"{self.world_size} processes ({self.backend}), this is rank {self.rank}"


_INFO = DistInfo()


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher setting its variables)
    with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment (idempotent); one process without it.

    ``device``: the run's device choice ("auto", "cpu", "cuda", ...). NCCL is used when the run goes
    to CUDA GPUs (each process on ``cuda:LOCAL_RANK``), Gloo otherwise."""
    global _INFO
    if not launched_by_torchrun():
        return _INFO
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return _INFO
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE > 1 but {', '.join(missing)} not set: start the command with torchrun")
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    use_cuda = device not in ("cpu", "mps") and torch.cuda.is_available() and (device in ("auto", "cuda")
                                                                              or device.startswith("cuda"))
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"rank {rank}: LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) on "
                               "this node; use --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(local)
    backend = "nccl" if use_cuda else "gloo"
    timeout = datetime.timedelta(seconds=float(os.environ.get("MEDPROMPT_DIST_TIMEOUT_S", "600")))
    kw = {"device_id": torch.device("cuda", local)} if use_cuda else {}
    try:
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timeout, **kw)
    except TypeError:  # older torch without device_id
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timeout)
    _INFO = DistInfo(rank, world, local, backend)
    _install_term_handler()
    return _INFO


def _install_term_handler() -> None:
    """torchrun ends the surviving ranks with SIGTERM when one fails: say so, instead of a bare traceback."""
    def on_term(signum, frame):  # pragma: no cover - runs in a process torchrun is ending
        sys.stderr.write(f"rank {_INFO.rank}: ended by torchrun because another rank failed (see the failed "
                         "rank's error above); files are written whole or not at all, so nothing is half-written\n")
        sys.stderr.flush()
        os._exit(143)

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        pass


def info() -> DistInfo:
    return _INFO


def is_main() -> bool:
    return _INFO.rank == 0


def device_for(device: str = "auto") -> str:
    """The device string of this rank: ``cuda:LOCAL_RANK`` under NCCL, else ``device`` unchanged."""
    if _INFO.backend == "nccl" and device in ("auto", "cuda"):
        return f"cuda:{_INFO.local_rank}"
    return device


def barrier() -> None:
    if _INFO.enabled:
        import torch.distributed as dist

        if _INFO.backend == "nccl":
            dist.barrier(device_ids=[_INFO.local_rank])
        else:
            dist.barrier()


def shutdown() -> None:
    global _INFO
    if _INFO.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _INFO = DistInfo()


def _comm_device():
    import torch

    return torch.device("cuda", _INFO.local_rank) if _INFO.backend == "nccl" else torch.device("cpu")


def shard_indices(n: int) -> list[int]:
    """This rank's indices of ``range(n)`` as :class:`DistributedSampler` (no shuffle) gives them:
    ``rank, rank + N, ...``, padded by repeating the first indices so every rank has
    ``ceil(n / N)``. One process: ``range(n)``."""
    if not _INFO.enabled:
        return list(range(n))
    from torch.utils.data import DistributedSampler

    class _Len:
        def __len__(self):
            return n

    return list(DistributedSampler(_Len(), num_replicas=_INFO.world_size, rank=_INFO.rank, shuffle=False))


def gather_ordered(local, n: int):
    """Put every rank's rows (computed for :func:`shard_indices` of ``n``) back in the order
    ``0..n-1``, on every rank, on ``local``'s device. One process: ``local`` itself."""
    if not _INFO.enabled:
        return local
    import torch
    import torch.distributed as dist

    dev = local.device
    x = local.to(_comm_device()).contiguous()
    parts = [torch.empty_like(x) for _ in range(_INFO.world_size)]
    dist.all_gather(parts, x)
    per = x.shape[0]
    # DistributedSampler: rank r holds padded[r::world]; undo the interleave, drop the padding
    stacked = torch.stack(parts, 1).reshape(per * _INFO.world_size, *x.shape[1:])
    return stacked[:n].to(dev)


def all_reduce_sum(values):
    """Sum numbers (a list / tuple of float or int) over ranks; the same list on every rank."""
    if not _INFO.enabled:
        return list(values)
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu().tolist()]


def reduce_mean(metrics: dict) -> dict:
    """The mean over ranks of each number in ``metrics`` (others kept as this rank has them)."""
    if not _INFO.enabled:
        return dict(metrics)
    keys = [k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    sums = all_reduce_sum([metrics[k] for k in keys])
    out = dict(metrics)
    out.update({k: s / _INFO.world_size for k, s in zip(keys, sums)})
    return out


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not _INFO.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_comm_device() if _INFO.backend == "nccl" else None)
    return box[0]


def from_main(fn, errors: type[BaseException] | tuple[type[BaseException], ...] = ()):
    """``fn()`` computed on rank 0 only, its result on every rank. An exception of the ``errors``
    kinds raised by ``fn`` on rank 0 is raised on every rank (so all ranks stop together, with rank
    0's message); any other exception is raised on rank 0 alone. One process: ``fn()``."""
    if not _INFO.enabled:
        return fn()
    box = None
    if is_main():
        try:
            box = ("ok", fn())
        except errors as err:
            box = ("error", err)
    kind, value = broadcast_object(box)
    if kind == "error":
        raise value
    return value


def split_batch(idx):
    """This rank's part of one global batch ``idx`` and the weight of its loss.

    Rank ``r`` takes ``idx[r::N]``; its mean loss is multiplied by ``N * n_local / n_global`` so that
    DDP's mean of the ranks' gradients is the gradient of the global batch's mean loss. A rank left
    without an image (a batch smaller than the world) takes the first image with weight 0."""
    if not _INFO.enabled:
        return idx, 1.0
    local = idx[_INFO.rank :: _INFO.world_size]
    if len(local) == 0:
        return idx[:1], 0.0
    return local, _INFO.world_size * len(local) / len(idx)


def step_generator(seed: int, step: int):
    """A ``torch.Generator`` seeded from ``seed`` and the global ``step``, the same on every rank."""
    import torch

    return torch.Generator().manual_seed(int(seed) * 1_000_003 + step)


class _Args:
    """Arguments DDP passes through untouched (it would move tensors to the GPU: index tensors stay put)."""

    def __init__(self, args):
        self.args = args


def wrap_ddp(model, loss_fn):
    """``loss_fn(model, *args)`` as the forward of a DDP-wrapped module around ``model`` (its
    trainable parameters: the frozen backbone takes no part). Returns a callable ``(*args) -> loss``;
    one process: ``loss_fn`` on ``model`` without DDP."""
    if not _INFO.enabled:
        return lambda *a: loss_fn(model, *a)
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    class _Loss(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, box):
            return loss_fn(self.inner, *box.args)

    kw = {"device_ids": [_INFO.local_rank]} if _INFO.backend == "nccl" else {}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # broadcast_buffers' successor still syncs at init
        # static graph: the same parameters take part in every step (a trainable parameter a method never
        # uses is handled once, without a graph traversal per step); buffers of the frozen backbone are
        # identical on every rank, so they are not broadcast
        ddp = DDP(_Loss(model), broadcast_buffers=False, static_graph=True, **kw)
    return lambda *a: ddp(_Args(a))


def lost_peer_message(err: BaseException) -> str | None:
    """A clear message when ``err`` is a collective that failed because another rank died or hung
    (Gloo / NCCL errors, timeouts), else None."""
    import torch.distributed as dist

    text = str(err)
    kinds = tuple(t for t in (getattr(dist, "DistError", None),) if t is not None)
    if not _INFO.enabled or not (isinstance(err, kinds) or any(w in text for w in ("gloo", "NCCL", "Connection reset",
                                                                                     "Timed out", "timed out"))):
        return None
    first = text.strip().splitlines()[0][:200] if text.strip() else type(err).__name__
    return (f"rank {_INFO.rank}: lost contact with another process of this torchrun run (another rank failed or "
            f"was lost; torchrun's report below names it) [{first}]. Files are written whole or not at all; "
            "rerun with --resume to continue after the last completed epoch")


def fault_point(step: int) -> None:
    """Failure injection for tests of a killed process or a dying rank: ``MEDPROMPT_FAULT_AT="<rank>:<step>"``
    sends SIGKILL to that rank's own process when it completes that training step."""
    spec = os.environ.get("MEDPROMPT_FAULT_AT")
    if spec:
        r, _, s = spec.partition(":")
        if int(r) == _INFO.rank and int(s) == int(step):
            sys.stderr.write(f"rank {_INFO.rank}: failing on purpose at step {step} (MEDPROMPT_FAULT_AT)\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
