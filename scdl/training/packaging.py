"""Packaging a training run: the model card of the run and the model package in ``RUN_DIR/model``.

:func:`training_card` builds the card from plain facts of the run (no trainer needed, so it is tested on
its own); :func:`package_run` takes the frozen record of the finished run (``scdl.training.record``), picks
the networks (those of the best validation in ``best.pt`` when there is one, else the last) and writes the
package.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from scdl.errors import ScdlError
from scdl.events import ModelEvent
from scdl.progress import ProgressReporter
from scdl.training import checkpoint as ckpt
from scdl.training.record import RunRecord


def model_id_for(run_dir: Path, when: Optional[float] = None) -> str:
    """A valid model id from the run folder's name and the time (lower-case letters, digits, '.', '_', '-')."""
    text = re.sub(r"[^a-z0-9._-]+", "-", Path(run_dir).resolve().name.lower()).strip("-._") or "run"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(when))
    return f"run-{text[:60]}-{stamp}"


def training_card(*, run_dir: Path, config: dict[str, Any], arch: dict[str, Any], preprocessing: dict[str, Any],
                  ensemble: int, iteration: int, chosen: int, elapsed: float, best: dict[str, Any],
                  cohort_source: Any, summary: dict[str, int], validation_source: Optional[str],
                  world_size: int, baseline: Optional[dict[str, Any]] = None,
                  averaged: Optional[dict[str, Any]] = None, interpolated: Optional[float] = None,
                  label_names: Sequence[str] = ()) -> dict[str, Any]:
    """The card of a model trained by ``scdl train`` (``validation_source`` None: no cohort report).

    ``baseline``: the ``--init`` model's validation before fine-tuning (``validation_metrics.before``).
    ``averaged``: the packaged weights are a mean (``scdl.training.averaging``; a best's own ``averaged`` wins);
    ``interpolated``: they are mixed with the init model (``finetune.interpolate``; idem).
    ``provenance.recipe.config`` records the settings a later fine-tune inherits (scdl.training.finetune); a
    fine-tune's ``inference`` section is its init model's (organs cut to ``label_names``,
    :func:`scdl.training.finetune.inherited_inference`)."""
    from scdl.models.card import new_card
    from scdl.training.finetune import inherited_inference, recipe_of

    warnings = []
    if validation_source is not None and validation_source != "val":
        warnings.append("validation Dice was measured on the training cases (no validation case): optimistic.")
    metrics = None
    if best:
        metrics = {"mean_dice": best["mean_dice"], "dice": best["dice"], "iteration": best["iteration"],
                   "grid": "model resolution (preprocessed grid)", "cases": validation_source or "val"}
        if baseline:
            metrics["before"] = {"mean_dice": baseline["mean_dice"], "dice": baseline["dice"],
                                 "model": (config.get("init") or {}).get("id") or (config.get("init") or {}).get("model")}
        for key in ("averaged", "interpolated"):
            if best.get(key):
                metrics[key] = dict(best[key])
    framework = config["framework"]
    averaged = (best or {}).get("averaged") or averaged
    weights = (f"the mean of the weights of {averaged['count']} checkpoints (iterations {averaged['first']}.."
               f"{averaged['last']}, averaging.enabled)" if averaged else f"weights of iteration {chosen}")
    alpha = ((best or {}).get("interpolated") or {}).get("alpha", interpolated)
    if alpha is not None:
        weights += (f", mixed with the initial model: {1 - float(alpha):g} x initial + {float(alpha):g} x "
                    "fine-tuned (finetune.interpolate)")
    return new_card(
        id=model_id_for(run_dir), title=f"SCDL {framework} model trained in {run_dir.name}",
        architecture=arch, preprocessing=preprocessing, ensemble=ensemble,
        inference=inherited_inference(config, label_names),
        description=(f"Trained with scdl train ({framework}, {iteration} iterations, preset {config.get('preset')}); "
                     f"{weights}."),
        provenance={"data": f"{cohort_source} ({summary['labeled']} labeled, {summary['unlabeled']} unlabeled, "
                            f"{summary['val']} validation cases)",
                    "data_licence": "that of the training data (not recorded by scdl train)",
                    "framework": framework, "iterations": int(iteration), "selected_iteration": chosen,
                    "training_time_s": round(float(elapsed), 1), "validation_metrics": metrics,
                    "source": (config.get("init") or {}).get("model"),
                    "seed": int(config["seed"]), "world_size": int(world_size),
                    "recipe": {"config": recipe_of(config)}},
        licence="unstated (trained by the user; the training data's terms apply)", warnings=warnings)


def package_run(record: RunRecord, progress: ProgressReporter) -> Path:
    """Write the model package of a finished run (rank 0) into ``record.model_dir`` and report it (a ``model``
    event on ``progress``). Returns the package folder."""
    from scdl.models.package import save_package
    states: Sequence[Mapping[str, Any]]
    if record.best_file.is_file() and record.best:
        best = ckpt.load_checkpoint(record.best_file)
        states, chosen = best["networks"], int(best["iteration"])
    else:
        states, chosen = record.last_networks, record.iteration
    iteration = record.iteration
    card = training_card(run_dir=record.run_dir, config=dict(record.config), arch=dict(record.arch),
                         preprocessing=dict(record.preprocessing), ensemble=len(states), iteration=iteration,
                         chosen=chosen, elapsed=record.elapsed_s, best=dict(record.best),
                         cohort_source=record.cohort_source, summary=dict(record.summary),
                         validation_source=record.validation_source, world_size=record.world_size,
                         baseline=dict(record.baseline),
                         averaged=None if record.best else (dict(record.averaged) if record.averaged else None),
                         interpolated=None if record.best else record.interpolated,
                         label_names=[e.name for e in record.labels.entries])
    try:
        out = save_package(record.model_dir, card, list(states), record.labels)
    except ScdlError as err:            # e.g. a full disk: the final checkpoint is saved, so a resume packages again
        raise ScdlError(f"{err.message} The model was not written; the checkpoint of iteration {iteration} is "
                        "complete.", err.path,
                        f"free disk space (or fix the cause), then `scdl train --resume {record.run_dir}` writes the "
                        "model without training again.") from None
    progress.emit(ModelEvent(path=str(out), selected_iteration=chosen, mean_dice=record.best.get("mean_dice")))
    return out
