"""Static checks of the extension's packaging: CMake file lists, README commands, CI script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _cmake_list(text: str, variable: str) -> set[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not found in CMake file"
    return {line.strip() for line in match.group(1).splitlines() if line.strip() and not line.strip().startswith("#")}


def test_core_package_cmake_lists_every_python_file() -> None:
    text = (REPO / "CMake" / "SCDLCore.cmake").read_text(encoding="utf-8")
    listed = _cmake_list(text, "SCDL_CORE_PYTHON_SCRIPTS")
    on_disk = {p.relative_to(REPO).as_posix() for p in (REPO / "scdl").rglob("*.py")}
    assert listed == on_disk, f"missing from CMake: {sorted(on_disk - listed)}; not on disk: {sorted(listed - on_disk)}"


def test_shared_resources_cmake_lists_every_file() -> None:
    text = (REPO / "CMake" / "SCDLCore.cmake").read_text(encoding="utf-8")
    listed = _cmake_list(text, "SCDL_SHARED_RESOURCES")
    on_disk = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "Resources").rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    assert listed == on_disk, f"missing from CMake: {sorted(on_disk - listed)}; not on disk: {sorted(listed - on_disk)}"


def test_top_level_cmake_has_extension_metadata() -> None:
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "project(SCDL)" in text
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf"set\(EXTENSION_{key}\s+\"[^\"]+\"\)", text), key
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    for module in sorted(p.name for p in REPO.iterdir() if (p / "CMakeLists.txt").is_file() and p.name.startswith("SCDL")):
        assert f"add_subdirectory({module})" in text, module


def test_icon_is_128_png() -> None:
    data = (REPO / "SCDL.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (128, 128)


def _readme_commands() -> tuple[str, str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    main = re.search(r"<!-- main-command -->\s*```bash\n(.+?)\n```", text, re.S)
    test = re.search(r"<!-- test-command -->\s*```bash\n(.+?)\n```", text, re.S)
    assert main and test, "README must mark its two set-up commands"
    return main.group(1).strip(), test.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    _, test_cmd = _readme_commands()
    extracted = subprocess.run(
        ["awk", "/<!-- test-command -->/{found=1; next} found && /^pip |^python /{print; exit}", "README.md"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert extracted == test_cmd
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "torch==2.13.0" in ci and "exit 1" in ci and '"$rc" -eq 5' in ci


def test_readme_main_command_runs_the_demo() -> None:
    main_cmd, _ = _readme_commands()
    assert "scdl demo" in main_cmd


def test_cli_help_lists_the_contract_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "scdl", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("segment", "evaluate", "models", "train", "demo"):
        assert command in out, command
