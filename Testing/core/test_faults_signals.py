"""SIGINT / SIGTERM during each phase of ``scdl segment`` and ``scdl demo`` (issue 15).

The real command runs in a child process (``pause_child.py``: ``scdl.cli.main.main`` that waits at one phase, so the
signal lands exactly there). Each case asserts the documented exit status 130, ONE ``cancelled:`` line on stderr
and no traceback, the outputs that existed before unchanged, and no temporary (``.partial-``) file beside them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
OLD = b"the previous result"


def _run_and_signal(argv: list[str], phase: str, sig: int, tmp_path: Path) -> tuple[int, str, list[dict]]:
    env = {**os.environ, "SCDL_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, str(HERE / "pause_child.py"), phase, *argv], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events: list[dict] = []
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("{"):
                events.append(json.loads(line))
                if events[-1].get("event") == "paused":
                    # while it waits: the temporary file of the write phase is there
                    for partial in events[-1]["partials"]:
                        assert Path(partial).exists() and ".partial-" in Path(partial).name
                    proc.send_signal(sig)
                    break
        else:
            raise AssertionError("the child never reached the phase")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    events += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "paused" and e["phase"] == phase for e in events), (events[-3:], err[-2000:])
    return proc.returncode, err, events


def _assert_cancelled(code: int, err: str, kept: list[Path]) -> None:
    assert code == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith(("error:", "cancelled"))]
    assert lines == ["cancelled: nothing was written."], err[-3000:]
    for path in kept:
        assert path.read_bytes() == OLD, path
    for folder in {p.parent for p in kept}:
        assert not [p.name for p in folder.iterdir() if ".partial-" in p.name]


SEGMENT_CASES = [(phase, sig) for phase in ("read", "preprocess", "infer", "postprocess", "write")
                 for sig in (signal.SIGINT, signal.SIGTERM)]


@pytest.mark.parametrize("phase, sig", SEGMENT_CASES, ids=[f"{p}-{s.name}" for p, s in SEGMENT_CASES])
def test_segment_cancelled_in_each_phase(phase: str, sig: signal.Signals, patient_a_ct: Path, tiny_model: Path,
                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target, preview = out / "seg.nii.gz", out / "seg.png"
    for path in (target, preview):
        path.write_bytes(OLD)
    code, err, events = _run_and_signal(
        ["segment", str(patient_a_ct), "-o", str(target), "--preview", str(preview), "--model", str(tiny_model),
         "--device", "cpu", "--progress", "json"], phase, sig, tmp_path)
    _assert_cancelled(code, err, [target, preview])
    assert not any(e.get("phase") == "done" for e in events)


DEMO_CASES = [("read", signal.SIGTERM), ("preprocess", signal.SIGINT), ("infer", signal.SIGTERM),
              ("score", signal.SIGINT), ("write", signal.SIGTERM), ("write", signal.SIGINT)]


@pytest.mark.parametrize("phase, sig", DEMO_CASES, ids=[f"{p}-{s.name}" for p, s in DEMO_CASES])
def test_demo_cancelled_in_each_phase(phase: str, sig: signal.Signals, tiny_model: Path, tmp_path: Path) -> None:
    from scdl.cli.demo import NIFTI, OVERLAY, SCORES, SEGMENTATION

    out = tmp_path / "demo"
    out.mkdir()
    kept = [out / name for name in (SEGMENTATION, NIFTI, OVERLAY, SCORES)]
    for path in kept:
        path.write_bytes(OLD)
    code, err, events = _run_and_signal(["demo", "--out", str(out), "--model", str(tiny_model), "--device", "cpu",
                                         "--progress", "json"], phase, sig, tmp_path)
    _assert_cancelled(code, err, kept)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in kept)
