"""The learn core imports without Qt, napari or torch (torch comes only with a run or a prediction)."""

import subprocess
import sys


def test_learn_core_imports_no_qt_napari_or_torch():
    code = (
        "import sys, napari_medprompt.learn as l\n"
        "import napari_medprompt.learn.examples, napari_medprompt.learn.run, napari_medprompt.learn.predict\n"
        "import napari_medprompt.learn.versions, napari_medprompt.learn.methods, napari_medprompt.learn.workspace\n"
        "ex = l.ExampleSet(); import numpy as np\n"
        "ex.add(np.zeros((8, 8)) + np.eye(8), 'a'); ex.rows(); ex.counts(); ex.thumbnail(ex[0].uid)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('PyQt5','PyQt6','PySide2','PySide6','qtpy','napari','vispy','torch'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the learn core imported heavy/GUI modules: {out.stdout.strip()}"
