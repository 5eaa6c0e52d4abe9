"""Every example of the ``scdl`` command is valid: the ``--help`` texts of all sub-commands (segment, evaluate,
models and its actions, train, demo, phantom, synth, bench ssl) and the code blocks of ``README.md`` and
``docs/*.md``.

Each example line (``scdl ...``, backslash continuations joined, a trailing ``# comment``, a description aligned
after three spaces, and anything after a pipe or ``&&`` dropped) is parsed by the real argparse parser
(``scdl.cli.main.build_parser``); then:
- a model id (``--model``, ``--init``, ``models info|verify|download|export ID``, ``import --as ID``) is in the
  catalog, or an id the examples create (``models import ... --id NAME``); a value with a ``/`` or a package
  extension is a path, not an id;
- a label table (``--labels``, ``--gt-labels``, ``--source-labels``, ``--anatomy-labels``) is a bundled table or
  a file path;
- every argument that names a file or folder of this repository (its first component is a top-level entry:
  ``Resources/...``, ``docs/...``, ``bench/...``) exists.
Synopsis lines (``scdl segment INPUT -o OUTPUT [--model ID|PATH] ...``) are checked too: without their ``[...]``
groups they parse, every option a group names exists, and placeholders (``ID|PATH``) are not taken for ids.
``python SCRIPT.py`` lines in the docs' code blocks must name scripts that exist.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from scdl.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
#: Namespace attributes holding a model id or path.
MODEL_ATTRS = ("model", "init", "catalog_id")
#: Namespace attributes holding a label table (bundled name or CSV path).
TABLE_ATTRS = ("labels", "gt_labels", "source_labels", "anatomy_labels")
PACKAGE_SUFFIXES = (".scdlmodel", ".pth", ".pt", ".safetensors")
SHELL_OPERATORS = {"|", "||", "&&", "&", ";", ">", ">>", "2>", "2>&1", "<"}
CODE_BLOCK = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", flags=re.S | re.M)


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "scdl"):
    """(command path, parser) for the parser and every sub-parser below it."""
    yield prefix, parser
    for action in parser._actions:                               # argparse keeps no public accessor
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, f"{prefix} {name}")


def _example_lines(text: str) -> list[str]:
    """The ``scdl ...`` command lines of a text (backslash continuations joined)."""
    lines, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:]
        if pending:
            line = pending + " " + line
            pending = ""
        elif not re.match(r"(scdl|python -m scdl)\s", line):
            continue
        if line.endswith("\\"):
            pending = line[:-1].strip()
            continue
        lines.append(line)
    return lines


def _split_optional(line: str) -> tuple[str, list[str]]:
    """A synopsis's ``[...]`` groups cut out of ``line`` (nested ones included), and the ``--options`` they name:
    ``scdl models info ID|PATH [--json]`` -> (``scdl models info ID|PATH``, [``--json``]). A bracket inside a
    word (``--set patch_size=[32,32,32]``) is not a group."""
    core, groups, depth, current = [], [], 0, []
    for char in line:
        if char == "[" and (depth or not core or core[-1] in " \t"):
            depth += 1
            if depth == 1:
                continue
        elif char == "]" and depth:
            depth -= 1
            if not depth:
                groups.append("".join(current))
                current = []
                continue
        (current if depth else core).append(char)
    flags = [f for g in groups for f in re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", g)]
    return "".join(core), flags


def _tokens(line: str) -> list[str]:
    """The arguments of an example line, without ``scdl``: shell words up to a pipe, ``&&``, ``;`` or a
    redirection; a ``# comment`` and a description aligned after three or more spaces dropped."""
    line = re.split(r"\s{3,}(?=[a-z(=])", line, maxsplit=1)[0]
    out = []
    for token in shlex.split(line, comments=True):
        if token in SHELL_OPERATORS:               # a pipe or list operator stands alone ("ID|PATH" is one word)
            break
        out.append(token)
    if out[:3] == ["python", "-m", "scdl"]:
        out = out[2:]
    return out[1:]


def _is_placeholder(value: str) -> bool:
    """``ID``, ``ID|PATH``, ``FILE.scdlmodel|FOLDER``: a synopsis placeholder (model ids are lower-case)."""
    return bool(re.search(r"[A-Z]", value)) and (value.split("|")[0].split(".")[0].isupper() or "|" in value)


def _is_path(value: str) -> bool:
    return "/" in value or value.endswith(PACKAGE_SUFFIXES) or value.startswith(".")


def _help_examples() -> list[tuple[str, str]]:
    out = []
    for where, parser in _subparsers(build_parser()):
        for text in (parser.epilog or "", parser.description or ""):
            out += [(f"`{where} --help`", line) for line in _example_lines(text)]
    return out


def _doc_examples() -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        for block in CODE_BLOCK.findall(path.read_text(encoding="utf-8")):
            out += [(str(path.relative_to(REPO)), line) for line in _example_lines(block)]
    return out


def _doc_python_scripts() -> list[tuple[str, str]]:
    out = set()
    for path in DOCS:
        for block in CODE_BLOCK.findall(path.read_text(encoding="utf-8")):
            for script in re.findall(r"^\s*(?:\$ )?python3? ((?:[\w.-]+/)*[\w.-]+\.py)\b", block, flags=re.M):
                out.add((str(path.relative_to(REPO)), script))
    return sorted(out)


HELP_EXAMPLES = _help_examples()
DOC_EXAMPLES = _doc_examples()
ALL_EXAMPLES = HELP_EXAMPLES + DOC_EXAMPLES


def _created_ids() -> set[str]:
    """Model ids the examples themselves create (``scdl models import ... --id NAME``)."""
    ids = set()
    for _where, line in ALL_EXAMPLES:
        argv = _tokens(_split_optional(line)[0])
        if "--id" in argv[:-1]:
            ids.add(argv[argv.index("--id") + 1])
    return ids


def _parse(argv: list[str]) -> argparse.Namespace:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            return build_parser().parse_args(argv)
        except SystemExit as exc:
            raise AssertionError(f"argparse refused it (exit {exc.code}): {err.getvalue().strip()}") from None


def _repo_paths(argv: list[str]) -> list[str]:
    """Arguments that name something inside this repository (their first component is a top-level entry)."""
    top = {p.name for p in REPO.iterdir() if not p.name.startswith(".")} - {"runs"}
    out = []
    for token in argv:
        value = token.split("=", 1)[1] if token.startswith("--") and "=" in token else token
        if "/" in value and value.split("/", 1)[0] in top:
            out.append(value)
    return out


def test_examples_were_found():
    where = {w for w, _ in HELP_EXAMPLES}
    for command in ("segment", "evaluate", "models", "train", "demo", "phantom", "synth", "bench ssl"):
        assert f"`scdl {command} --help`" in where, f"scdl {command} --help shows no example"
    assert len(DOC_EXAMPLES) >= 30 and any(w == "README.md" for w, _ in DOC_EXAMPLES)
    assert len(_doc_python_scripts()) >= 2


@pytest.mark.parametrize("where, line", ALL_EXAMPLES, ids=[f"{w}: {line}"[:120] for w, line in ALL_EXAMPLES])
def test_example_parses_and_names_real_models_tables_and_files(where, line):
    from scdl.labels.table import LabelTable
    from scdl.models.catalog import load_catalog

    core, optional_flags = _split_optional(line)
    argv = _tokens(core)
    args = _parse(argv)
    assert getattr(args, "func", None) is not None, f"{where}: `{line}` names no command"
    parsers = dict(_subparsers(build_parser()))
    command = max((p for p in parsers if f"scdl {' '.join(argv)} ".startswith(p + " ")), key=len)
    known = {o for action in parsers[command]._actions for o in action.option_strings}
    for flag in optional_flags:
        assert flag in known, f"{where}: `{line}`: {command} has no option {flag}"
    catalog = {str(m["id"]) for m in load_catalog()["models"]} | _created_ids()
    for attr in MODEL_ATTRS:
        value = getattr(args, attr, None)
        if isinstance(value, str) and value and not _is_path(value) and not _is_placeholder(value):
            assert value in catalog, f"{where}: `{line}`: {value!r} is not a model id (catalog: {sorted(catalog)})"
    tables = set(LabelTable.bundled_names()) | {"init"}
    for attr in TABLE_ATTRS:
        value = getattr(args, attr, None)
        if isinstance(value, str) and value and not _is_path(value) and not value.endswith(".csv") \
                and not _is_placeholder(value):
            assert value in tables, f"{where}: `{line}`: {value!r} is not a bundled label table"
    for path in _repo_paths(argv):
        assert (REPO / path).exists(), f"{where}: `{line}`: {path} is not in the repository"


@pytest.mark.parametrize("where, script", _doc_python_scripts())
def test_doc_python_scripts_exist(where, script):
    assert (REPO / script).is_file(), f"{where}: python {script}: no such script in the repository"
