"""scdl.progress: the one parser of the JSON-line stream and the one silent reporter (issue 14)."""

from __future__ import annotations


def test_parse_event() -> None:
    """The one parser of the JSON-line stream (scdl.progress.parse_event)."""
    from scdl.progress import parse_event

    assert parse_event('{"event": "iteration", "iteration": 3}\n') == {"event": "iteration", "iteration": 3}
    assert parse_event('  {"phase": "done"}  ') == {"phase": "done"}
    for line in ("", "warning: x", "{not json", '{"a": 1', "[1, 2]", "3", "null"):
        assert parse_event(line) is None, line
