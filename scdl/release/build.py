"""The whole release of the default model, in order: cohort, calibration, training, held-out metrics, card and
package (float16 weights when they change no label), demo check, ship decision, install; ``summary.json``.

``bench/train_default_model.py`` is its command line (:class:`ReleaseOptions` = its flags).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from scdl.release.card import build_card, machine_info
from scdl.release.cohort import build_cohort
from scdl.release.commands import fail, log
from scdl.release.package import (
    demo_check,
    float16_overflow,
    half_states,
    install,
    package_size_mb,
    write_package,
)
from scdl.release.recipe import DEFAULT_DATA, RECIPE, load_card_text, load_recipe
from scdl.release.scoring import held_out_metrics, labels_identical, ship_refusal, validation_scores
from scdl.release.training import SMOKE_ITERATIONS, init_identity, measure_speed, packaged_run, plan_iterations, train
from scdl.training.cohort import MANIFEST_NAME
from scdl.training.runfolder import RunFolder


@dataclass(frozen=True)
class ReleaseOptions:
    """The recipe's flags (``bench/train_default_model.py --help`` describes each)."""

    out: Path
    minutes: Optional[float] = None
    iterations: Optional[int] = None
    data: Path = DEFAULT_DATA
    recipe: Path = RECIPE
    resources: Optional[Path] = None
    no_install: bool = False
    device: str = "auto"
    init: Optional[str] = None
    smoke: bool = False
    force_install: bool = False
    package_only: bool = False


def score_packages(out: Path, models: Sequence[Path], device: str) -> dict[str, Any]:
    """``--score-validation``: each package scored on the validation cases of an earlier run's cohort in ``out``."""
    manifest = out.resolve() / "cohort" / MANIFEST_NAME
    if not manifest.is_file():
        raise fail(f"{manifest}: no cohort of an earlier run (run the recipe with this --out first).")
    return {str(m): validation_scores(m.resolve(), manifest, out.resolve() / "validation" / f"model_{i}", device)
            for i, m in enumerate(models)}


def build_release(options: ReleaseOptions) -> dict[str, Any]:
    """Run the recipe (see the module docstring); returns the summary it wrote to ``<out>/summary.json``."""
    from scdl.io.atomic import atomic_write_text
    from scdl.models.package import ModelPackage
    from scdl.resources import resources_dir

    started = time.monotonic()
    extra: list[str] = []
    if options.init:
        extra = ["--init", str(Path(options.init).resolve()) if Path(options.init).exists() else options.init]
    cohort, config_path = load_recipe(options.recipe)
    config = json.loads(config_path.read_text(encoding="utf-8"))
    budget = dict(cohort["budget"])
    minutes = float(options.minutes if options.minutes is not None else budget["minutes"])
    resources = (options.resources or resources_dir()).resolve()
    if options.smoke and not options.no_install and options.resources is None:
        raise fail("--smoke installs only into an explicit --resources folder (a smoke model is never shipped).")
    no_install = options.no_install
    out = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    data = options.data.resolve()

    manifest, described = build_cohort(cohort, data, out / "cohort", options.smoke)
    calibration = None
    iterations = options.iterations or (SMOKE_ITERATIONS if options.smoke else None)
    previous: dict[str, Any] = {}
    if options.package_only:
        previous = json.loads((out / "summary.json").read_text(encoding="utf-8")) if (out / "summary.json").is_file() else {}
        calibration = previous.get("calibration")
        iterations = -1
    if iterations is None:
        rate = measure_speed(manifest, config_path, out, int(budget["calibration_iterations"]), options.device, cache)
        iterations = plan_iterations(rate, minutes, budget)
        calibration = {"it_per_s": round(rate, 4), "minutes": minutes, "planned_iterations": iterations}
        log(f"calibration: {rate:.3f} it/s -> {iterations} iterations for {minutes:g} min")
    deadline = minutes * 60.0 * float(budget["hard_limit_factor"]) if calibration else None
    if options.package_only:
        training = packaged_run(out / "train")
    else:
        training = train(manifest, config_path, out, iterations, options.device, cache, deadline, extra=extra)
    # what the stage started from; --package-only keeps the identity its training run recorded (by then the
    # installed model may already be this stage's)
    recorded_init = previous.get("init") if options.package_only else None
    training["init"] = init_identity(options.init) if options.init else recorded_init
    run_model = RunFolder(out / "train").model_dir

    run_pkg = ModelPackage.load(run_model, verify=True)
    held_out = held_out_metrics(run_model, cohort, data, out / "eval", options.device)
    machine = machine_info(str(training.get("device") or options.device))
    machine["calibration"] = calibration
    installed_pkg = resources / "Models" / cohort["model_id"]
    compared = None
    if not options.smoke and (installed_pkg / "card.json").is_file():
        # the ship decision: the new build against the installed model on the SAME validation cases
        compared = {"new": validation_scores(run_model, manifest, out / "validation" / "new", options.device,
                                             cohort.get("inference")),
                    "installed": validation_scores(installed_pkg, manifest, out / "validation" / "installed",
                                                   options.device)}
        installed_card = json.loads((installed_pkg / "card.json").read_text(encoding="utf-8"))
        compared["installed_version"] = installed_card.get("version")
        if compared["installed_version"] == cohort["version"]:
            # a rebuild of the installed version (--package-only after a card change): the stage keeps the
            # validation of what it was compared with when it shipped, not its own numbers
            earlier = [s for s in (installed_card.get("provenance") or {}).get("lineage") or []
                       if s.get("version") == cohort["version"]]
            if earlier and earlier[-1].get("validation_of_init"):
                compared["init_validation"] = earlier[-1]["validation_of_init"]
                log(f"rebuild of the installed version {cohort['version']}: the lineage keeps the validation it "
                    f"was shipped against (mean {compared['init_validation'].get('mean')})")
    text = load_card_text(options.recipe)
    card = build_card(run_pkg.card, cohort, described, config, held_out, training, machine, options.smoke, compared,
                      text=text)
    package = write_package(card, run_pkg.state_dicts(), run_pkg.labels, out / "package", text=text)
    too_big = float16_overflow(run_pkg.state_dicts()) if cohort.get("weights_float16") else []
    if too_big:
        log(f"float16 weights: {len(too_big)} tensor(s) hold values beyond float16's range (e.g. {too_big[0]}): "
            "the package keeps float32")
    if cohort.get("weights_float16") and not options.smoke and not too_big:
        # float16 weights halve the package (the repository grows by every shipped version): taken only if the
        # labels of every validation case are identical to float32's
        half = write_package({**card, "weights_dtype": "float16"}, half_states(run_pkg.state_dicts()),
                             run_pkg.labels, out / "package_float16", text=text)
        check = labels_identical(package, half, manifest, out / "float16_check", options.device)
        log(f"float16 weights: {check}")
        if check["identical"]:
            shutil.rmtree(package)
            package = write_package({**card, "weights_dtype": "float16", "weights_dtype_check": check},
                                    half_states(run_pkg.state_dicts()), run_pkg.labels, out / "package", text=text)
        else:
            log("float16 weights change labels on the validation cases: the package keeps float32")
    size = package_size_mb(package)
    if size > float(cohort["max_package_mb"]):
        raise fail(f"{package}: {size:.1f} MB, over the {cohort['max_package_mb']} MB limit of a bundled model.")
    summary = {"package": str(package), "size_mb": round(size, 2), "iterations": card["provenance"]["iterations"],
               "training_time_s": card["provenance"]["training_time_s"], "held_out": held_out,
               "calibration": calibration, "init": training["init"]}
    summary["demo"] = demo_check(package, resources, out / "demo", options.device, held_out)
    log(f"scdl demo with the package: {summary['demo']}")
    if compared is not None:
        summary["validation_comparison"] = compared
        log(f"validation mean Dice: new {compared['new']['mean']}, installed {compared['installed']['mean']}")
        refused = None if no_install or options.force_install else ship_refusal(compared)
        if refused:
            log(f"not installed: {refused} ({installed_pkg}; --force-install installs it anyway)")
            no_install = True
            summary["not_installed_because"] = refused
    if not no_install:
        target = install(package, resources, cohort["model_id"])
        summary["installed"] = str(target)
        log(f"installed {target} ({size:.1f} MB)")
    summary["total_minutes"] = round((time.monotonic() - started) / 60.0, 2)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
