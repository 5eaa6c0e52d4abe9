"""Helpers of the SCDLTrain module. No Qt anywhere in this package; numeric work stays in the core ``scdl``.

Child processes, JSON-line parsing, dependency installation, scene <-> file helpers and catalog access are
SCDLSegment's (``SCDLSegmentLib``, installed beside this package) and are imported from there.

- ``segmentmap``: segments -> model classes (by name, terminology, or the user's correction).
- ``scenecohort``: the scene's volumes as cases (labeled / unlabeled, train / val / exclude roles).
- ``export``: scene cohort -> volumes, label maps in the model's numbering, ``manifest.csv``.
- ``options``: the panel's options -> ``scdl train`` command lines, checked by the core's config resolver.
- ``estimate``: time and memory estimate from measured training steps.
- ``monitor``: the training child's JSON events -> iteration, ETA, loss and Dice rows.
- ``curves``: those rows -> table, plot series and chart nodes.
- ``trainjob``: the ``--check-only`` and training child processes.
- ``handoff``: register the trained model, read cards and run folders.
- ``review``: segment the validation cases with the new model (SCDLSegment's Logic).
"""

#: Submodules in dependency order (``SCDLTrainWidget.onReload`` reloads them in this order).
SUBMODULES = ("segmentmap", "scenecohort", "export", "options", "estimate", "monitor", "curves", "trainjob",
              "handoff", "review")
