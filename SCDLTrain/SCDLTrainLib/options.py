"""The panel's training options -> ``scdl train`` command lines, checked by the core's own config resolver.

Every setting the panel offers maps onto the trainer's configuration (``scdl/training/config.py``):

=====================  ==============================================
panel                  ``scdl train``
=====================  ==============================================
initial model          ``--init ID`` (classes, width, preprocessing from its card)
framework              ``--framework supervised|cps|cps-scdl``
SCDL weight            ``--set scdl.lam=W`` (frameworks with SCDL only)
iterations             ``--iterations N``
patch size             ``--set patch_size=[P,P,P]``
batch                  ``--set labeled_batch=L --set unlabeled_batch=U``
device                 ``--device auto|cpu|cuda:N``
CPU preset             ``--preset cpu``
Advanced (key=value)   ``--set key=value`` per line (last: they win)
=====================  ==============================================

The Advanced box takes one ``key = value`` per line (``#`` starts a comment); keys are the dotted names of
``docs/training.md`` / a run's ``config.json`` and values are JSON (``optimizer.lr = 0.005``,
``augment.flip = true``, ``preprocessing.spacing_mm = [2, 2, 2]``). :meth:`TrainOptions.resolve` runs the
core's resolver, so an unknown key or a bad value is reported in the panel before anything starts.
No Qt here; ``scdl.training.config`` is pure Python (no torch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

class OptionsError(ValueError):
    """A setting of the panel that cannot work; the message names it and the fix."""


def framework(name: str):
    """The core's framework (``scdl.training.config.Framework``, the one owner of the names and their
    properties); :class:`OptionsError` for an unknown name."""
    from scdl.training.config import Framework

    try:
        return Framework(name)
    except ValueError:
        raise OptionsError(f"Unknown framework {name!r}: use one of {', '.join(Framework.values())}.") from None


def uses_scdl(name: str) -> bool:
    """The framework's loss includes the SCDL term (``scdl.lam`` matters)."""
    try:
        return framework(name).uses_scdl
    except OptionsError:
        return False


def uses_unlabeled(name: str) -> bool:
    """The framework learns from unlabeled patches (the unlabeled batch matters)."""
    try:
        return framework(name).uses_unlabeled
    except OptionsError:
        return True


def core_defaults() -> dict[str, Any]:
    """The core's defaults of the settings the panel offers, by :class:`TrainOptions` field: framework and preset
    (``scdl.training.config.DEFAULT_FRAMEWORK`` / ``DEFAULT_PRESET``), iterations, patch edge and batches
    (``DEFAULTS``) and the SCDL weight (``scdl.method.config.SCDLConfig.lam``, the paper's λ). The core owns
    them; they are read when needed, never at module load (no ``scdl`` import here at file scope; both core
    modules import no torch)."""
    from scdl.method.config import SCDLConfig
    from scdl.training.config import DEFAULT_FRAMEWORK, DEFAULT_PRESET, DEFAULTS

    return {"framework": DEFAULT_FRAMEWORK.value, "preset": DEFAULT_PRESET.value, "scdl_weight": float(SCDLConfig.lam),
            "iterations": int(DEFAULTS["iterations"]), "patch_size": int(DEFAULTS["patch_size"][0]),
            "labeled_batch": int(DEFAULTS["labeled_batch"]), "unlabeled_batch": int(DEFAULTS["unlabeled_batch"])}


def set_parameters(node: Any, values: dict[str, Any]) -> None:
    """Set several parameters of a parameter node wrapper with one Modified event (StartModify/EndModify)."""
    was_modified = node.StartModify()
    try:
        for name, value in values.items():
            setattr(node, name, value)
    finally:
        node.EndModify(was_modified)


def _core_default(name: str) -> Any:
    """A :class:`TrainOptions` field whose default is the core's (:func:`core_defaults`), read per instance."""
    return field(default_factory=lambda: core_defaults()[name])


def parse_advanced(text: str) -> list[str]:
    """``key = value`` lines -> ``["key=value", ...]`` (blank lines and ``#`` comments skipped).

    Raises :class:`OptionsError` naming the line when a line has no ``=`` or no key.
    """
    out = []
    for number, raw in enumerate(str(text or "").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise OptionsError(f"Advanced settings, line {number}: {raw.strip()!r} is not 'key = value' "
                               "(e.g. optimizer.lr = 0.005).")
        out.append(f"{key.strip()}={value.strip()}")
    return out


@dataclass
class TrainOptions:
    """What one training run is asked to do (the panel's state, or a script's).

    Attributes:
        run_dir: the run folder (``--out``); checkpoints, logs, curves and ``model/`` go there.
        cohort: ``{"manifest": path}`` or ``{"labeled": dir, "unlabeled": dir, "val": dir, "labels": table}``.
        init: initial model (id or package path) for fine-tuning; None trains from scratch.
        preset: ``"paper"`` or ``"cpu"``.
        patch_size: edge of the cubic patch; 0 = automatic: the initial model's patch when fine-tuning
            (what it was trained and slides with), else the preset's.
        advanced: ``key=value`` overrides (applied last).

    Framework, iterations, preset, patch edge and batches default to the core's (:func:`core_defaults`).
    """

    run_dir: Path
    cohort: dict[str, Any]
    framework: str = _core_default("framework")
    iterations: int = _core_default("iterations")
    init: Optional[str] = None
    device: str = "auto"
    preset: str = _core_default("preset")
    scdl_weight: float = _core_default("scdl_weight")
    patch_size: int = _core_default("patch_size")
    labeled_batch: int = _core_default("labeled_batch")
    unlabeled_batch: int = _core_default("unlabeled_batch")
    advanced: list[str] = field(default_factory=list)

    # -- command lines -----------------------------------------------------------------------------
    def overrides(self) -> list[str]:
        """``--set`` values from the panel's fields, then the Advanced lines (which win)."""
        p = int(self.patch_size)
        out = [f"patch_size=[{p},{p},{p}]"] if p > 0 else []
        out.append(f"labeled_batch={int(self.labeled_batch)}")
        if uses_unlabeled(self.framework):
            out.append(f"unlabeled_batch={int(self.unlabeled_batch)}")
        if uses_scdl(self.framework):
            out.append(f"scdl.lam={float(self.scdl_weight)!r}")
        return out + list(self.advanced)

    def cohort_args(self) -> list[str]:
        if self.cohort.get("manifest"):
            return ["--cohort", str(self.cohort["manifest"])]
        args = []
        for key, flag in (("labeled", "--labeled"), ("unlabeled", "--unlabeled"), ("val", "--val"),
                          ("labels", "--source-labels")):
            if self.cohort.get(key):
                args += [flag, str(self.cohort[key])]
        if not args:
            raise OptionsError("No cohort: export the scene cohort, or choose folders or a manifest.")
        return args

    def _common(self) -> list[str]:
        args = ["train", *self.cohort_args(), "--out", str(self.run_dir), "--framework", self.framework,
                "--iterations", str(int(self.iterations)), "--device", self.device or "auto"]
        if self.init:
            args += ["--init", str(self.init)]
        # always named: without --preset, scdl train picks the preset from the device (cpu without CUDA)
        args += ["--preset", self.preset or "paper"]
        for item in self.overrides():
            args += ["--set", item]
        return args

    def train_args(self) -> list[str]:
        """Arguments of ``scdl`` for the training run (JSON progress)."""
        return self._common() + ["--progress", "json"]

    def check_args(self) -> list[str]:
        """Arguments of ``scdl`` for ``--check-only`` with the same settings (batch sizes matter to the check)."""
        return self._common() + ["--check-only", "--progress", "json"]

    # -- checking ---------------------------------------------------------------------------------
    def resolve(self) -> dict[str, Any]:
        """The trainer's full configuration for these options (the core's resolver: defaults -> preset ->
        the initial model's training recipe -> fields -> Advanced). Raises :class:`OptionsError` with the
        core's message for a bad setting."""
        from scdl.errors import ScdlError
        from scdl.training.config import resolve_config

        framework(self.framework)
        values: dict[str, Any] = {"framework": self.framework, "iterations": int(self.iterations)}
        if self.init:
            values["labels"] = "init"
            if int(self.patch_size) <= 0:
                values["patch_size"] = self._init_patch()
        card = None
        if self.init:
            from scdl.training.finetune import load_init_card

            try:
                card = load_init_card(self.init)
            except Exception:  # noqa: BLE001 - the check reports an unusable init model in full
                card = None
        try:
            return resolve_config(self.preset or "paper", None, values, self.overrides(), init=card)
        except ScdlError as err:
            raise OptionsError(str(err)) from None


    def _init_patch(self) -> list[int]:
        """The initial model's training patch (its card), the trainer's choice for patch 0 with --init."""
        from scdl.models.catalog import resolve_model
        from scdl.models.package import ModelPackage

        try:
            card = ModelPackage.load(resolve_model(str(self.init)), verify=False).card
            return [int(v) for v in card["preprocessing"]["patch_size"]]
        except Exception as err:  # noqa: BLE001 - the check reports an unusable init model in full
            raise OptionsError(f"The initial model {self.init!r} cannot be read ({err}).") from None


def resume_args(run_dir: os.PathLike | str, iterations: Optional[int] = None, device: str = "auto") -> list[str]:
    """``scdl train --resume RUN_DIR --device D [--iterations N] --progress json``."""
    args = ["train", "--resume", str(run_dir), "--device", device or "auto"]
    if iterations:
        args += ["--iterations", str(int(iterations))]
    return args + ["--progress", "json"]
