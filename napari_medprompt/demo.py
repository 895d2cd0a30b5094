"""``python -m napari_medprompt.demo [--screenshot PATH] [--backend NAME]``: see :mod:`napari_medprompt._qt.demo`.

The demo is a GUI program, so it lives with the other Qt code in ``napari_medprompt._qt``; this module
is only its command-line entry point (used by ``make demo``).
"""

import importlib.util
import os
import sys

if __name__ == "__main__":
    # Qt 6 when it is installed (qtpy would otherwise take PyQt5 first, which napari deprecates);
    # QT_API set by the user wins.
    if "QT_API" not in os.environ and importlib.util.find_spec("PyQt6") is not None:
        os.environ["QT_API"] = "pyqt6"
    from napari_medprompt._qt.demo import main

    sys.exit(main())
