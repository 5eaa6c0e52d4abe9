"""Helpers of the SCDLSegment module, reused by SCDLTrain. No Qt anywhere in this package.

- ``childoutput``: classify the JSON-line / text output of ``scdl`` child processes, progress + ETA.
- ``process``: ``ChildProcess`` (start / poll / cancel, process-tree kill), Slicer >= 5.12 launcher or Popen.
- ``commands``: ``python -m scdl ...`` command lines and the child environment.
- ``jobs``: ``SegmentJob``, ``ModelsJob``, ``BatchJob`` driven by ``poll()``.
- ``sceneio``: scene <-> files (volume out; segmentation, terminology, uncertainty back in).
- ``scenejob``: one volume node -> child -> segmentation node.
- ``models``: model catalog, cards, cache folder.
- ``dependencies``: requirements check and installation (PyTorchUtils, pip_ensure).
- ``devices``: auto / CPU / GPU selection and free GPU memory.
- ``panel``: widget glue shared with SCDLTrain (lifecycle, dependency handlers, log and error boxes).

Numeric work stays in the core package ``scdl``.
"""

#: Submodules in dependency order (``SCDLSegmentWidget.onReload`` reloads them in this order).
SUBMODULES = ("childoutput", "process", "commands", "jobs", "sceneio", "scenejob", "models", "dependencies", "devices",
              "panel")
