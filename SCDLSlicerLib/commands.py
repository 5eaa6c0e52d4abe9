"""Command lines and environment of the ``python -m scdl ...`` child processes (no Qt, no Slicer needed).

Inside Slicer the interpreter is ``PythonSlicer`` and the core package ``scdl`` lives beside the modules in
``qt-scripted-modules/`` (CMake installs it there), which is on Slicer's ``sys.path`` but not on
PythonSlicer's: the child gets that folder prepended to ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional, Sequence

from SCDLSlicerLib.process import python_executable


def ensure_core_importable() -> bool:
    """True if the core package ``scdl`` can be imported.

    ``scdl`` lies beside this package in both layouts: ``qt-scripted-modules/`` of the installed extension and
    the root of a source checkout. Whatever put ``SCDLSlicerLib`` on ``sys.path`` (Slicer for the installed
    extension; the module's ``…Lib/__init__.py`` in a developer checkout) therefore made ``scdl`` importable.
    """
    return importlib.util.find_spec("scdl") is not None


def scdl_package_parent() -> Path:
    """The folder that contains the ``scdl`` package (so that ``python -m scdl`` finds it)."""
    spec = importlib.util.find_spec("scdl")
    if spec is None or not spec.origin:
        raise ModuleNotFoundError(
            "The SCDL core package 'scdl' was not found. Reinstall the SCDL extension "
            "(or, in developer mode, add SCDLSegment/ and SCDLTrain/ of the source checkout to the module paths)."
        )
    return Path(spec.origin).resolve().parent.parent


def child_environment(base: Optional[dict[str, str]] = None) -> tuple[dict[str, str], dict[str, str]]:
    """``(full_env, updates)`` for a child: ``PYTHONPATH`` starts with the ``scdl`` folder, output unbuffered.

    ``base`` defaults to this process's environment; ``updates`` holds only the changed variables (what
    ``slicer.util.launchConsoleProcess(updateEnvironment=...)`` expects).
    """
    env = dict(os.environ if base is None else base)
    parent = str(scdl_package_parent())
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != parent]
    updates = {"PYTHONPATH": os.pathsep.join([parent, *paths]), "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
    env.update(updates)
    return env, updates


def scdl_command(*args: str, python: Optional[str] = None) -> list[str]:
    """``[python, "-m", "scdl", *args]``."""
    return [python or python_executable(), "-m", "scdl", *[str(a) for a in args]]


def segment_command(
    input_path: os.PathLike | str,
    output_path: os.PathLike | str,
    model: Optional[str] = None,
    device: str = "auto",
    uncertainty_path: Optional[os.PathLike | str] = None,
    extra: Sequence[str] = (),
    python: Optional[str] = None,
) -> list[str]:
    """The ``scdl segment`` command line (contract in docs/ARCHITECTURE.md), always with ``--progress json``."""
    args = ["segment", str(input_path), "-o", str(output_path), "--device", device or "auto", "--progress", "json"]
    if model:
        args += ["--model", str(model)]
    if uncertainty_path:
        args += ["--uncertainty", str(uncertainty_path)]
    return scdl_command(*args, *extra, python=python)


def models_command(*args: str, python: Optional[str] = None) -> list[str]:
    """``scdl models ...`` (``list``, ``info``, ``verify``, ``import``, ``download``, ``path``)."""
    return scdl_command("models", *args, python=python)
