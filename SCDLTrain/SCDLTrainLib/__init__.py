"""Helpers of the SCDLTrain module. No Qt anywhere in this package; numeric work stays in the core ``scdl``.

Child processes, JSON-line parsing, jobs, dependency installation, scene <-> file helpers and catalog access are
in the shared library ``SCDLSlicerLib`` (installed beside this package).

- ``segmentmap``: segments -> model classes (by name, terminology, or the user's correction).
- ``scenecohort``: the scene's volumes as cases (labeled / unlabeled, train / val / exclude roles).
- ``export``: scene cohort -> volumes, label maps in the model's numbering, ``manifest.csv``.
- ``options``: the panel's options -> ``scdl train`` command lines, checked by the core's config resolver.
- ``estimate``: time and memory estimate from measured training steps.
- ``monitor``: the training child's JSON events -> iteration, ETA, loss and Dice rows.
- ``curves``: those rows -> table, plot series and chart nodes.
- ``trainjob``: the ``--check-only`` and training child processes.
- ``handoff``: register the trained model, read cards and run folders.
- ``tables``: the texts of the panel's tables and count lines.
- ``logic``: ``SCDLTrainLogic`` and ``SCDLTrainParameterNode`` (the module file imports them).
- ``handlers``: the panel's behaviour without Qt (``TrainPanelHandlers``, a base of the module's widget).
- ``selftest``: ``SCDLTrainTest`` (Reload and Test).
"""


def _find_shared_library() -> None:
    """Make ``SCDLSlicerLib`` (and with it ``scdl``) importable in a developer checkout.

    The installed extension has both beside the modules in ``qt-scripted-modules/``, which Slicer puts on
    ``sys.path``. A developer adds the module folders (``SCDLSegment/``, ``SCDLTrain/``) in Slicer's settings;
    Slicer puts those on ``sys.path``, and the shared library and the core package are one folder up, at the
    checkout root, which is appended here. The same function is in ``SCDLSegmentLib/__init__.py`` (a test keeps the
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

#: Submodules in dependency order (``SCDLTrainWidget.onReload`` reloads them after ``SCDLSlicerLib``'s).
SUBMODULES = ("segmentmap", "scenecohort", "export", "options", "estimate", "monitor", "curves", "trainjob",
              "handoff", "tables", "logic", "handlers", "selftest")
