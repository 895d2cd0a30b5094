"""Every module of io/, imaging/ and the sample data, and a real read/write through the napari
hooks, load neither Qt, napari, vispy nor torch (the package __init__ check alone does not import
these modules)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import napari_medprompt.imaging
import napari_medprompt.io


def _modules():
    out = ["napari_medprompt._sample_data"]
    for pkg in (napari_medprompt.io, napari_medprompt.imaging):
        out += [f"{pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)]
    return out


def test_io_modules_and_a_read_write_round_load_no_gui_or_torch(tmp_path):
    mods = _modules()
    assert "napari_medprompt.io.napari_hooks" in mods and "napari_medprompt.imaging.window" in mods
    code = f"""
import importlib, sys
import numpy as np, nibabel as nib
for m in {mods!r}:
    importlib.import_module(m)
from napari_medprompt.io.napari_hooks import get_reader, write_labels
from napari_medprompt.io.dicom_write import write_dicom_series
from napari_medprompt.io.volume import Volume
from napari_medprompt._sample_data import make_sample_ct
p = r"{tmp_path}/ct.nii.gz"
nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), p)
(data, kw, _), = get_reader(p)(p)
write_labels(r"{tmp_path}/seg.nii.gz", (data > 0).astype(np.uint8), kw)
write_dicom_series(Volume(np.zeros((3, 8, 8), np.int16), (1, 1, 1), modality="CT"), r"{tmp_path}/dcm")
get_reader(r"{tmp_path}/dcm")(r"{tmp_path}/dcm")
make_sample_ct()
bad = sorted(m for m in sys.modules if m.split('.')[0] in
             ('PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'qtpy', 'napari', 'vispy', 'torch'))
print(','.join(bad))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"I/O imported GUI/torch modules: {out.stdout.strip()}"
