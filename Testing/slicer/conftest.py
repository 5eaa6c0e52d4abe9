"""Fixtures of the Slicer-side tests: real MRML from the ``slicer-core`` wheel, no GUI.

What is real: the MRML scene, ``vtkSlicerApplicationLogic`` with the colour, volumes, segmentations,
subject-hierarchy and terminologies logics (terminology contexts from ``data/terminologies``), storage
nodes and file readers/writers, ``slicer.util`` (array helpers, ``launchConsoleProcess``, ...), and the
``scdl`` child processes.

What is a stand-in (``stubs/``): ``slicer.ScriptedLoadableModule``, ``slicer.i18n`` and
``slicer.parameterNodeWrapper`` (a ``slicer/`` folder WITHOUT ``__init__.py``, merged into the real
``slicer`` package), and small fake ``qt``/``ctk`` modules so that module files import. ``slicer.app`` is
never provided: code that needs the application must fail here rather than "succeed" against a mock.
The harness itself lives in ``harness.py``.
"""

from __future__ import annotations

import pytest

from harness import installed_harness


@pytest.fixture
def slicer_app():
    """A fresh scene + logics; ``slicer.mrmlScene`` and ``slicer.modules`` point at them during the test."""
    with installed_harness() as harness:
        yield harness


@pytest.fixture(scope="module")
def slicer_app_module():
    """Like ``slicer_app``, shared by the tests of one module (for one expensive end-to-end run)."""
    with installed_harness() as harness:
        yield harness


@pytest.fixture
def patient_a_volume(slicer_app, patient_a_ct):
    """Patient A's CT (122x101x112, 3 mm) read by Slicer's own volume reader into the scene."""
    node = slicer_app.volumes.AddArchetypeVolume(str(patient_a_ct), "patientA", 0)
    assert node is not None, f"Slicer could not read {patient_a_ct}"
    return node


@pytest.fixture
def scdl_home(tmp_path, monkeypatch):
    """An isolated SCDL home / model cache for the test (nothing of the user's ~/.scdl is touched)."""
    home = tmp_path / "scdl_home"
    home.mkdir()
    monkeypatch.setenv("SCDL_HOME", str(home))
    monkeypatch.delenv("SCDL_MODELS_DIR", raising=False)
    return home


@pytest.fixture(scope="session")
def coarse_model(tmp_path_factory):
    """A random-weight package at 12 mm: patient A fits in one 32^3 window (fast end-to-end runs)."""
    from model_factory import make_tiny_package

    return make_tiny_package(tmp_path_factory.mktemp("coarse_model") / "coarse-test-model", spacing=(12.0, 12.0, 12.0),
                             model_id="coarse-test-model")


@pytest.fixture
def fake_qt():
    """The fake ``qt`` module (``stubs/qt.py``), reset before and after the test."""
    import qt

    qt.reset()
    yield qt
    qt.reset()
