"""The core must import without Qt or napari (DESIGN: core without Qt)."""

import subprocess
import sys

CORE = [
    "napari_medprompt",
    "napari_medprompt.io",
    "napari_medprompt.imaging",
    "napari_medprompt.segment",
    "napari_medprompt.classify",
    "napari_medprompt.models",
    "napari_medprompt.session",
    "napari_medprompt.train",
]


def test_core_imports_load_no_qt_napari_or_torch():
    code = (
        "import importlib, sys\n"
        f"for m in {CORE!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('PyQt5','PyQt6','PySide2','PySide6','qtpy','napari','vispy','torch'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported heavy/GUI modules: {out.stdout.strip()}"
