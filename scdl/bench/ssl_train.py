"""One benchmark training run: ``python -m scdl train`` in a child process (the user's code path).

The child gets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` = the benchmark's thread count (and
``OMP_WAIT_POLICY=PASSIVE`` unless set, see :data:`WAIT_POLICY`), reports JSON lines
(``--progress json``) that are parsed here for progress and timing, and writes its stderr to
``RUN_DIR/train.log``. A child process per run keeps runs independent (memory, thread pools, RNG state)
and makes the timing that of a real ``scdl train``, start-up included.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from scdl.errors import Cancelled, ScdlError
from scdl.io.atomic import atomic_write_text
from scdl.events import parse_event
from scdl.progress import ProgressReporter
from scdl.training import runfolder

LOG_NAME = runfolder.CHILD_LOG          # the names are scdl.training.runfolder's
CONFIG_NAME = runfolder.CHILD_CONFIG

#: OpenMP threads sleep instead of spinning while they wait (unless the caller's environment says otherwise).
#: Measured on the shared 2-core machine (load average 6.3), one CPS step, 32³ patches, width 4, 2 threads:
#: 4-16 s with spinning threads (the default), 1.0-1.3 s passive, 0.7-0.9 s with 1 thread.
WAIT_POLICY = "PASSIVE"


@dataclass
class TrainOutcome:
    """What one training child reported.

    Attributes:
        model_dir: the model package it wrote.
        wall_s: seconds from start to exit of the child (start-up, cache check, training, validation, packaging).
        train_s: the trainer's own training time (its ``elapsed_s``).
        cpu_s: user + system CPU seconds of the child and its data-loader processes.
        it_per_s: mean iterations per second over the logged windows.
        train_dice: the end-of-run Dice on the labeled training cases (the trainer's validation), per class.
        load_avg: the 1-minute load average when the child started and when it ended.
    """

    model_dir: Path
    wall_s: float
    train_s: Optional[float]
    cpu_s: float
    it_per_s: Optional[float]
    train_dice: dict[str, Optional[float]]
    load_avg: tuple[float, float]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def check_training_config(train_config: dict[str, Any], framework: str, seed: int, iterations: int,
                          overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Resolve the child's configuration here, before any work, exactly as ``scdl train`` will (preset ``cpu``,
    then ``train_config``, then the flags, then ``overrides``), so that a bad setting stops the benchmark
    with one :class:`ScdlError` before the cohort is generated. Returns the resolved configuration."""
    from scdl.method.config import SCDLConfig
    from scdl.training.config import deep_update, resolve_config
    from scdl.training.step import StepConfig

    values = deep_update(train_config, {"framework": framework, "seed": int(seed), "iterations": int(iterations)})
    config = resolve_config("cpu", None, values, overrides)
    StepConfig.from_dict(config["step"])
    SCDLConfig.from_dict(config["scdl"])
    return config


def train_command(manifest: Path, run_dir: Path, config_file: Path, framework: str, seed: int, iterations: int,
                  cache_dir: Path, device: str, overrides: tuple[str, ...] = ()) -> list[str]:
    """The child's command line (``--preset cpu`` + the benchmark's config file + flags)."""
    cmd = [sys.executable, "-m", "scdl", "train", "--cohort", str(manifest), "--out", str(run_dir),
           "--preset", "cpu", "--config", str(config_file), "--framework", framework, "--seed", str(seed),
           "--iterations", str(iterations), "--cache-dir", str(cache_dir), "--device", device, "--progress", "json"]
    for item in overrides:
        cmd += ["--set", item]
    return cmd


def run_training(manifest: Path, run_dir: Path, train_config: dict[str, Any], framework: str, seed: int,
                 iterations: int, cache_dir: Path, *, device: str = "cpu", threads: int = 2,
                 overrides: tuple[str, ...] = (), progress: Optional[ProgressReporter] = None, label: str = "train") -> TrainOutcome:
    """Train one model in a child process; return where its package is and how long it took.

    ``run_dir`` must not hold a run yet (the trainer refuses to overwrite one). On a non-zero exit an
    :class:`ScdlError` names the log; on cancellation (``progress.cancelled``) the child gets SIGTERM, is
    waited for, and :class:`Cancelled` is raised.
    """
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    folder = runfolder.RunFolder(run_dir)
    config_file = folder.child_config
    atomic_write_text(config_file, json.dumps(train_config, indent=1, sort_keys=True) + "\n")
    cmd = train_command(manifest, run_dir, config_file, framework, seed, iterations, cache_dir, device, overrides)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    cpu0, t0 = _children_cpu(), time.monotonic()
    load0 = os.getloadavg()[0]
    model_dir: Optional[str] = None
    train_s: Optional[float] = None
    rates: list[float] = []
    train_dice: dict[str, Optional[float]] = {}
    phase = progress.phase(label, iterations) if progress is not None and progress.mode != "none" else None
    done = 0
    with open(folder.child_log, "w", encoding="utf-8") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                event = parse_event(line)
                if event is None:
                    continue
                if event.get("phase") == "train" and phase is not None:
                    step = int(event.get("done") or 0)
                    if step > done:
                        phase.advance(step - done)
                        done = step
                elif event.get("event") == "iteration" and event.get("it_per_s"):
                    rates.append(float(event["it_per_s"]))
                elif event.get("event") == "validation":
                    train_dice = dict(event.get("dice") or {})
                elif event.get("phase") == "done":
                    model_dir = event.get("output")
                    train_s = event.get("elapsed_s")
                if progress is not None and progress.cancelled:
                    proc.terminate()
            proc.wait()
        except BaseException:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
            raise
        finally:
            if phase is not None:
                phase.close()
    if progress is not None and progress.cancelled:
        raise Cancelled("benchmark cancelled")
    wall = time.monotonic() - t0
    if proc.returncode != 0 or not model_dir:
        tail = folder.child_log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
        raise ScdlError(f"training failed (exit {proc.returncode}): {tail[0] if tail else 'no output'}",
                        folder.child_log, "read the log; fix the settings or rerun the benchmark (finished runs "
                                            "are reused).")
    return TrainOutcome(model_dir=Path(model_dir).resolve(), wall_s=wall, train_s=None if train_s is None else float(train_s),
                        cpu_s=_children_cpu() - cpu0, it_per_s=(sum(rates) / len(rates)) if rates else None,
                        train_dice=train_dice, load_avg=(load0, os.getloadavg()[0]))
