"""The jobs' process seam: a job takes its child process from ``spawn`` (a ``ChildProcessFactory``), so any object
of the ``ChildProcessLike`` shape runs it: here a scripted stand-in, no process."""

from __future__ import annotations

import json
from typing import Optional, Sequence

from SCDLSlicerLib.jobs import ModelsJob, SegmentJob
from SCDLSlicerLib.process import ChildProcessLike


class ScriptedChild:
    """Hands out prepared lines, one batch per poll, then exits with ``returncode``."""

    def __init__(self, args: Sequence[str], env: Optional[dict] = None, cwd: Optional[str] = None,
                 backend: str = "auto", kill_grace_s: float = 5.0, env_updates: Optional[dict] = None,
                 batches: Sequence[Sequence[str]] = (), returncode: int = 0):
        self.args = list(args)
        self.backend = "popen"
        self._batches = [list(b) for b in batches]
        self._code = returncode
        self.returncode: Optional[int] = None
        self.cancel_requested = False
        self.started = False

    def start(self) -> "ScriptedChild":
        self.started = True
        return self

    def poll(self) -> list[str]:
        if self._batches:
            return self._batches.pop(0)
        self.returncode = self._code
        return []

    def cancel(self) -> None:
        self.cancel_requested = True

    @property
    def finished(self) -> bool:
        return self.returncode is not None

    @property
    def running(self) -> bool:
        return self.started and not self.finished


def test_a_job_runs_whatever_child_spawn_builds() -> None:
    made: list[ScriptedChild] = []

    def spawn(args, **kwargs) -> ChildProcessLike:
        lines = [json.dumps({"event": "phase", "name": "infer", "total": 2}), "plain text"]
        made.append(ScriptedChild(args, batches=[lines], **kwargs))
        return made[-1]

    job = SegmentJob("in.nii.gz", "out.nii.gz", model="m", spawn=spawn).start()
    assert made and made[0].started and "segment" in made[0].args
    assert job.wait(timeout=5) == 0
    assert job.succeeded and job.error_message() is None


def test_a_failed_or_cancelled_stand_in_reads_as_such() -> None:
    job = ModelsJob("verify", "x", spawn=lambda args, **kw: ScriptedChild(args, returncode=2, **kw)).start()
    job.wait(timeout=5)
    assert not job.succeeded and job.error_message()
    job = ModelsJob("verify", "x", spawn=lambda args, **kw: ScriptedChild(args, batches=[[]] * 3, **kw)).start()
    job.cancel()
    job.wait(timeout=5)
    assert job.cancelled and job.error_message() is None
