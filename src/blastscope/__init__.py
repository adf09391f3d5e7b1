"""napari-blastscope: blast detection and AML mutation prediction on stained smears.

The headless core (everything outside ``blastscope.widgets``) imports neither napari nor Qt.
"""

__version__ = "0.1.0"
