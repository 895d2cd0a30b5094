"""Group ``io``: opening a 512x512xN int16 CT through the plugin's reader vs the bare library read.

- ``io.open_nifti``: ``get_reader(path)(path)`` (napari hook: read, geometry, layer tuple with
  window) on a .nii.gz, against ``np.asanyarray(nibabel.load(path).dataobj)``.
- ``io.open_dicom``: the same hook on a folder of uncompressed single-frame DICOM files, against
  ``np.stack([pydicom.dcmread(f).pixel_array for f in files])`` (no sorting, no rescale).

Both files are written to a temporary folder by the benchmark from the synthetic phantom (300
slices; ``--quick``: 60). Medians over repeats after one warm-up run each, the two alternating; target ratio <= 1.3.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.runner import Record, device_name, median, time_repeats

TARGET = 1.3
SIZE = 512  # in-plane matrix
SLICES, QUICK_SLICES = 300, 60


def _make_ct(n_slices: int, size: int | None = None) -> "Volume":  # noqa: F821
    from napari_medprompt.imaging.phantom import make_abdominal_phantom

    size = size or SIZE
    pixel = 0.7 * 512 / size
    base, _, _ = make_abdominal_phantom(shape=(min(30, n_slices), size, size), spacing=(10.0, pixel, pixel),
                                        seed=1)
    rng = np.random.default_rng(0)
    reps = int(np.ceil(n_slices / base.data.shape[0]))
    data = np.repeat(base.data, reps, axis=0)[:n_slices]
    data = data + rng.integers(-6, 7, data.shape, dtype=np.int16)  # every slice differs
    base.data = data.astype(np.int16)
    base.spacing = (1.0, pixel, pixel)
    base.affine[2, 2] = 1.0
    return base


def run(args) -> list[Record]:
    import nibabel as nib
    import pydicom

    from napari_medprompt.io.dicom_write import write_dicom_series
    from napari_medprompt.io.napari_hooks import get_reader

    n = QUICK_SLICES if getattr(args, "quick", False) else SLICES
    repeats = 3 if getattr(args, "quick", False) else 5
    vol = _make_ct(n)
    dev = device_name()
    records = []
    with tempfile.TemporaryDirectory(prefix="medprompt-bench-io-") as tmp:
        tmp = Path(tmp)
        nii = tmp / "ct.nii.gz"
        nib.save(nib.Nifti1Image(vol.data.T, vol.affine), str(nii))
        folder = tmp / "dicom"
        write_dicom_series(vol, folder)
        files = sorted(str(folder / f) for f in os.listdir(folder))

        def plugin_nifti():
            (layer,) = get_reader(str(nii))(str(nii))
            assert layer[0].shape == vol.data.shape

        def bare_nifti():
            np.asanyarray(nib.load(str(nii)).dataobj)

        def plugin_dicom():
            (layer,) = get_reader(str(folder))(str(folder))
            assert layer[0].shape == vol.data.shape

        def bare_dicom():
            np.stack([pydicom.dcmread(f).pixel_array for f in files])

        size = f"{SIZE}x{SIZE}x{n} int16"
        for name, ours, base, what in (
            ("io.open_nifti", plugin_nifti, bare_nifti, "nibabel dataobj"),
            ("io.open_dicom", plugin_dicom, bare_dicom, "pydicom dcmread+pixel_array, stacked"),
        ):
            base()  # warm-up (page cache, imports, decoder plugins)
            ours()
            tb, to = [], []
            for _ in range(repeats):  # interleaved so that load changes on the machine hit both
                tb += time_repeats(base, repeats=1, warmup=0)
                to += time_repeats(ours, repeats=1, warmup=0)
            t_base, t_ours = median(tb), median(to)
            ratio = t_ours / t_base
            records.append(Record(
                benchmark=name, metric="open_time_median", value=t_ours, unit="s", baseline=t_base,
                ratio=ratio, device=dev,
                notes=f"{size}; baseline: {what}; target ratio <= {TARGET} "
                      f"({'met' if ratio <= TARGET else 'NOT met'}); {repeats} repeats (interleaved) after warm-up",
            ))
    return records
