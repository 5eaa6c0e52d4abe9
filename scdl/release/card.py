"""Step 5 of the release recipe: the default model's card (from the trained run's card, the recipe and the
measured numbers), the lineage of its stages, and its README. The prose is data: ``card_text.json`` in the recipe
folder (:func:`scdl.release.recipe.load_card_text`), filled in here."""

from __future__ import annotations

import os
import platform
from typing import Any, Mapping, Optional

from scdl.release.recipe import load_card_text


def lineage(cohort: dict[str, Any], described: dict[str, Any], prov: dict[str, Any], training: dict[str, Any],
            compared: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stages that made this model: the recipe's earlier stages (``cohort.json`` ``lineage``), then this one
    (version, what it started from, data, changes, iterations, minutes, validation scores). ``compared``: the ship
    decision's scores, ``new`` and ``installed`` (the stage's ``validation_of_init``) or, for a rebuild of the
    installed version, ``init_validation`` (what that version was shipped against)."""
    stage = {
        "version": cohort["version"],
        "init": training.get("init"),
        "data": ([c["patient"] for c in cohort["labeled"]] + [c["patient"] for c in described.get("anatomy", [])]),
        "changes": list(cohort.get("changes", [])),
        "iterations": int(prov.get("iterations") or training.get("iteration") or 0),
        "minutes": round(float(prov.get("training_time_s") or 0.0) / 60.0, 1),
        "validation": (compared or {}).get("new"),
        "validation_of_init": (compared or {}).get("init_validation", (compared or {}).get("installed")),
        "command": cohort.get("command"),
    }
    return [*cohort.get("lineage", []), stage]


def _data_lines(described: dict[str, Any], text: Mapping[str, str]) -> list[str]:
    """The card's ``provenance.data``: one line per labeled case, anatomy map, the phantoms, validation CT."""
    ph = described["phantoms"]
    data = [text["labeled"].format(patient=c["patient"], description=c["description"],
                                   sub_volumes=len(c.get("cases_in_manifest", []))) for c in described["labeled"]]
    data += [text["anatomy"].format(patient=c["patient"], description=c["description"])
             for c in described.get("anatomy", [])]
    data.append(text["phantoms"].format(unlabeled=ph["cases"] - ph.get("labeled", 0) - ph.get("val", 0),
                                        seed=ph["seed"], spacing_mm=ph["spacing_mm"], labeled=ph.get("labeled", 0),
                                        val=ph.get("val", 0)))
    data += [text["validation_synth"].format(anatomy=v["anatomy"], seed=v["seed"], phase=v["phase"])
             for v in described.get("validation_synth", [])]
    return data


def _warnings(cohort: dict[str, Any], described: dict[str, Any], training: dict[str, Any], smoke: bool,
              validating: bool, text: Mapping[str, str]) -> list[str]:
    """The card's warnings: the data's limits, the recipe's own (``cohort.json`` ``warnings``), the run's."""
    ph = described["phantoms"]
    warnings = [
        text["training_data"].format(n_maps=len(described.get("anatomy", [])))
        + text["validation_cases" if validating else "held_out_case"],
        text["not_clinical"],
        text["phantom_hu"],
    ]
    warnings += [str(w) for w in cohort.get("warnings", [])]      # the recipe's own (design decisions to disclose)
    if not ph.get("labeled") and not described.get("anatomy"):
        warnings.append(text["no_esophagus"])
    with_oesophagus = [c["patient"].rsplit("/", 1)[-1] for c in described.get("anatomy", []) if c.get("has_esophagus")]
    if described.get("anatomy"):
        warnings.append(text["weak_esophagus"].format(count=len(with_oesophagus), subjects=", ".join(with_oesophagus)))
    if training.get("stopped_at_limit"):
        warnings.append(text["stopped_at_limit"].format(iteration=training["iteration"],
                                                        planned=training["planned_iterations"]))
    if smoke:
        warnings.insert(0, text["smoke"].format(iteration=training["iteration"]))
    return warnings


def build_card(run_card: dict[str, Any], cohort: dict[str, Any], described: dict[str, Any], config: dict[str, Any],
               held_out: dict[str, Any], training: dict[str, Any], machine: dict[str, Any],
               smoke: bool, validation_comparison: Optional[dict[str, Any]] = None,
               text: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The default model's card from the trained run's card, the recipe and the measured numbers.

    ``text``: the card prose (``card_text.json``; None: the bundled recipe's).
    """
    from scdl.models.card import new_card

    text = load_card_text() if text is None else text
    prov = run_card["provenance"]
    patients = [c["patient"] for c in cohort["labeled"]]
    validating = [c["patient"] for c in cohort.get("validation_real", [])]
    role = "validation" if validating else "held_out"
    held = [c["patient"] for c in cohort["held_out"] if c["patient"] not in validating]
    headline = "; ".join(text["headline_part"].format(patient=p.rsplit("/", 1)[-1], mean=m["mean_dice_labelled_organs"],
                                                      organs=m["organs_labelled"]) for p, m in held_out.items())
    licences = "; ".join(f"{c['patient']}: {c['licence']}" for c in cohort["labeled"])
    licences += "".join(f"; {c['patient']}: {c['licence']}" for c in cohort.get("anatomy", []))
    licences += f"; phantoms: {cohort['phantoms']['licence']}"
    every = config.get("validation", {}).get("every")
    selection = (text["selection"].format(n_val=described.get("manifest_counts", {}).get("val", "?"), every=every,
                                          cases=text["selection_cases"][role])
                 if int(every or 0) > 0 else text["selection_last"])
    validation = {"held_out": held_out,
                  "held_out_note": text["held_out_note"] + (text["held_out_note_validation"] if validating else ""),
                  "validation": prov.get("validation_metrics"),
                  "selection": selection}
    arch, pre = run_card["architecture"], run_card["preprocessing"]
    return new_card(
        id=cohort["model_id"], title=cohort["title"] + (text["smoke_title"] if smoke else ""),
        version=cohort["version"] + ("-smoke" if smoke else ""),
        architecture=arch, preprocessing=pre,
        ensemble=int(run_card["ensemble"]), inference=cohort.get("inference"),
        description=text["description"].format(
            n_filters=arch["n_filters"], spacing=" x ".join(f"{float(v):g}" for v in pre.get("spacing_mm") or []),
            n_maps=len(described.get("anatomy", [])), scored_as=text["scored_as"][role], headline=headline),
        provenance={
            "data": _data_lines(described, text["data"]), "data_licence": licences,
            "framework": prov.get("framework"),
            "iterations": int(prov.get("iterations") or training.get("iteration") or 0),
            "training_time_s": prov.get("training_time_s"), "validation_metrics": validation,
            "source": text["source"],
            "training_patients": patients, "held_out_patients": held, "validation_patients": validating,
            "lineage": lineage(cohort, described, prov, training, validation_comparison),
            "excluded_data": cohort.get("excluded", []), "seed": prov.get("seed"),
            "recipe": {"config": config, "cohort": cohort}, "machine": machine,
        },
        intended_use=text["intended_use"], licence=text["licence"],
        warnings=_warnings(cohort, described, training, smoke, bool(validating), text["warnings"]))


def readme_text(card: dict[str, Any], text: Optional[Mapping[str, Any]] = None) -> str:
    """The package's README.md: the card in Markdown (scdl.models.cardtext) with the recipe's note."""
    from scdl.models.cardtext import card_markdown

    text = load_card_text() if text is None else text
    role = "validation" if card["provenance"].get("validation_patients") else "held_out"
    return card_markdown(card, training_notes=list(text["readme_notes"]),
                         held_out_heading=text["held_out_heading"][role])


def machine_info(device: str) -> dict[str, Any]:
    """The machine of a build, for the card: device, CPUs, torch and its threads, Python, platform."""
    import torch

    return {"device": device, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform(terse=True)}
