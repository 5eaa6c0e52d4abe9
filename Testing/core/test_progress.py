"""scdl.progress: the one parser of the JSON-line stream and the one silent reporter (issue 14)."""

from __future__ import annotations


def test_parse_event() -> None:
    """The one parser of the JSON-line stream (scdl.progress.parse_event)."""
    from scdl.progress import parse_event

    assert parse_event('{"event": "iteration", "iteration": 3}\n') == {"event": "iteration", "iteration": 3}
    assert parse_event('  {"phase": "done"}  ') == {"phase": "done"}
    for line in ("", "warning: x", "{not json", '{"a": 1', "[1, 2]", "3", "null"):
        assert parse_event(line) is None, line


def test_silent_progress(capsys) -> None:
    """SilentProgress says nothing at all (Progress("none") still prints messages and warnings), counts the
    stop requests of its source and never raises mid-phase."""
    from scdl.progress import Progress, SilentProgress

    source = Progress("json")
    silent = SilentProgress(source)
    assert silent.mode == "none" and not silent.cancelled
    silent.message("m")
    silent.warning("w")
    silent.event("e", x=1)
    silent.done(output="x")
    with silent.phase("p", 3) as phase:
        phase.advance()
    source.request_cancel()
    assert silent.cancelled
    silent.check_cancelled()                    # no raise
    with silent.phase("p", 2) as phase:
        phase.advance()
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert not SilentProgress().cancelled


def test_one_silent_reporter() -> None:
    """No other silent stand-in in the core: the trainer and the benchmark use SilentProgress."""
    import ast
    from pathlib import Path

    from scdl.training.trainer import Trainer

    repo = Path(__file__).resolve().parents[2]
    stand_ins = []
    for path in (repo / "scdl").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name != "SilentProgress" and any(
                    isinstance(b, ast.Assign) and any(getattr(t, "id", "") == "mode" for t in b.targets)
                    for b in node.body):
                stand_ins.append(f"{path.relative_to(repo)}:{node.name}")
    assert stand_ins == []
    assert type(Trainer({}, None, "/tmp/x").progress).__name__ == "SilentProgress"
