"""``medprompt-embed``: precompute SAM2 image embeddings for a folder of volumes, into the disk cache
the plugin reads.

    medprompt-embed /data/cohort                       # every volume under the folder
    medprompt-embed scan1.nii.gz scan2.nii.gz --model sam2.1-hiera-small --checkpoint sam2.1_hiera_small.pt
    torchrun --nproc_per_node 4 $(which medprompt-embed) /data/cohort --device cuda

**Where and under which key.** Every image is read with the plugin's own reader
(:func:`napari_medprompt.io.napari_hooks.read_layers`: the array napari shows) and bound to
:class:`~napari_medprompt.segment.sam2_backend.Sam2Segmenter` exactly as the Segment dock binds it:
the key is the image's content key (:func:`napari_medprompt.session.content_key` of its voxels, shape
and spacing, the key the session uses) and the cache signature holds the voxel digest, the model,
the weights file's fingerprint, the encoder dtype and the model window (by default the window of the
display preset the reader sets for the modality, which the dock starts with). The embeddings go to
``<cache>/sam2_embeddings`` (``MEDPROMPT_CACHE_DIR`` moves ``<cache>``), one folder per image. Once
that folder exists the plugin's SAM2 backend reads (and extends) it, so opening a precomputed image
and clicking computes no embedding. A slice already there is skipped; another model, weights file,
encoder dtype or window gives another signature, and the folder's old slices are then replaced.

The encoder dtype is part of the signature: SAM2 runs bfloat16 on CUDA and on CPUs with bfloat16
support, float32 elsewhere. Precompute with ``--encoder-dtype`` matching the machine the annotators
use (``float32`` on a GPU is not possible: SAM2 runs bfloat16 there).

**Under torchrun** each rank embeds its own list of files (``files[rank::N]`` of the sorted list,
one GPU per rank with NCCL, CPU processes with Gloo); counts are summed over ranks and rank 0 prints
the summary and shows the progress bar (of its own files). Files are written atomically per slice,
so a killed run leaves whole slices; rerunning skips them.

**Bad input.** A file that cannot be read is skipped and counted; above ``--max-unreadable`` (a
fraction of the files, default 0.1) the run stops with exit status 2 naming the files. Label maps
and colour pictures are skipped (counted). A cache folder without write permission is reported
before any work.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

DEFAULT_MAX_UNREADABLE = 0.1


def default_cache_root(create: bool = False) -> Path:
    """``<cache>/sam2_embeddings``: the folder ``medprompt-embed`` writes and the plugin reads."""
    root = os.environ.get("MEDPROMPT_CACHE_DIR")
    if root:
        base = Path(root).expanduser()
    else:
        from platformdirs import user_cache_dir

        base = Path(user_cache_dir("napari-medprompt"))
    path = base / "sam2_embeddings"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def plugin_cache_dir() -> Path | None:
    """The disk cache the plugin's SAM2 backend uses: the default folder once ``medprompt-embed``
    has created it, else None (memory only: a click never fills the disk unasked)."""
    p = default_cache_root()
    return p if p.is_dir() else None


def find_volumes(paths) -> list[Path]:
    """Image files and DICOM series folders the plugin's reader recognises, under ``paths`` (sorted)."""
    from napari_medprompt.io.read import sniff

    out: list[Path] = []
    for given in paths:
        p = Path(given)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        if p.is_file():
            out.append(p)
            continue
        if sniff(p) == "dicom_folder" and not any(q.is_dir() for q in p.iterdir()):
            out.append(p)  # a folder of DICOM files: one series folder
            continue
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            dicom_here = False
            for name in sorted(files):
                if name.startswith("."):
                    continue
                q = Path(root) / name
                kind = sniff(q)
                if kind == "dicom":
                    dicom_here = True
                elif kind is not None and not name.lower().endswith((".json",)):
                    out.append(q)
            if dicom_here:
                out.append(Path(root))  # a DICOM series is read as its folder
    return sorted(set(out))


def plugin_binding(volume) -> dict:
    """The arguments the Segment dock binds ``volume`` with: image array, modality, spacing, key
    and display preset (see :meth:`Sam2Segmenter.bind`)."""
    import numpy as np

    from napari_medprompt.imaging.window import default_preset
    from napari_medprompt.segment.embedding_cache import image_digest
    from napari_medprompt.session import content_key

    data = np.asarray(volume.data)
    shape = tuple(int(s) for s in volume.spatial_shape)
    spacing = tuple(float(s) for s in volume.spacing)
    if len(shape) == 2:  # a 2D image is a one-slice session
        shape, spacing = (1, *shape), (1.0, *spacing)
    preset = (volume.meta or {}).get("window_preset") or default_preset(volume.modality)
    return {"image": data, "modality": volume.modality, "spacing": volume.spacing,
            "key": content_key(image_digest(data), shape, spacing), "display_preset": preset}


def read_for_plugin(path: Path) -> tuple[list, int]:
    """Image volumes of ``path`` as the napari reader gives them to the dock, and how many layers
    were skipped (label maps, colour pictures)."""
    from napari_medprompt.io.layers import volume_from_layer
    from napari_medprompt.io.napari_hooks import read_layers

    vols, skipped = [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reader notes (uneven slices, ...) are for the viewer
        layers = read_layers(str(path))
    for data, kwargs, kind in layers:
        md = kwargs.get("metadata") or {}
        vol = volume_from_layer(data, md, kwargs.get("scale"))
        if kind != "image" or vol.is_rgb:
            skipped += 1
            continue
        preset = (md.get("medprompt") or {}).get("window_preset")
        if preset:
            vol.meta = {**vol.meta, "window_preset": preset}
        vols.append(vol)
    return vols, skipped


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"cannot write to the embedding cache {folder}: {err.strerror or err}; choose "
                              "another folder with --cache-dir (or MEDPROMPT_CACHE_DIR)") from None


class EmbedError(RuntimeError):
    """The run cannot go on (too many unreadable files, ...); the message says why."""


def embed_files(files, segmenter, *, progress=None, max_unreadable: float = DEFAULT_MAX_UNREADABLE,
                n_total_files: int | None = None, stop=None) -> dict:
    """Embed every slice of every image in ``files`` with ``segmenter`` (bound to its disk cache);
    returns the counts. ``progress(done_files, n_files, counts)`` after each file. Raises
    :class:`EmbedError` once the unreadable files exceed ``max_unreadable`` of ``n_total_files``."""
    counts = {"files": 0, "volumes": 0, "slices": 0, "computed": 0, "cached": 0, "unreadable": 0,
              "skipped_layers": 0, "seconds": 0.0}
    unreadable: list[str] = []
    total = n_total_files or len(files)
    t0 = time.perf_counter()
    for i, path in enumerate(files):
        try:
            vols, skipped = read_for_plugin(path)
        except Exception as err:  # any reader failure: counted, reported, skipped
            counts["unreadable"] += 1
            unreadable.append(f"{path}: {err}")
            if counts["unreadable"] > max_unreadable * total:
                raise EmbedError(_too_many(counts["unreadable"], total, max_unreadable, unreadable))
            continue
        counts["files"] += 1
        counts["skipped_layers"] += skipped
        for vol in vols:
            b = plugin_binding(vol)
            segmenter.bind(b.pop("image"), **b)
            n = segmenter.n_slices
            before = segmenter.encoder_calls
            for _z in segmenter.prefetch(range(n)):
                if stop is not None and stop():
                    break
            made = segmenter.encoder_calls - before
            counts["volumes"] += 1
            counts["slices"] += n
            counts["computed"] += made
            counts["cached"] += n - made
        if progress is not None:
            progress(i + 1, len(files), counts)
    counts["seconds"] = time.perf_counter() - t0
    counts["unreadable_files"] = unreadable
    return counts


def _too_many(n_bad: int, total: int, frac: float, names: list[str]) -> str:
    shown = "; ".join(names[:5]) + (f"; ... ({len(names) - 5} more)" if len(names) > 5 else "")
    return (f"{n_bad} of {total} file(s) could not be read, more than --max-unreadable {frac:g} of them; "
            f"stopping (embeddings already written are complete and kept). Unreadable: {shown}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medprompt-embed", description="Precompute SAM2 image embeddings for a "
                                "folder of volumes into the disk cache the napari plugin reads.")
    p.add_argument("paths", nargs="+", help="folders (searched recursively) and/or image files / DICOM folders")
    p.add_argument("--model", default="sam2.1-hiera-tiny", help="SAM2 model name (as in the Segment dock)")
    p.add_argument("--checkpoint", default=None, help="local checkpoint file, or 'random' (tests and timing "
                   "only); default: the cached / downloaded published file, as the plugin uses")
    p.add_argument("--device", default="auto", help="auto, cuda, mps or cpu (under torchrun: one GPU per rank)")
    p.add_argument("--cache-dir", default=None, help="embedding cache folder (default <cache>/sam2_embeddings, "
                   "the folder the plugin reads)")
    p.add_argument("--encoder-dtype", choices=("auto", "bfloat16", "float32"), default="auto",
                   help="the encoder's dtype, part of the cache signature; match the annotators' machine "
                   "(auto: as the plugin picks on this machine)")
    p.add_argument("--max-unreadable", type=float, default=DEFAULT_MAX_UNREADABLE,
                   help="stop when more than this fraction of the files cannot be read (default 0.1)")
    p.add_argument("--json", default=None, help="also write the summary to this file (rank 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    from napari_medprompt.train import distributed as dd

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    dist = dd.init_from_env(args.device)
    name = "medprompt-embed" + (f" [rank {dist.rank}]" if dist.enabled else "")

    def fail(msg: str) -> int:
        print(f"{name}: {msg}", file=sys.stderr)
        return 2

    if not 0 <= args.max_unreadable <= 1:
        return fail(f"--max-unreadable must be a fraction in [0, 1], got {args.max_unreadable}")
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_root()
    try:
        _check_writable(cache)
        files = find_volumes(args.paths)
    except (PermissionError, FileNotFoundError) as err:
        return fail(str(err))
    if not files:
        return fail(f"no image files or DICOM folders found under {', '.join(args.paths)}")
    mine = files[dist.rank :: dist.world_size]
    from napari_medprompt.segment.sam2_backend import Sam2Segmenter

    enc = None if args.encoder_dtype == "auto" else args.encoder_dtype == "bfloat16"
    try:
        seg = Sam2Segmenter(args.model, checkpoint=args.checkpoint, device=dd.device_for(args.device),
                            cache_dir=cache, encoder_bf16=enc)
    except Exception as err:
        return fail(f"cannot build {args.model}: {err}")
    if args.encoder_dtype == "float32" and seg.cuda:
        return fail("--encoder-dtype float32 is not available on CUDA (SAM2 runs bfloat16 there)")
    if dist.is_main:
        print(f"{args.model} on {seg.device} ({dist.describe()}): {len(files)} file(s) -> {cache}"
              + ("; RANDOM weights: embeddings are meaningless (tests and timing only)" if seg.random_weights else ""),
              file=sys.stderr)
    bar = None
    if dist.is_main and not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(mine), unit="file", desc="embed" + (f" (rank 0 of {dist.world_size})" if dist.enabled else ""),
                   file=sys.stderr)

    def progress(done, n, counts):
        if bar is not None:
            bar.update(1)
            bar.set_postfix(slices=counts["slices"], computed=counts["computed"])

    try:
        counts = embed_files(mine, seg, progress=progress, max_unreadable=args.max_unreadable,
                             n_total_files=len(files))
    except EmbedError as err:
        return fail(str(err))
    finally:
        if bar is not None:
            bar.close()
    keys = ("files", "volumes", "slices", "computed", "cached", "unreadable", "skipped_layers")
    local_bad = counts["unreadable_files"]
    totals = dict(zip(keys, (int(v) for v in dd.all_reduce_sum([counts[k] for k in keys]))))
    secs = max(dd.all_reduce_sum([counts["seconds"]])[0] / dist.world_size, 1e-9) if dist.enabled else counts["seconds"]
    summary = {**totals, "seconds": round(secs, 3), "computed_slices_per_s": round(totals["computed"] / secs, 3),
               "model": args.model, "weights": seg.weights_id, "random_weights": bool(seg.random_weights),
               "encoder_dtype": "bfloat16" if seg.encoder_bf16 else "float32", "cache_dir": str(cache),
               "processes": dist.world_size}
    if local_bad:
        for line in local_bad:
            print(f"{name}: skipped unreadable {line}", file=sys.stderr)
    rc = 0
    if totals["unreadable"] > args.max_unreadable * len(files):
        print(f"{name}: {totals['unreadable']} of {len(files)} file(s) could not be read, more than "
              f"--max-unreadable {args.max_unreadable:g}", file=sys.stderr)
        rc = 2
    if dist.is_main:
        text = json.dumps(summary, indent=1)
        if args.json:
            from napari_medprompt.io.atomic import atomic_write_text

            atomic_write_text(args.json, text)
        print(text)
    dd.barrier()
    dd.shutdown()
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
