"""``python -m napari_medprompt.demo [--screenshot PATH] [--backend NAME]``: see :mod:`napari_medprompt._qt.demo`.

The demo is a GUI program, so it lives with the other Qt code in ``napari_medprompt._qt``; this module
is only its command-line entry point (used by ``make demo``).
"""

import sys

if __name__ == "__main__":
    from napari_medprompt._qt.demo import main

    sys.exit(main())
