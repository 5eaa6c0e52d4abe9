"""The Slicer-side library of SCDL, shared by the SCDLSegment and SCDLTrain modules. No Qt in this package.

It is neither a module nor part of one: CMake installs it beside the modules and the core package
(``qt-scripted-modules/SCDLSlicerLib``); in a source checkout it sits at the root beside ``scdl/``.

- ``childoutput``: THE parser of the JSON-line / text output of ``scdl`` child processes, progress + ETA.
- ``process``: ``ChildProcess`` (start / poll / cancel, process-tree kill), Slicer >= 5.12 launcher or Popen.
- ``commands``: ``python -m scdl ...`` command lines and the child environment.
- ``jobs``: ``ChildJob``, ``SegmentJob``, ``ModelsJob`` and ``BatchJob`` (any sequence of jobs), driven by ``poll()``.
- ``sceneio``: scene <-> files (volume out; segmentation, terminology, uncertainty back in).
- ``scenejob``: one volume node -> child -> segmentation node (used by SCDLSegment and by SCDLTrain's review).
- ``models``: model catalog, cards, cache folder.
- ``dependencies``: requirements check and installation (PyTorchUtils, pip_ensure); ``requirements.txt``.
- ``devices``: auto / CPU / GPU selection and free GPU memory.
- ``panel``: widget glue of both panels (lifecycle, dependency handlers, log and error boxes).
- ``extension``: home page and documentation links, the minimum 3D Slicer version and its check (run by both
  module files first, before anything an older Slicer lacks).

Layers: the module files (``SCDLSegment.py``, ``SCDLTrain.py``) -> their own ``…Lib`` (module Logic) -> this
package -> the core package ``scdl`` (in child processes, or imported inside functions). This package never
imports a module or a module's ``…Lib``; numeric work stays in ``scdl``.
"""

#: Submodules in dependency order (``panel.PanelMixin.onReload`` reloads them in this order).
SUBMODULES = ("extension", "childoutput", "process", "commands", "jobs", "sceneio", "scenejob", "models", "dependencies",
              "devices", "panel")
