"""Per-slice image embeddings: in memory under a byte budget (LRU), optionally on disk.

An entry is the image encoder's output for one slice, the three feature levels SAM2 keeps
(``fpn0`` (1, 32, 256, 256), ``fpn1`` (1, 64, 128, 128), ``fpn2`` (1, 256, 64, 64) for a 1024 input),
keyed by a *signature* (the image content, the model and its weights, the model window) and the slice
index. The same entry serves a click (image predictor) and memory-mode propagation (video predictor).

On disk (optional): one folder per image key, with ``signature.json`` and one safetensors file per
slice (``slice_00012.safetensors``), stored as float16 by default (half the size; features come
back as float32). Every put may carry the signature id read together with the image it was computed
from (``put(z, feats, sig_id=...)``): a result of a job that started before another image was bound
is dropped, so an embedding can never be stored for the wrong image. Opening a folder whose signature differs (another image under the same key, other
model or weights, other window) discards its slice files: they can never be served for the wrong
image. Writes are atomic (temp file + rename).

Prefetch order for the GUI: :func:`prefetch_order` (the current slice, then neighbours outward).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SIGNATURE_FILE = "signature.json"
_SLICE_RE = re.compile(r"^slice_\d+\.safetensors$")


def prefetch_order(current: int, n_slices: int, radius: int | None = None) -> list[int]:
    """``current``, then ``current+1, current-1, current+2, ...`` within ``[0, n_slices)``."""
    if not 0 <= current < n_slices:
        raise ValueError(f"slice {current} is outside 0..{n_slices - 1}")
    radius = n_slices if radius is None else int(radius)
    out = [current]
    for d in range(1, radius + 1):
        for z in (current + d, current - d):
            if 0 <= z < n_slices:
                out.append(z)
        if current + d >= n_slices and current - d < 0:
            break
    return out


def image_digest(image: np.ndarray) -> str:
    """Content hash of an image (shape, dtype and every voxel)."""
    arr = np.ascontiguousarray(image)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{arr.shape}|{arr.dtype.str}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def file_fingerprint(path: str | os.PathLike, head: int = 4 << 20) -> str:
    """Cheap identity of a weights file: size + hash of its first and last ``head`` bytes."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.blake2b(digest_size=12)
    with open(p, "rb") as f:
        h.update(f.read(head))
        if size > 2 * head:
            f.seek(size - head)
            h.update(f.read(head))
    return f"{size}:{h.hexdigest()}"


def _safe_name(key: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(key).name)[:40] or "image"
    return f"{stem}-{hashlib.blake2b(key.encode(), digest_size=6).hexdigest()}"


def _nbytes(feats: Mapping) -> int:
    return int(sum(t.numel() * t.element_size() for t in feats.values()))


class EmbeddingCache:
    """LRU of per-slice features in memory (``max_bytes``), backed by an optional disk folder.

    Use: ``open(signature, key, disk_root)`` when an image is bound, then ``get(z)`` / ``put(z, feats)``.
    ``feats`` is a dict of tensors; ``prepare`` (optional) turns features read from disk into the form
    the caller keeps in memory. Thread-safe (prefetch runs beside clicks). ``hits``, ``misses``,
    ``disk_hits`` and ``disk_writes`` count what happened (benchmarks and tests read them).
    """

    def __init__(self, max_bytes: int = 1 << 30, disk_dtype: str = "float16", prepare=None) -> None:
        self.max_bytes = int(max_bytes)
        self.prepare = prepare  # applied to features read from disk (dtype / memory layout)
        self.disk_dtype = disk_dtype
        self._mem: OrderedDict[tuple[str, int], dict] = OrderedDict()
        self._bytes = 0
        self._lock = threading.RLock()
        self.signature: dict = {}
        self.sig_id = ""
        self.disk_dir: Path | None = None
        self.hits = self.misses = self.disk_hits = self.disk_writes = 0
        self.stale_dropped = 0  # puts computed for an image that was no longer bound
        self.rejected_disk_cache = False  # the last open() found a folder from another image/model

    # ------------------------------------------------------------------ binding
    def open(self, signature: Mapping, key: str, disk_root: str | os.PathLike | None = None) -> None:
        """Serve entries for ``signature`` from now on; use ``disk_root/<key>`` when given."""
        sig = {"format": FORMAT_VERSION, **dict(signature)}
        sig_id = hashlib.blake2b(json.dumps(sig, sort_keys=True).encode(), digest_size=12).hexdigest()
        with self._lock:
            self.signature, self.sig_id = sig, sig_id
            self.disk_dir = None
            self.rejected_disk_cache = False
            if disk_root is None:
                return
            folder = Path(disk_root) / _safe_name(key)
            folder.mkdir(parents=True, exist_ok=True)
            sig_path = folder / SIGNATURE_FILE
            old = None
            if sig_path.exists():
                try:
                    old = json.loads(sig_path.read_text())
                except (OSError, ValueError):
                    old = "unreadable"
            if old != sig:
                stale = [p for p in folder.iterdir() if _SLICE_RE.match(p.name)]
                if old is not None:
                    self.rejected_disk_cache = True
                    log.info(
                        "embedding cache %s belongs to another image/model/window; discarding %d slices",
                        folder, len(stale),
                    )
                for p in stale:
                    p.unlink(missing_ok=True)
                _atomic_write(sig_path, json.dumps(sig, indent=1, sort_keys=True).encode())
            self.disk_dir = folder

    # ------------------------------------------------------------------ access
    def _disk_path(self, z: int) -> Path | None:
        return None if self.disk_dir is None else self.disk_dir / f"slice_{int(z):05d}.safetensors"

    def contains(self, z: int) -> bool:
        with self._lock:
            if (self.sig_id, int(z)) in self._mem:
                return True
        p = self._disk_path(z)
        return p is not None and p.exists()

    def get(self, z: int, device=None, dtype=None, sig_id: str | None = None) -> dict | None:
        """Features of slice ``z`` (memory first, then disk, as ``dtype`` on ``device``), or None.

        ``sig_id``: the signature the caller's image was bound under (read with the image); a
        caller whose image is no longer the bound one gets nothing from the disk folder."""
        if sig_id is not None and sig_id != self.sig_id:
            with self._lock:
                feats = self._mem.get((sig_id, int(z)))
                self.misses += feats is None
                return feats
        key = (self.sig_id, int(z))
        with self._lock:
            feats = self._mem.get(key)
            if feats is not None:
                self._mem.move_to_end(key)
                self.hits += 1
                return feats
        p = self._disk_path(z)
        if p is not None and p.exists():
            try:
                feats = _load(p, device, dtype)
                if self.prepare is not None:
                    feats = self.prepare(feats)
            except Exception as err:  # a torn or foreign file: recompute rather than fail
                log.warning("ignoring unreadable embedding file %s: %s", p, err)
                p.unlink(missing_ok=True)
            else:
                with self._lock:
                    self.disk_hits += 1
                self._insert(key, feats)
                return feats
        with self._lock:
            self.misses += 1
        return None

    def put(self, z: int, feats: Mapping, sig_id: str | None = None) -> None:
        """Store the features of slice ``z``. ``sig_id``: the signature current when the caller read
        the image they were computed from; if another image (or model, window) has been bound since,
        they are dropped (``stale_dropped`` counts them), never stored under the new signature."""
        feats = dict(feats)
        with self._lock:
            if sig_id is not None and sig_id != self.sig_id:
                self.stale_dropped += 1
                return
            key = (self.sig_id, int(z))
            p = self._disk_path(z)
            self._insert(key, feats)
        if p is not None:
            _save(p, feats, self.disk_dtype)
            with self._lock:
                self.disk_writes += 1

    def _insert(self, key, feats: dict) -> None:
        n = _nbytes(feats)
        with self._lock:
            old = self._mem.pop(key, None)
            if old is not None:
                self._bytes -= _nbytes(old)
            if n > self.max_bytes:
                return  # budget too small for even one slice: disk only
            self._mem[key] = feats
            self._bytes += n
            while self._bytes > self.max_bytes and self._mem:
                _, ev = self._mem.popitem(last=False)
                self._bytes -= _nbytes(ev)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._mem)

    def clear_memory(self) -> None:
        with self._lock:
            self._mem.clear()
            self._bytes = 0


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save(path: Path, feats: Mapping, dtype: str) -> None:
    import torch
    from safetensors.torch import save

    td = getattr(torch, dtype)
    tensors = {k: v.detach().to("cpu", td).contiguous() for k, v in feats.items()}
    _atomic_write(path, save(tensors))


def _load(path: Path, device=None, dtype=None) -> dict:
    import torch
    from safetensors.torch import load_file

    out = load_file(str(path), device="cpu")
    return {k: v.to(device or "cpu", dtype or torch.float32) for k, v in out.items()}
