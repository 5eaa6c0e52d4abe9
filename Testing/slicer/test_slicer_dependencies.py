"""Dependency check and installation plumbing (PyTorchUtils, slicer.packaging.pip_ensure, pip_install)."""

import sys
import types

import pytest
import slicer

from SCDLSlicerLib import dependencies as deps
from SCDLSlicerLib import devices


def test_plan_compares_requirements_with_installed_versions(tmp_path, monkeypatch):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nmonai>=1.3\nscdl-surely-not-installed>=1.0  # missing\n"
                            "safetensors>=99.0\nSimpleITK>=2.0\n-c constraints.txt\n\n")
    assert deps.read_requirements(requirements) == ["monai>=1.3", "scdl-surely-not-installed>=1.0", "safetensors>=99.0",
                                                    "SimpleITK>=2.0"]
    plan = deps.plan(requirements)
    assert plan.torch is None  # torch 2.13 satisfies >=2.1
    assert plan.packages == ["scdl-surely-not-installed>=1.0", "safetensors>=99.0"]  # SimpleITK is never pip-installed
    monkeypatch.setattr(deps, "TORCH_REQUIREMENT", ">=99")
    assert deps.plan(requirements).torch == ">=99"
    assert deps.plan(requirements).torch_found == deps.installed_version("torch")


def test_shipped_requirements_are_satisfied_here():
    assert deps.plan().empty


def test_install_uses_pytorchutils_then_pip_ensure_once(monkeypatch):
    calls = []

    class FakePyTorchUtilsLogic:
        def installTorch(self, askConfirmation=False, torchVersionRequirement=None, **kwargs):
            calls.append(("torch", askConfirmation, torchVersionRequirement))
            return types.SimpleNamespace(__version__="2.5.0")

    packaging = types.ModuleType("slicer.packaging")
    packaging.pip_ensure = lambda reqs, **kwargs: calls.append(("pip_ensure", list(reqs), kwargs))
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    deps.install(deps.InstallPlan(torch=">=2.1", packages=["monai>=1.3", "slicerio>=1.1"]), FakePyTorchUtilsLogic)
    assert calls == [
        ("torch", False, ">=2.1"),
        ("pip_ensure", ["monai>=1.3", "slicerio>=1.1"],
         {"skip_packages": ["torch", "SimpleITK", "numpy"], "prompt_install": False, "requester": "SCDL"}),
    ]


def test_install_falls_back_to_pip_install_and_reports_a_refused_torch(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "slicer.packaging", types.ModuleType("slicer.packaging"))  # Slicer < 5.12
    monkeypatch.setattr(slicer.util, "pip_install", lambda reqs: calls.append(reqs))
    deps.install(deps.InstallPlan(packages=["monai>=1.3"]))
    assert calls == [["monai>=1.3"]]

    class Declined:
        def installTorch(self, **kwargs):
            return None

    with pytest.raises(deps.DependencyError, match="PyTorch was not installed"):
        deps.install(deps.InstallPlan(torch=">=2.1"), Declined)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # the PyTorch extension is missing
    with pytest.raises(deps.DependencyError, match="Install 'PyTorch' from the Extensions Manager"):
        deps.install(deps.InstallPlan(torch=">=2.1"))


@pytest.mark.parametrize("requirement,expected", [("torch>=2.1", True), ("torch>=99", False), ("torch==2.13.0", True),
                                                  ("torch<2", False), ("scdl-nope", False)])
def test_requirement_check(requirement, expected):
    assert deps.is_satisfied(requirement) is expected


def test_device_helpers_without_cuda():
    assert devices.device_index("cuda:3") == 3 and devices.device_index("cuda") == 0 and devices.device_index("cpu") is None
    assert devices.check_device("auto") is None and devices.check_device("cpu") is None
    assert devices.gpu_memory(0) is None  # CPU build of torch here
    assert devices.describe_gpu(0) == "GPU 0: not available"
    assert [value for value, _label in devices.list_devices(probe_gpus=True)] == ["auto", "cpu"]
