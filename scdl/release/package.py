"""Steps 5 and 6 of the release recipe: the verified package (float16 weights when they change no label), the
``scdl demo`` check, and the install into ``<Resources>/Models/<id>``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Mapping, Optional

from scdl.events import parse_event
from scdl.release.card import readme_text
from scdl.release.commands import fail, scdl_command


def write_package(card: dict[str, Any], states: list[dict], labels: Any, out: Path,
                  text: Optional[Mapping[str, Any]] = None) -> Path:
    """Write the package (card, weights, labels, README.md + manifest) atomically and verify it (``text``: the card
    prose, see :func:`scdl.release.card.readme_text`)."""
    from scdl.models.package import ModelPackage, package_files, write_files

    files = package_files(card, states, labels)
    files["README.md"] = readme_text(card, text).encode("utf-8")
    write_files(out, files)
    ModelPackage.load(out, verify=True)
    for path in [out, *out.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


def half_states(states: list[dict]) -> list[dict]:
    """The state dicts with every floating tensor in float16 (integers, e.g. BN counters, unchanged)."""
    return [{k: (v.half() if v.is_floating_point() else v) for k, v in state.items()} for state in states]


def float16_overflow(states: list[dict]) -> list[str]:
    """Names (``net<i>.<key>``) of the finite float tensors that float16 cannot hold: a value beyond its range
    (65504; e.g. a batch-norm running variance) would become infinite, so such weights stay float32."""
    import torch

    limit = float(torch.finfo(torch.float16).max)
    return [f"net{i}.{k}" for i, state in enumerate(states) for k, v in state.items()
            if v.is_floating_point() and v.numel() and float(v.abs().max()) > limit]


def package_size_mb(folder: Path) -> float:
    """Size of a package folder's files in MB."""
    return sum(p.stat().st_size for p in folder.iterdir()) / 1e6


def check_catalog(resources: Path, model_id: str) -> None:
    """The catalog must name ``model_id`` as a bundled model and as the default (it is not edited here)."""
    from scdl.models.catalog import load_catalog

    catalog = load_catalog(resources / "Catalog.json")
    entry = next((e for e in catalog["models"] if e["id"] == model_id), None)
    if entry is None or entry["kind"] != "bundled" or catalog.get("default") != model_id:
        raise fail(f"{resources / 'Catalog.json'}: needs a 'bundled' entry {model_id!r} that is the default.")


def install(package: Path, resources: Path, model_id: str) -> Path:
    """Copy the package to ``<resources>/Models/<model_id>`` (the catalog's bundled default) and verify it there."""
    from scdl.models.package import ModelPackage, copy_package

    check_catalog(resources, model_id)
    target = copy_package(package, resources / "Models" / model_id)
    for path in [target, *target.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    ModelPackage.load(target, verify=True)
    return target


def demo_check(package: Path, resources: Path, out: Path, device: str, held_out: dict[str, Any]) -> dict[str, Any]:
    """``scdl demo --model package`` (sample of ``resources``); its per-organ Dice must equal the held-out
    evaluation, which also proves that the bundled sample matches the shared data."""
    env = {**os.environ, "SCDL_RESOURCES": str(resources)}
    proc = subprocess.run(scdl_command("demo", "--out", str(out), "--model", str(package), "--device", device,
                                       "--progress", "json"), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise fail(f"scdl demo failed with the installed model:\n{proc.stderr}")
    events = [e for e in map(parse_event, proc.stdout.splitlines()) if e is not None]
    dice = next(e for e in events if e.get("event") == "dice")
    done = next(e for e in events if e.get("phase") == "done")
    sample = next(e for e in events if e.get("event") == "sample")
    patient = sample["patient"]
    if patient in held_out:
        expected = held_out[patient]["organs"]
        for cls in dice["classes"]:
            if cls["name"] in expected and cls["dice"] is not None:
                if abs(cls["dice"] - (expected[cls["name"]]["dice"] or 0.0)) > 1e-3:
                    raise fail(f"scdl demo's Dice for {cls['name']} ({cls['dice']:.4f}) differs from the held-out "
                               f"evaluation ({expected[cls['name']]['dice']}): the bundled sample does not match "
                               "the shared data.")
    return {"seconds": done["seconds"], "mean_dice_labelled_organs": done["mean_dice_labelled_organs"],
            "in_training_data": done["in_training_data"]}
