"""The SCDLSegment module's own code: ``logic`` (Logic, parameter node, batch inputs), ``results`` (the results
table), ``handlers`` (the panel's behaviour, no Qt), ``selftest`` (the module's self-test). What it shares with SCDLTrain is in ``SCDLSlicerLib``.

Numeric work stays in the core package ``scdl``; no Qt in this package.
"""


def _find_shared_library() -> None:
    """Make ``SCDLSlicerLib`` (and with it ``scdl``) importable in a developer checkout.

    The installed extension has both beside the modules in ``qt-scripted-modules/``, which Slicer puts on
    ``sys.path``. A developer adds the module folders (``SCDLSegment/``, ``SCDLTrain/``) in Slicer's settings;
    Slicer puts those on ``sys.path``, and the shared library and the core package are one folder up, at the
    checkout root, which is appended here. The same function is in ``SCDLTrainLib/__init__.py`` (a test keeps the
    two identical): it is the only ``sys.path`` edit of the Slicer side.
    """
    import importlib.util
    import os
    import sys

    if importlib.util.find_spec("SCDLSlicerLib") is None:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if os.path.isfile(os.path.join(root, "SCDLSlicerLib", "__init__.py")) and root not in sys.path:
            sys.path.append(root)
            importlib.invalidate_caches()


_find_shared_library()

#: Submodules in dependency order (``SCDLSegmentWidget.onReload`` reloads them after ``SCDLSlicerLib``'s).
SUBMODULES = ("results", "logic", "handlers", "selftest")
