"""The run's own records: ``log.csv`` (one row per logged iteration), ``validation.csv`` and ``curves.png``.

Rows are kept in memory and the files are rewritten atomically at every checkpoint, validation and at the
end, so a killed run leaves complete files. On resume the rows after the checkpoint's iteration (logged
but lost with the kill) are dropped and the run continues the files.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Sequence

from scdl.io.atomic import atomic_write_text
from scdl.training import runfolder

LOG_NAME = runfolder.LOG
VAL_NAME = runfolder.VALIDATION
CURVES_NAME = runfolder.CURVES
_FIRST = ("iteration", "elapsed_s", "lr", "it_per_s", "data_wait")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def _to_csv(rows: Sequence[dict[str, Any]], first: Sequence[str]) -> str:
    keys: list[str] = [k for k in first if any(k in r for r in rows)]
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(keys)
    for row in rows:
        writer.writerow([_fmt(row.get(k)) for k in keys])
    return buf.getvalue()


def _read_csv(path: Path, upto: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            parsed: dict[str, Any] = {}
            for key, text in row.items():
                if text in ("", None):
                    parsed[key] = float("nan") if key != "iteration" else None
                    continue
                try:
                    parsed[key] = int(text) if key == "iteration" else float(text)
                except ValueError:
                    parsed[key] = text
            if parsed.get("iteration") is not None and parsed["iteration"] <= upto:
                rows.append(parsed)
    return rows


class RunLog:
    """Training and validation rows of a run folder."""

    def __init__(self, run_dir: os.PathLike | str, class_names: Sequence[str]):
        self.run_dir = Path(run_dir)
        self.class_names = list(class_names)
        self.rows: list[dict[str, Any]] = []
        self.val_rows: list[dict[str, Any]] = []

    def resume(self, iteration: int) -> None:
        """Reload the files of an interrupted run, keeping the rows up to ``iteration``."""
        self.rows = _read_csv(self.run_dir / LOG_NAME, iteration)
        self.val_rows = _read_csv(self.run_dir / VAL_NAME, iteration)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(dict(row))

    def add_validation(self, iteration: int, result: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {"iteration": int(iteration), "mean_dice": result["mean_dice"]}
        for name, value in zip(self.class_names, result["dice"]):
            row[f"dice_{name}"] = value
        for name, value in zip(self.class_names, result.get("found", [])):
            row[f"found_{name}"] = value        # share of the cases with the organ where it was predicted
        self.val_rows.append(row)
        return row

    def flush(self, curves: bool = True) -> None:
        """Rewrite log.csv, validation.csv and (optionally) curves.png atomically."""
        atomic_write_text(self.run_dir / LOG_NAME, _to_csv(self.rows, _FIRST))
        if self.val_rows:
            atomic_write_text(self.run_dir / VAL_NAME, _to_csv(self.val_rows, ("iteration", "mean_dice")))
        if curves and self.rows:
            from scdl.viz.curves import plot_training_curves

            plot_training_curves(self.rows, self.val_rows, self.run_dir / CURVES_NAME)
