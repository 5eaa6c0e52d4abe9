"""Python packages the SCDL core needs inside Slicer, and installing them on request (never at import).

- torch comes ONLY from the PyTorch extension (``PyTorchUtils``), with a ``>=`` requirement: a plain pip
  install could bring a CPU-only or mismatched CUDA build.
- The rest is listed in ``requirements.txt`` beside this file (installed with the package into
  ``qt-scripted-modules/SCDLSlicerLib``, so SCDLSegment and SCDLTrain share one file) and installed with
  ``slicer.packaging.pip_ensure`` (Slicer >= 5.12; older: ``slicer.util.pip_install``), skipping torch and
  SimpleITK, which must not be replaced (Slicer ships its own SimpleITK; numpy is Slicer's too).
- The widget asks ONE confirmation listing everything (:meth:`InstallPlan.describe`), then calls
  :func:`install`.

Checking uses package metadata only (``importlib.metadata``): nothing is imported.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

#: The requirements file (``SCDLSlicerLib/requirements.txt``).
REQUIREMENTS_FILE = Path(__file__).resolve().parent / "requirements.txt"
#: torch requirement handed to PyTorchUtils (the core is tested with torch >= 2.1).
TORCH_REQUIREMENT = ">=2.1"
#: Never installed by pip from here: torch (PyTorch extension), SimpleITK and numpy (bundled with Slicer).
SKIP_PACKAGES = ("torch", "SimpleITK", "numpy")

try:
    from slicer.i18n import tr as _
except ImportError:  # pragma: no cover - outside Slicer and the test harness
    def _(text: str) -> str:
        return text

_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_requirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement lines of a requirements file (comments, blank lines and pip options dropped)."""
    lines = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            lines.append(line)
    return lines


def requirement_name(requirement: str) -> str:
    match = _REQ.match(requirement.split(";", 1)[0])
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return match.group(1)


def installed_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def is_satisfied(requirement: str) -> bool:
    """True if the installed distribution satisfies ``requirement`` (markers and extras ignored)."""
    name = requirement_name(requirement)
    version = installed_version(name)
    if version is None:
        return False
    spec = _REQ.match(requirement.split(";", 1)[0]).group(3)
    if not spec:
        return True
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import Version

        return Version(version) in SpecifierSet(spec)
    except ImportError:  # pragma: no cover - packaging ships with pip in every Slicer
        return all(_simple_check(version, clause.strip()) for clause in spec.split(","))


def _simple_check(version: str, clause: str) -> bool:
    match = re.match(r"(>=|==|<=|>|<|!=)\s*([0-9][0-9.]*)", clause)
    if not match:
        return True
    op, wanted = match.groups()

    def key(text: str) -> tuple:
        return tuple(int(p) for p in re.findall(r"\d+", text)[:4])

    have, want = key(version), key(wanted)
    return {">=": have >= want, "==": have == want, "<=": have <= want, ">": have > want, "<": have < want,
            "!=": have != want}[op]


@dataclass
class InstallPlan:
    """What is missing: torch (the requirement for PyTorchUtils, or None) and pip packages."""

    torch: Optional[str] = None
    packages: list[str] = field(default_factory=list)
    torch_found: Optional[str] = None

    @property
    def empty(self) -> bool:
        return self.torch is None and not self.packages

    def describe(self) -> str:
        """The text of the one confirmation dialog."""
        lines = [_("SCDL needs these Python packages, which are not installed yet:"), ""]
        if self.torch is not None:
            found = _(" (found {version})").format(version=self.torch_found) if self.torch_found else ""
            lines.append("  - " + _("torch{requirement}{found}, installed by the PyTorch extension (PyTorchUtils)").format(
                requirement=self.torch, found=found))
        lines += [f"  - {requirement}" for requirement in self.packages]
        lines += ["", _("They are downloaded from the internet (torch can take several minutes) into Slicer's Python."),
                  _("Install them now?")]
        return "\n".join(lines)


def plan(requirements_file: Path = REQUIREMENTS_FILE) -> InstallPlan:
    """Compare the requirements with what is installed."""
    torch_found = installed_version("torch")
    torch_missing = torch_found is None or not is_satisfied("torch" + TORCH_REQUIREMENT)
    skip = {canonical(n) for n in SKIP_PACKAGES}
    missing = [r for r in read_requirements(requirements_file)
               if canonical(requirement_name(r)) not in skip and not is_satisfied(r)]
    return InstallPlan(TORCH_REQUIREMENT if torch_missing else None, missing, torch_found)


class DependencyError(Exception):
    """Installation failed or was refused; the message says what to do."""


def install(todo: InstallPlan, pytorch_utils_logic: Optional[Callable[[], object]] = None) -> None:
    """Install what ``todo`` lists (after the user agreed). Runs inside Slicer only.

    Args:
        pytorch_utils_logic: factory of the PyTorchUtils logic (default ``PyTorchUtils.PyTorchUtilsLogic``).
    """
    if todo.torch is not None:
        if pytorch_utils_logic is None:
            try:
                import PyTorchUtils
            except ImportError as err:
                raise DependencyError(_(
                    "The PyTorch extension is not installed. Install 'PyTorch' from the Extensions Manager, "
                    "restart Slicer, and try again.")) from err
            pytorch_utils_logic = PyTorchUtils.PyTorchUtilsLogic
        torch = pytorch_utils_logic().installTorch(askConfirmation=False, torchVersionRequirement=todo.torch)
        if torch is None:
            raise DependencyError(_("PyTorch was not installed. Open the PyTorch Utils module to install it, then retry."))
    if todo.packages:
        _pip_install(todo.packages)


def _pip_install(packages: list[str]) -> None:
    import slicer

    try:
        import slicer.packaging as packaging_module

        ensure = getattr(packaging_module, "pip_ensure", None)
    except ImportError:
        ensure = None
    if ensure is not None:
        # Slicer >= 5.12: checks, installs, skips torch/SimpleITK in the dependency tree, offers a restart
        # if an already imported package changed. We asked the user already: no second prompt.
        ensure(packages, skip_packages=list(SKIP_PACKAGES), prompt_install=False, requester="SCDL")
    else:
        slicer.util.pip_install(packages)
