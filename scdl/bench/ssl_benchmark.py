"""The imbalanced semi-supervised benchmark: every configuration x seed trained and scored on one cohort.

Steps of :func:`run_benchmark`:

1. the phantom cohort of the settings (``OUT/cohort-<key>/``: generated once, reused);
2. for each seed, for each configuration (seed-major, so a stopped benchmark has whole seeds): a
   ``python -m scdl train`` child (``OUT/runs/<config>-seed<k>-<key>/``), then ``segment_image`` on every
   test CT and Dice per class against its reference; the scores go to ``scores.json`` in the run folder;
3. aggregation (mean ± std over seeds, :mod:`scdl.bench.ssl_aggregate`) and the outputs
   ``OUT/results.json``, ``OUT/table.md`` and ``OUT/dice.png``.

A run whose ``scores.json`` exists with the same key is reused, so an interrupted benchmark continues where
it stopped when the same command is run again; a run folder without scores (interrupted) is started over.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from scdl.bench.ssl_aggregate import aggregate, class_means, paired_comparisons, smallest_classes, variant_comparisons
from scdl.bench.ssl_cohort import BenchCohort, class_volumes_ml, ensure_cohort
from scdl.bench.ssl_configs import BenchConfiguration, variant_base
from scdl.bench.ssl_report import CHART_NAME, RESULTS_NAME, TABLE_NAME, json_safe, write_chart, write_results, write_table
from scdl.bench.ssl_settings import SSLBenchSettings
from scdl.errors import ScdlError
from scdl.io.atomic import atomic_write_text
from scdl.events import RunEvent
from scdl.progress import ProgressReporter, SilentProgress

SCORES_NAME = "scores.json"
LABEL_TABLE = "synapse"


def cohort_description(cohort: BenchCohort, settings: SSLBenchSettings) -> dict[str, Any]:
    """The ``cohort`` entry of results.json: folder, manifest, key, test cases; for the anatomy cohort also the
    split by anatomy, the anatomies of the test cases and the generation cost (from its provenance)."""
    info: dict[str, Any] = {"kind": settings.cohort, "folder": str(cohort.folder), "manifest": str(cohort.manifest),
                            "key": settings.cohort_key(), "test_cases": [c.name for c in cohort.test_cases]}
    if settings.cohort == "anatomy":
        from scdl.bench.ssl_anatomy import read_provenance

        prov = read_provenance(cohort.folder) or {}
        info.update(split_by="anatomy", train_anatomies=list(settings.train_anatomies),
                    test_anatomies=list(settings.test_anatomies), generation=prov.get("generation"),
                    real_test_cases=[c["name"] for c in prov.get("cases", []) if c.get("real")],
                    anatomy_of={c["name"]: c["anatomy"] for c in prov.get("cases", [])})
    return info


def run_folder(out: Path, settings: SSLBenchSettings, configuration: BenchConfiguration, seed: int) -> Path:
    return Path(out) / "runs" / f"{configuration.name}-seed{seed}-{settings.run_key(configuration)}"


def _load_scores(path: Path, key: str) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("key") == key else None


def run_one(out: Path, settings: SSLBenchSettings, configuration: BenchConfiguration, seed: int,
            cohort: BenchCohort, classes: Sequence[str], progress: ProgressReporter,
            unscored: Sequence[str] = ()) -> dict[str, Any]:
    """Train and score one configuration x seed (or reuse its finished scores); return its record.

    ``unscored``: classes that no test reference holds (e.g. the oesophagus when no test anatomy has one); their
    Dice (0 for a false positive, NaN otherwise) says nothing about the organ and is set to NaN.
    """
    from scdl.bench.ssl_score import score_model
    from scdl.bench.ssl_train import run_training

    key = settings.run_key(configuration)
    run_dir = run_folder(out, settings, configuration, seed)
    cached = _load_scores(run_dir / SCORES_NAME, key)
    if cached is not None:
        cached["reused"] = True
        return cached
    if run_dir.exists():                        # an interrupted run of this benchmark: start it over
        from scdl.training.runfolder import RunFolder

        RunFolder(run_dir).check_unlocked()     # unless another benchmark in the same --out is training it now
        shutil.rmtree(run_dir)
    outcome = run_training(cohort.manifest, run_dir, settings.train_config(configuration), configuration.framework,
                           seed, settings.iterations, Path(out) / "cache", device=settings.device,
                           threads=settings.threads, overrides=settings.overrides, progress=progress,
                           label=f"train {configuration.name} seed {seed}")
    scores = score_model(outcome.model_dir, cohort.test_cases, device=settings.device,
                         sw_batch_size=settings.sw_batch_size, progress=progress)
    if list(scores.classes) != list(classes):
        raise ScdlError(f"the trained model's classes {scores.classes} are not the benchmark's {list(classes)}.",
                        outcome.model_dir, f"train with the {LABEL_TABLE} label table (remove --set labels=...).")
    dice = np.array(scores.dice, dtype=np.float64)
    for name in unscored:
        dice[:, list(classes).index(name)] = np.nan
    record = {
        "config": configuration.name, "seed": int(seed), "key": key, "run_dir": str(run_dir),
        "model_dir": str(outcome.model_dir), "iterations": settings.iterations,
        "cases": scores.cases, "dice_per_case": dice.tolist(), "class_dice": class_means(dice).tolist(),
        "train": {"wall_s": outcome.wall_s, "train_s": outcome.train_s, "cpu_s": outcome.cpu_s,
                  "it_per_s": outcome.it_per_s, "load_avg": list(outcome.load_avg),
                  "train_labeled_dice": outcome.train_dice},
        "score_s": scores.seconds, "score_cpu_s": scores.cpu_s, "reused": False,
    }
    atomic_write_text(run_dir / SCORES_NAME, json.dumps(json_safe(record), indent=1) + "\n")
    return record


def run_benchmark(out: os.PathLike | str, settings: SSLBenchSettings, configurations: Sequence[BenchConfiguration],
                  *, progress: Optional[ProgressReporter] = None, command: str = "") -> dict[str, Any]:
    """Run (or complete) the benchmark in ``out``; write results.json, table.md and dice.png; return the results.

    Args:
        out: output folder (created). Holds the cohort, the preprocessing cache, one folder per run, and the
            three result files.
        settings: :class:`SSLBenchSettings`.
        configurations: what to compare (:func:`scdl.bench.ssl_configs.parse_configs`).
        progress: :class:`scdl.progress.Progress` (phases, ``run`` events, cancellation) or None.
        command: the command line that reproduces this benchmark (written into the table).
    """
    import torch

    from scdl.labels.table import LabelTable

    progress = progress if progress is not None else SilentProgress()
    start = time.monotonic()
    load_start = os.getloadavg()[0]
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ScdlError("exists and is not a folder.", out, "choose a folder for the benchmark's outputs.")
    from scdl.bench.ssl_train import check_training_config

    for configuration in configurations:         # a bad setting fails here, before anything is written
        check_training_config(settings.train_config(configuration), configuration.framework, settings.seeds[0],
                              settings.iterations, settings.overrides)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(settings.threads)

    cohort_start = time.monotonic()
    cohort = ensure_cohort(out, settings, progress)
    cohort_s = time.monotonic() - cohort_start
    table = LabelTable.load(LABEL_TABLE)
    class_map = {int(e.value): str(e.name) for e in table.entries if int(e.value) != 0}
    classes = [class_map[v] for v in sorted(class_map)]
    volumes = class_volumes_ml(cohort.test_cases, class_map)
    # a class that no test reference holds is not scored (the phantoms hold every organ in every case)
    unscored = [name for name in classes if not volumes[name] > 0]
    small = smallest_classes({n: v for n, v in volumes.items() if n not in unscored}, settings.small_fraction)
    cohort_info = cohort_description(cohort, settings)
    cohort_info["load_or_generate_s"] = cohort_s
    progress.message(f"cohort {cohort.folder} ({len(cohort.test_cases)} test cases"
                     + (f"; generated in {cohort_info['generation']['wall_s']:.1f} s"
                        if cohort_info.get("generation") else "") + f"); smallest classes: {', '.join(small)}"
                     + (f"; not in any test case, not scored: {', '.join(unscored)}" if unscored else ""))

    plan = [(seed, c) for seed in settings.seeds for c in configurations]
    records: list[dict[str, Any]] = []
    with progress.phase("benchmark", len(plan)) as phase:
        for seed, configuration in plan:
            record = run_one(out, settings, configuration, seed, cohort, classes, progress, unscored)
            records.append(record)
            fg = aggregate([record], classes, small)[configuration.name]
            progress.emit(RunEvent(config=configuration.name, seed=seed, reused=record["reused"],
                                   mean_dice=fg["foreground"]["mean"], small_dice=fg["small"]["mean"],
                                   train_wall_s=record["train"]["wall_s"], score_s=record["score_s"]))
            progress.message(f"{configuration.name} seed {seed}: foreground Dice {fg['foreground']['mean']:.3f}, "
                             f"smallest {len(small)} {fg['small']['mean']:.3f}"
                             + (" (reused)" if record["reused"] else
                                f" (train {record['train']['wall_s']:.0f} s, score {record['score_s']:.0f} s)"))
            phase.advance()

    summary = aggregate(records, classes, small)
    fresh = [r for r in records if not r["reused"]]
    results = {
        "benchmark": "ssl",
        "command": command,
        "settings": settings.to_dict(),
        "cohort": cohort_info,
        "configurations": {c.name: {"framework": c.framework, "scdl": dict(c.scdl), "description": c.description}
                           for c in configurations},
        "classes": classes,
        "class_volumes_ml": volumes,
        "small_classes": small,
        "unscored_classes": unscored,
        "runs": records,
        "summary": summary,
        # SCDL against its host, paired by seed (same data order and initialisation): intervals and the
        # smallest effect this run could detect
        "paired": paired_comparisons(records, classes, small, reference="cps"),
        # knob variants (cps-scdl@lam=0.2, ...) against their base with the paper's values
        "paired_variants": variant_comparisons(records, classes, small,
                                               {c.name: variant_base(c.name) for c in configurations
                                                if variant_base(c.name)}),
        "timing": {"total_wall_s": time.monotonic() - start, "runs": len(records), "runs_reused": len(records) - len(fresh),
                   "train_wall_s": sum(r["train"]["wall_s"] for r in fresh),
                   "score_s": sum(r["score_s"] for r in fresh),
                   "load_avg_start": load_start, "load_avg_end": os.getloadavg()[0]},
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "platform": platform.platform()},
    }
    write_results(out / RESULTS_NAME, results)
    results["table_markdown"] = write_table(out / TABLE_NAME, results)
    write_chart(out / CHART_NAME, results)
    results["outputs"] = {"results": str(out / RESULTS_NAME), "table": str(out / TABLE_NAME),
                          "chart": str(out / CHART_NAME)}
    return results
