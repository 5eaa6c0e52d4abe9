"""Steps 2 and 3 of the release recipe: calibration (iterations per second on this machine), the iteration
budget, and ``scdl train`` with JSON progress, stopped at a hard time limit and packaged where it stopped."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from scdl.events import parse_event
from scdl.release.commands import fail, log, scdl_command
from scdl.training.runfolder import RunFolder

#: Iterations of ``--smoke``.
SMOKE_ITERATIONS = 4


def run_train(manifest: Path, config: Path, run_dir: Path, iterations: int, device: str, cache: Path,
              deadline_s: Optional[float] = None, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``scdl train`` (JSON progress), echo a line per logged iteration, stop it at ``deadline_s``.

    Returns the parsed ``done`` line (``output``, ``iteration``, ``elapsed_s``) plus ``stopped`` and
    ``last_iteration``; raises SystemExit if training failed.
    """
    cmd = scdl_command("train", "--cohort", str(manifest), "--out", str(run_dir), "--config", str(config),
                       "--iterations", str(iterations), "--device", device, "--cache-dir", str(cache),
                       "--progress", "json", *extra)
    return stream_train(cmd, deadline_s)


def stream_train(cmd: list[str], deadline_s: Optional[float]) -> dict[str, Any]:
    """Run a ``scdl train`` command line (JSON progress) and echo it; SIGTERM it after ``deadline_s`` seconds.
    Returns what :func:`run_train` returns."""
    import threading

    log("running: scdl " + " ".join(cmd[3:]))
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
    state: dict[str, Any] = {"stopped": False, "last_iteration": 0, "done": None, "device": None}

    def watchdog() -> None:
        while proc.poll() is None:
            if deadline_s is not None and time.monotonic() - start > deadline_s and not state["stopped"]:
                log(f"hard time limit ({deadline_s / 60:.1f} min) reached: stopping training (SIGTERM)")
                state["stopped"] = True
                proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)

    guard = threading.Thread(target=watchdog, daemon=True)
    guard.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        event = parse_event(line)
        if event is None:
            continue
        if event.get("event") == "start":
            state["device"] = event.get("device")
        elif event.get("event") == "iteration":
            state["last_iteration"] = int(event["iteration"])
            loss = (event.get("loss") or {}).get("total")
            log(f"iteration {event['iteration']}/{event['iterations']}  loss {loss:.4f}  "
                f"{event.get('it_per_s', 0):.3f} it/s  ETA {event.get('eta_s', 0) / 60:.1f} min")
        elif event.get("event") == "checkpoint":
            state["last_iteration"] = int(event["iteration"])
        elif event.get("event") == "validation":
            log(f"validation mean Dice {event.get('mean_dice')}")
        elif event.get("phase") == "done":
            state["done"] = event
    code = proc.wait()
    guard.join(timeout=2)
    if code == 130 and state["stopped"]:
        return {"stopped": True, "last_iteration": state["last_iteration"], "device": state["device"]}
    if code != 0 or state["done"] is None:
        raise fail(f"scdl train failed (exit {code}); command: {' '.join(cmd)}")
    return {**state["done"], "stopped": False, "last_iteration": state["last_iteration"], "device": state["device"]}


def measure_speed(manifest: Path, config: Path, out: Path, iterations: int, device: str, cache: Path) -> float:
    """Iterations per second of this recipe on this machine: the mean rate after the first logged window
    (which holds the warm-up), from the run's own ``log.csv`` (iteration, elapsed_s)."""
    import csv

    run_dir = out / "calibration"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    every = max(1, iterations // 4)
    run_train(manifest, config, run_dir, iterations, device, cache,
              extra=("--set", f"log_every={every}", "--set", f"checkpoint_every={iterations}",
                     "--set", "validation.every=-1"))        # a speed measurement: no validation pass
    with RunFolder(run_dir).log.open(newline="", encoding="utf-8") as handle:
        rows = [(int(r["iteration"]), float(r["elapsed_s"])) for r in csv.DictReader(handle)]
    (it0, t0), (it1, t1) = rows[0], rows[-1]
    if it1 <= it0 or t1 <= t0:
        return it1 / max(t1, 1e-9)
    return (it1 - it0) / (t1 - t0)


def plan_iterations(it_per_s: float, minutes: float, budget: dict[str, Any]) -> int:
    """Iterations that fill ``minutes`` at ``it_per_s`` (95 %), clamped to the recipe's bounds."""
    planned = int(it_per_s * minutes * 60.0 * 0.95)
    return int(min(max(planned, int(budget["min_iterations"])), int(budget["max_iterations"])))


def packaged_run(run_dir: Path) -> dict[str, Any]:
    """What :func:`train` returns, for a run that already finished (``--package-only``)."""
    from scdl.models.package import ModelPackage

    folder = RunFolder(run_dir)
    if not (folder.model_dir / "card.json").is_file():
        raise fail(f"{folder.model_dir}: no packaged model of a finished run (train first, without --package-only).")
    prov = ModelPackage.load(folder.model_dir, verify=True).card["provenance"]
    reached = int(prov.get("iterations") or 0)
    planned = int(json.loads(folder.config.read_text(encoding="utf-8")).get("iterations") or reached)
    result: dict[str, Any] = {"iteration": reached, "stopped": False, "device": None}
    if reached < planned:       # the recipe stopped it at the hard time limit and packaged it there
        result.update(stopped_at_limit=True, planned_iterations=planned)
    return result


def init_identity(init: Optional[str]) -> Optional[str]:
    """``<id> <version>`` of the package a stage started from (``--init``), or None for a fresh start."""
    if not init:
        return None
    card_file = Path(init) / "card.json"
    if card_file.is_file():
        card = json.loads(card_file.read_text(encoding="utf-8"))
        return f"{card.get('id')} {card.get('version')}"
    return str(init)


def train(manifest: Path, config: Path, out: Path, iterations: int, device: str, cache: Path,
          deadline_s: Optional[float], extra: Sequence[str] = ()) -> dict[str, Any]:
    """The training run (``extra``: more ``scdl train`` arguments, e.g. ``--init``); a run stopped at the hard
    limit is packaged at the iteration it reached."""
    run_dir = out / "train"
    if RunFolder(run_dir).holds_run():
        raise fail(f"{run_dir}: holds an earlier run; choose a new --out folder.")
    result = run_train(manifest, config, run_dir, iterations, device, cache, deadline_s, extra=tuple(extra))
    if result["stopped"]:
        from scdl.training import checkpoint as ckpt

        reached = int(ckpt.load_checkpoint(RunFolder(run_dir).checkpoint, map_location="cpu")["iteration"])
        log(f"packaging the networks of iteration {reached} (of {iterations} planned)")
        first_device = result.get("device")
        result = stream_train(scdl_command("train", "--resume", str(run_dir), "--iterations", str(reached),
                                           "--device", device, "--progress", "json"), None)
        result["device"] = first_device or result.get("device")
        result["stopped_at_limit"] = True
        result["planned_iterations"] = iterations
    return result
