"""Training configuration: every hyperparameter in one JSON-serialisable tree, the paper's values as defaults.

Layers, last wins: defaults (the paper, METHOD.md §2) -> preset (``paper`` | ``cpu``) -> config file (JSON)
-> command-line flags -> ``--set key=value`` overrides (dotted keys, values parsed as JSON when they parse).
The resolved tree is saved as ``RUN_DIR/config.json`` and is what ``--resume`` reloads.

The loss weights of the training step live under ``"step"`` and ``"scdl"``: they are passed to
``scdl.training.step.StepConfig`` / ``SCDLConfig`` whose defaults are the paper's values; only the keys a
user sets are stored before resolution, the resolved file holds every key.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from scdl.choice import Choice
from scdl.errors import ScdlError
from scdl.models.card import DEFAULT_BLENDING, is_unit_weight, is_window_size

class Framework(Choice):
    """Training frameworks: flags of the one training step (METHOD.md §2: the baselines share SCDL's code
    path). The one owner of the names; scdl.training.step maps each to its host and networks (kept here so
    that ``--help`` does not import torch)."""

    SUPERVISED = "supervised"
    CPS = "cps"
    CPS_SCDL = "cps-scdl"
    MEAN_TEACHER = "mean-teacher"
    MEAN_TEACHER_SCDL = "mean-teacher-scdl"

    @property
    def host(self) -> str:
        """``supervised``, ``cps`` or ``mean_teacher``: the training step's host method."""
        return {"supervised": "supervised", "cps": "cps", "cps-scdl": "cps"}.get(self.value, "mean_teacher")

    @property
    def uses_scdl(self) -> bool:
        """The SCDL module is on (its loss weight applies)."""
        return self.value.endswith("-scdl")

    @property
    def networks(self) -> int:
        """Segmentation networks trained (and shipped as the ensemble)."""
        return 2 if self.host == "cps" else 1

    @property
    def uses_unlabeled(self) -> bool:
        """Learns from unlabeled patches (every framework but supervised)."""
        return self is not Framework.SUPERVISED


class Preset(Choice):
    """Setting presets: ``paper`` = :data:`DEFAULTS` (the paper's values), ``cpu`` = :data:`CPU_PRESET`."""

    PAPER = "paper"
    CPU = "cpu"


FRAMEWORKS: tuple[str, ...] = Framework.values()
PRESETS: tuple[str, ...] = Preset.values()
#: Frameworks with the SCDL module on.
SCDL_FRAMEWORKS: tuple[str, ...] = tuple(f.value for f in Framework if f.uses_scdl)
DEFAULT_FRAMEWORK = Framework.CPS_SCDL
DEFAULT_PRESET = Preset.PAPER
#: Optimisers of ``optimizer.name``: the paper's SGD (momentum, weight decay, poly decay) or AdamW (same decay).
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")

#: ``finetune.norm_stats``: batch-norm running statistics while training (see DEFAULTS); ``auto`` is resolved by
#: :func:`resolve_config` to one of the other two.
NORM_STATS: tuple[str, ...] = ("auto", "update", "frozen")

#: The paper's setting (METHOD.md §2, §5). Values the paper does not state are marked "ours".
DEFAULTS: dict[str, Any] = {
    "preset": DEFAULT_PRESET.value,
    "framework": DEFAULT_FRAMEWORK.value,
    "iterations": 17000,
    "seed": 1337,                       # the seed in the authors' Synapse checkpoint name
    "labeled_batch": 2,                 # per process and micro-batch
    "unlabeled_batch": 2,
    "accumulate": 1,                    # micro-batches per optimiser step (gradient accumulation)
    "patch_size": [96, 96, 96],         # (x, y, z) voxels of the model grid
    "optimizer": {"name": "sgd",       # paper: SGD; "adamw" (ours) learns faster in a few hundred CPU iterations
                  "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "poly_power": 0.9, "nesterov": False},
    "amp": True,                        # CUDA only; ignored on CPU
    "cpu_bfloat16": False,              # ours: bfloat16 autocast on CPU; float32 where the CPU lacks bf16 kernels
    "threads": 0,                       # torch CPU threads (0: torch's default); 1 is faster on a busy shared CPU
    "network": {"name": "vnet", "in_channels": 1, "n_filters": 16, "norm": "batch"},
    "labels": "synapse",                # the classes the model learns (bundled table name or CSV path)
    "preprocessing": {                  # the model card's preprocessing block (scdl.processing), (x, y, z) order
        "mode": "spacing",
        "spacing_mm": [1.5, 1.5, 1.5],  # ours: the Synapse recipe is not published (METHOD.md §7)
        "orientation": "LPS",
        "window": [-125.0, 275.0],      # METHOD.md §5
        "scale": [0.0, 1.0],
    },
    "sampling": {
        "class_prob": 0.0,              # paper: random crops; >0 picks a present class uniformly, then a voxel of it
        "max_locations_per_class": 20000,   # ours: voxel positions kept per class for centre sampling
        # ours (issue 27): a share of the class-centred draws picks among these classes (names of the model's
        # label table, or values) when the case has them; [] / 0: off
        "small_classes": [], "small_prob": 0.0,
        # ours (issue 27): a share of the patches shows an in-plane field of view zoom_range x the patch's
        # (log-uniform), resampled to the patch: organ and body sizes beyond the training cases'; 0: off
        "zoom_prob": 0.0, "zoom_range": [0.7, 1.25],
    },
    "augment": {                        # paper: none ("we add flips/intensity jitter as options")
        "flip": False, "flip_prob": 0.5,
        "affine": False, "affine_prob": 0.2, "rotate_deg": 15.0, "scale": 0.1,
        "intensity": False, "intensity_prob": 0.5, "intensity_scale": 0.1, "intensity_shift": 0.1,
        "noise": False, "noise_prob": 0.2, "noise_std": 0.02,
        "organ_shift": False, "organ_shift_prob": 0.5, "organ_shift_range": [-0.05, 0.3],   # ours, see augment.py
        "slab": False, "slab_prob": 0.3, "slab_min": 0.25, "slab_value": 0.0,              # ours, see augment.py
        "edge_cut": False, "edge_cut_prob": 0.2,                                            # ours, see augment.py
    },
    "synth": None,                      # filled below: scdl.synth.engine.SYNTH_DEFAULTS (anatomy cases only)
    "data": {"num_workers": 2, "prefetch_factor": 2, "cache_dir": None,   # cache_dir None: <SCDL_HOME>/cache
             "resample_labels": False},   # True: a label map on another grid is resampled onto its CT (nearest)
    "validation": {"every": 500,        # iterations; 0: only at the end; -1: never (the package holds the last weights)
                   "overlap": 0.5, "sw_batch_size": 2, "mode": DEFAULT_BLENDING.value,
                   # ours (paper: none): test-time batch-norm statistics of every validation case, as the card's
                   # inference.bn_adapt (scdl.inference.adapt), so that checkpoints are chosen as they will be used;
                   # a fine-tune takes its init model's card value unless set
                   "bn_adapt": 0.0,
                   # ours: the sliding window (x, y, z voxels), as the card's inference.window_size; None: the
                   # training patch; a fine-tune takes its init model's card value unless set
                   "window_size": None},
    "checkpoint_every": 500,
    "log_every": 10,
    # ours (issue 27; paper: none): the mean of the networks' weights at every checkpoint from ``start`` x iterations
    # on (SWA / model soups, scdl.training.averaging); validated at the end, the best when it beats the best
    # checkpoint. Measured on the default model's validation (docs/default_model.md): the mean of the late
    # checkpoints of two runs at lr 0.01 (stages 4c, 4d) 0.651 vs their best checkpoint's 0.637, but within the
    # run that became 4.3.0 (lr 0.003 decayed to 0) the mean of iterations 500..900 0.653 vs its last 0.685: off.
    "averaging": {"enabled": False, "start": 0.5},
    "distributed": {"sync_batchnorm": "auto",    # auto: SyncBatchNorm with NCCL (GPUs), per-process BN with gloo
                    "find_unused_parameters": "auto"},   # auto: on for SCDL ablations (parts of the head unused)
    "cohort": None,                      # set by scdl train: where the cases came from (for --resume)
    "init": None,                        # set by scdl train --init: the package fine-tuned from
    # batch-norm running statistics while training: "update" (the usual training behaviour) or "frozen" (eval-mode
    # BN: normalisation by the stored statistics, affine weights still learn). Measured on the validation CT
    # (patient A, all organs; bench/finetune_partial.py): fine-tuning the default model with frozen statistics
    # and the CPU preset's SGD (lr 0.01) collapsed (mean Dice 0.81 -> 0.03 after 30 iterations), with updated
    # statistics it kept every organ (0.77 after 30, 0.82 after 200). "auto" (the default): frozen for a fine-tune
    # that inherits a recipe at the scaled learning rate (``lr_scale`` below; AdamW 0.001 for the default model),
    # update otherwise. Measured with bench/finetune_protocol.py (docs/training.md, issue 24): at 100 iterations
    # from 4.0.0 and at 200 from 4.1.0, frozen statistics gained more on the drawn liver (patient B +0.19 vs +0.11,
    # +0.31 vs +0.18) and kept the other organs as well or better (organs below -0.02: 3 vs 5, 7 vs 7).
    # --init only (docs/training.md "Fine-tuning"): ``inherit``: the init model's training recipe (its card's
    # provenance.recipe.config: optimizer, step, scdl, sampling, augment, batch; scdl.training.finetune.INHERITED)
    # is a layer between the preset and --config/flags/--set; ``keep_weight`` / ``keep_temperature``: the
    # "keep what you know" distillation from the frozen init model on the classes a case does not annotate
    # (scdl.training.keep; on for partially annotated cohorts, 0 = off; T = 2 as in Learning without Forgetting)
    # ``lr_scale``: the inherited learning rate times this, unless the user sets optimizer.lr (measured with
    # bench/finetune_protocol.py, docs/training.md: AdamW at the recipe's 0.01 moved the organs a liver-only case
    # does not draw by up to -0.2 Dice; at 0.001 they stayed within -0.06 while the liver gained +0.06...+0.11)
    # ``interpolate``: the package holds (1 - a) x the init model's weights + a x the fine-tuned ones (WiSE-FT,
    # scdl.training.averaging; 1 = the fine-tuned weights alone). Measured with bench/finetune_protocol.py (200
    # iterations from 4.1.0, liver-only case; docs/training.md): a = 0.5 kept the liver gain at +0.056 / +0.240 /
    # +0.001 (s0328 / B / A; +0.085 / +0.310 / +0.001 at a = 1) with 3 other organs below -0.02 instead of 7.
    "finetune": {"norm_stats": "auto", "inherit": True, "keep_weight": 1.0, "keep_temperature": 2.0,
                 "lr_scale": 0.1, "interpolate": 0.5},
    "step": {},                          # overrides of scdl.training.step.StepConfig (paper defaults there)
    "scdl": {},                          # overrides of scdl.training.step.SCDLConfig (paper defaults there)
}

from scdl.synth.engine import SYNTH_DEFAULTS as _SYNTH_DEFAULTS  # noqa: E402 - the owner of the synthesis keys

DEFAULTS["synth"] = dict(_SYNTH_DEFAULTS)

#: A small setting for a 2-core CPU: width 8, 48³ patches on a 4 mm grid, class-aware sampling, light
#: augmentation. bench/train.py measured 1.6 CPU-s per CPS+SCDL iteration here (3.0-4.2 s wall on the shared
#: machine), i.e. 40-105 minutes for 1500 iterations; how much Dice such a run reaches: see docs/training.md (only a supervised phantom data point).
CPU_PRESET: dict[str, Any] = {
    "iterations": 1500,
    "patch_size": [48, 48, 48],
    "network": {"n_filters": 8},
    "preprocessing": {"mode": "spacing", "spacing_mm": [4.0, 4.0, 4.0]},
    "sampling": {"class_prob": 0.5},
    # no flips: a left-right flip without swapping the left/right organ labels teaches the wrong side
    "augment": {"flip": False, "intensity": True, "noise": True},
    "data": {"num_workers": 1},
    "validation": {"every": 250, "sw_batch_size": 1},
    "checkpoint_every": 100,
}

PRESET_VALUES: dict[str, dict[str, Any]] = {Preset.PAPER.value: {}, Preset.CPU.value: CPU_PRESET}

#: Groups whose keys their owner checks (the step's dataclasses, the Preprocessor's card schema).
OPEN_GROUPS: tuple[str, ...] = ("step", "scdl", "preprocessing", "cohort", "init")


def deep_update(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into a copy of ``base``: nested dicts are merged, every other value replaced."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_value(text: str) -> Any:
    """``"0.5"`` -> 0.5, ``"[64,64,64]"`` -> list, ``"true"`` -> True, ``"null"`` -> None, else the string."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return text


def apply_overrides(config: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings with dotted keys (``optimizer.lr=0.005``, ``scdl.lam=0.2``)."""
    out = copy.deepcopy(config)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ScdlError(f"--set expects KEY=VALUE, got {item!r}.", fix="write e.g. --set optimizer.lr=0.005")
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], dict):
                if part in node:
                    raise ScdlError(f"--set {key}: {part!r} is not a group of settings.",
                                    fix="see RUN_DIR/config.json or docs/training.md for the setting names.")
                if not _open_group(parts):
                    raise ScdlError(f"--set {key}: unknown setting {part!r}.",
                                    fix="see docs/training.md for the setting names.")
                node[part] = {}
            node = node[part]
        leaf = parts[-1]
        if leaf not in node and not _open_group(parts):
            raise ScdlError(f"--set {key}: unknown setting {leaf!r}.",
                            fix="see docs/training.md (or a run's config.json) for the setting names.")
        node[leaf] = parse_value(value)
    return out


def _open_group(parts: list[str]) -> bool:
    """Groups whose keys are checked later by their owner (the step's dataclasses)."""
    return parts[0] in OPEN_GROUPS


def _check_known(config: Mapping[str, Any], reference: Mapping[str, Any], where: str, source: str) -> None:
    for key, value in config.items():
        if key not in reference:
            raise ScdlError(f"unknown setting {where}{key!r}.", source,
                            "remove it or fix its name (see docs/training.md for the setting names).")
        if key in OPEN_GROUPS and not where:
            continue
        if isinstance(value, Mapping) and isinstance(reference[key], Mapping):
            _check_known(value, reference[key], f"{where}{key}.", source)


def load_config_file(path: os.PathLike | str) -> dict[str, Any]:
    """Read a JSON config file (partial trees are fine); unknown keys are refused with their name."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScdlError("the config file does not exist.", path, "check the path given to --config.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ScdlError(f"the config file is not valid JSON ({err}).", path, "fix the JSON syntax.") from None
    if not isinstance(data, dict):
        raise ScdlError("the config file must hold a JSON object.", path, 'write e.g. {"iterations": 2000}.')
    _check_known(data, DEFAULTS, "", str(path))
    return data


def choose_preset(device: Optional[str], cuda_available: bool) -> tuple[str, str]:
    """The preset of a run that names none: ``(preset, why)``. ``cpu`` where training runs on the CPU (no
    CUDA, or ``--device cpu``), else the paper's."""
    dev = str(device or "auto")
    if dev.startswith("cuda"):
        return Preset.PAPER.value, f"--device {dev}"
    if dev == "cpu":
        return Preset.CPU.value, "--device cpu"
    if cuda_available:
        return Preset.PAPER.value, "CUDA is available"
    return Preset.CPU.value, "no CUDA on this machine"


def resolve_config(preset: str = DEFAULT_PRESET.value, file: Optional[os.PathLike | str] = None,
                   values: Optional[Mapping[str, Any]] = None, overrides: Iterable[str] = (),
                   init: Any = None) -> dict[str, Any]:
    """Build the training configuration: defaults -> preset -> [init model's recipe] -> file -> ``values``
    (flags) -> ``overrides``.

    ``init``: the ``--init`` model (path or id, or its card as a dict): its training recipe is inherited
    (:func:`recipe_layer`) unless ``finetune.inherit`` is false; ``config["init"]`` then
    records the model, what was inherited and what the user's layers kept (``finetune.inherited_line``)."""
    if preset not in PRESET_VALUES:
        raise ScdlError(f"unknown preset {preset!r}.", fix=f"use one of {', '.join(PRESETS)}.")
    overrides = list(overrides)
    base = deep_update(DEFAULTS, PRESET_VALUES[preset])
    base["preset"] = str(preset)
    file_values = load_config_file(file) if file is not None else None

    def layers(recipe: Mapping[str, Any]) -> dict[str, Any]:
        config = deep_update(base, recipe)
        if file_values is not None:
            config = deep_update(config, file_values)
        if values:
            config = deep_update(config, {k: v for k, v in values.items() if v is not None})
        return apply_overrides(config, overrides)

    config = layers({})
    if init is not None:
        from scdl.training import inherit as recipes

        card = dict(init) if isinstance(init, Mapping) else recipes.load_init_card(init)
        inherit = config["finetune"].get("inherit", True) is not False
        recipe = recipes.recipe_config(card)
        layer = recipe_layer(card) if inherit else {}
        if layer:
            config = layers(layer)
        inherited, yours = recipes.inherited_settings(layer, base, config)
        config["init"] = {**(config.get("init") or {}),
                          "model": str(init) if not isinstance(init, Mapping) else card.get("id"),
                          "id": card.get("id"), "inherit": inherit, "recipe": bool(recipe),
                          "inherited": inherited, "yours": yours,
                          # the post-processing and test-time settings chosen for the init model: its fine-tune's
                          # card keeps them (scdl.training.finetune.inherited_inference)
                          "inference": dict(card.get("inference") or {})}
        scale = config["finetune"].get("lr_scale", 1.0)
        user_lr = _user_sets(("optimizer", "lr"), file_values, values, overrides)
        if "lr" in layer.get("optimizer", {}) and not user_lr and isinstance(scale, (int, float)) and scale != 1:
            recipe_lr = float(config["optimizer"]["lr"])   # the inherited rate, scaled for a fine-tune
            config["optimizer"]["lr"] = recipe_lr * float(scale)
            config["init"]["lr_scaled"] = [recipe_lr, config["optimizer"]["lr"]]
        card_adapt = (card.get("inference") or {}).get("bn_adapt")
        if card_adapt is not None and not _user_sets(("validation", "bn_adapt"), file_values, values, overrides):
            config["validation"]["bn_adapt"] = card_adapt     # validate as the init model's card segments
        card_window = (card.get("inference") or {}).get("window_size")
        if card_window is not None and not _user_sets(("validation", "window_size"), file_values, values, overrides):
            config["validation"]["window_size"] = list(card_window)
    if config["finetune"].get("norm_stats") == "auto":     # see DEFAULTS: frozen for a recipe fine-tune at the scaled rate
        frozen = bool((config.get("init") or {}).get("lr_scaled"))
        config["finetune"]["norm_stats"] = "frozen" if frozen else "update"
        if frozen:
            config["init"]["norm_stats_frozen"] = True
    validate_config(config)
    return config


def _user_sets(path: tuple[str, ...], file_values: Optional[Mapping[str, Any]], values: Optional[Mapping[str, Any]],
               overrides: list[str]) -> bool:
    """Whether the user's layers (config file, flags, ``--set``) give a value at ``path``."""
    for tree in (file_values or {}, values or {}):
        node: Any = tree
        for part in path:
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            if node is not None:
                return True
    return any(str(o).split("=", 1)[0].strip() == ".".join(path) for o in overrides)


def recipe_layer(card: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a fine-tune from ``card`` inherits: its recipe resolved as it was trained (defaults ->
    its preset -> its config), the ``scdl.training.inherit.INHERITED`` groups of it. Empty when the card
    records no recipe."""
    from scdl.training import inherit

    recipe = inherit.recipe_config(card)
    if not recipe:
        return {}
    trained = deep_update(deep_update(DEFAULTS, PRESET_VALUES.get(str(recipe.get("preset") or "paper"), {})), recipe)
    return inherit.inherited_groups(trained, DEFAULTS)


def validate_config(config: Mapping[str, Any]) -> None:
    """Refuse values that cannot work, naming the setting and the fix."""
    def bad(key: str, why: str, fix: str) -> ScdlError:
        return ScdlError(f"setting {key}: {why}", fix=fix)

    _check_known(config, DEFAULTS, "", "config")
    if config["framework"] not in FRAMEWORKS:
        raise bad("framework", f"{config['framework']!r} is not a framework.", f"use one of {', '.join(FRAMEWORKS)}.")
    if not isinstance(config["iterations"], int) or config["iterations"] < 1:
        raise bad("iterations", f"{config['iterations']!r} is not a positive integer.", "use e.g. --iterations 2000.")
    if not isinstance(config.get("cpu_bfloat16", False), bool):
        raise bad("cpu_bfloat16", f"{config['cpu_bfloat16']!r} is not true or false.", "use --set cpu_bfloat16=true.")
    patch = config["patch_size"]
    if patch == "init":
        pass                      # fine-tuning: the init model's patch, resolved by the Trainer
    elif not is_window_size(patch):     # the patch and the sliding window: one rule (multiples of 16)
        raise bad("patch_size", f"{patch!r} must be three multiples of 16 (the VNet down-samples 16x).",
                  "use e.g. --set patch_size=[64,64,64].")
    if not isinstance(config["accumulate"], int) or config["accumulate"] < 1:
        raise bad("accumulate", f"{config['accumulate']!r} is not a positive integer.", "use 1 (no accumulation) or more.")
    for key in ("labeled_batch", "unlabeled_batch"):
        if not isinstance(config[key], int) or config[key] < 0:
            raise bad(key, f"{config[key]!r} is not a non-negative integer.", f"use e.g. --set {key}=2.")
    if config["labeled_batch"] < 1:
        raise bad("labeled_batch", "at least one labeled patch per step is needed.", "use --set labeled_batch=2.")
    if Framework(config["framework"]).uses_unlabeled and config["unlabeled_batch"] < 1:
        raise bad("unlabeled_batch", f"framework {config['framework']} learns from unlabeled patches.",
                  "use --set unlabeled_batch=2, or --framework supervised.")
    prob = config["sampling"]["class_prob"]
    if not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
        raise bad("sampling.class_prob", f"{prob!r} is not a probability.", "use a value in [0, 1].")
    small_prob = config["sampling"].get("small_prob", 0.0)
    if isinstance(small_prob, bool) or not isinstance(small_prob, (int, float)) or not 0.0 <= small_prob <= 1.0:
        raise bad("sampling.small_prob", f"{small_prob!r} is not a probability.", "use a value in [0, 1].")
    zoom_prob = config["sampling"].get("zoom_prob", 0.0)
    if isinstance(zoom_prob, bool) or not isinstance(zoom_prob, (int, float)) or not 0.0 <= zoom_prob <= 1.0:
        raise bad("sampling.zoom_prob", f"{zoom_prob!r} is not a probability.", "use a value in [0, 1].")
    zoom_range = config["sampling"].get("zoom_range", [1.0, 1.0])
    if (not isinstance(zoom_range, (list, tuple)) or len(zoom_range) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in zoom_range)
            or zoom_range[0] > zoom_range[1]):
        raise bad("sampling.zoom_range", f"{zoom_range!r} is not [low, high] with 0 < low <= high.",
                  "use e.g. --set 'sampling.zoom_range=[0.7,1.25]'.")
    if not isinstance(config["sampling"].get("small_classes", []), (list, tuple)):
        raise bad("sampling.small_classes", "is not a list of class names or values.",
                  'use e.g. --set \'sampling.small_classes=["pancreas","esophagus"]\'.')
    opt = config["optimizer"]
    if opt.get("name", "sgd") not in OPTIMIZERS:
        raise bad("optimizer.name", f"{opt.get('name')!r} is not one of {', '.join(OPTIMIZERS)}.",
                  "use --set optimizer.name=sgd (the paper's) or adamw.")
    if not opt["lr"] > 0:
        raise bad("optimizer.lr", "the learning rate must be positive.", "use e.g. --set optimizer.lr=0.01.")
    aug = config["augment"]
    for key in ("flip_prob", "affine_prob", "intensity_prob", "noise_prob", "organ_shift_prob", "slab_prob",
                "edge_cut_prob"):
        value = aug.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise bad(f"augment.{key}", f"{value!r} is not a probability.", "use a value in [0, 1].")
    shift = aug.get("organ_shift_range", [0.0, 0.0])
    if (not isinstance(shift, (list, tuple)) or len(shift) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in shift) or shift[0] > shift[1]):
        raise bad("augment.organ_shift_range", f"{shift!r} is not a [low, high] pair.",
                  "use e.g. --set augment.organ_shift_range=[-0.05,0.3] (window units: 0.1 = 40 HU).")
    slab_min = aug.get("slab_min", 0.25)
    if isinstance(slab_min, bool) or not isinstance(slab_min, (int, float)) or not 0.0 < slab_min <= 1.0:
        raise bad("augment.slab_min", f"{slab_min!r} is not a fraction in (0, 1].", "use e.g. --set augment.slab_min=0.25.")
    bn_adapt = config["validation"].get("bn_adapt", 0.0)
    if not is_unit_weight(bn_adapt):
        raise bad("validation.bn_adapt", f"{bn_adapt!r} is not a weight in [0, 1].",
                  "use e.g. --set validation.bn_adapt=0.5 (0: the trained batch-norm statistics).")
    window = config["validation"].get("window_size")
    if window is not None and not is_window_size(window):
        raise bad("validation.window_size", f"{window!r} is not three multiples of 16 (x, y, z voxels).",
                  "use e.g. --set validation.window_size=[96,96,32] or null (the training patch).")
    if not isinstance(config["validation"]["every"], int) or config["validation"]["every"] < -1:
        raise bad("validation.every", "must be an integer >= -1 (0: validate only at the end, -1: never).",
                  "use e.g. --set validation.every=500.")
    for key in ("checkpoint_every", "log_every"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise bad(key, "must be a positive integer.", f"use e.g. --set {key}=100.")
    averaging = config["averaging"]
    if not isinstance(averaging.get("enabled"), bool):
        raise bad("averaging.enabled", f"{averaging.get('enabled')!r} is not true or false.",
                  "use --set averaging.enabled=true.")
    start = averaging.get("start")
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not 0.0 <= start < 1.0:
        raise bad("averaging.start", f"{start!r} is not a fraction of the run in [0, 1).",
                  "use e.g. --set averaging.start=0.5 (the second half of the run).")
    finetune = config["finetune"]
    weight = finetune.get("keep_weight", 0.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
        raise bad("finetune.keep_weight", f"{weight!r} is not a number >= 0.", "use e.g. 1 (0 switches it off).")
    interpolate = finetune.get("interpolate", 1.0)
    if isinstance(interpolate, bool) or not isinstance(interpolate, (int, float)) or not 0.0 < interpolate <= 1.0:
        raise bad("finetune.interpolate", f"{interpolate!r} is not a share in (0, 1].",
                  "use e.g. 0.5 (half initial, half fine-tuned weights; 1 keeps the fine-tuned weights alone).")
    lr_scale = finetune.get("lr_scale", 1.0)
    if isinstance(lr_scale, bool) or not isinstance(lr_scale, (int, float)) or not lr_scale > 0:
        raise bad("finetune.lr_scale", f"{lr_scale!r} is not a number > 0.", "use e.g. 0.1 (1 keeps the recipe's rate).")
    temperature = finetune.get("keep_temperature", 2.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise bad("finetune.keep_temperature", f"{temperature!r} is not a number > 0.", "use e.g. 2.")
    if not isinstance(finetune.get("inherit", True), bool):
        raise bad("finetune.inherit", f"{finetune.get('inherit')!r} is not true or false.",
                  "use --set finetune.inherit=false to train with the preset's settings instead of the init "
                  "model's recipe.")
    if config["finetune"]["norm_stats"] not in NORM_STATS:
        raise bad("finetune.norm_stats", f"{config['finetune']['norm_stats']!r} is not one of {', '.join(NORM_STATS)}.",
                  "use auto (the default: frozen for a fine-tune at the scaled learning rate), update or frozen.")
    if not isinstance(config["threads"], int) or config["threads"] < 0:
        raise bad("threads", f"{config['threads']!r} is not an integer >= 0.", "use 0 (torch's default) or 1, 2, ...")
    workers = config["data"]["num_workers"]
    if not isinstance(workers, int) or workers < 0:
        raise bad("data.num_workers", f"{workers!r} is not an integer >= 0.", "use 0 (load in the main process) or more.")


def save_config(config: Mapping[str, Any], path: os.PathLike | str) -> None:
    """Write the resolved config atomically as pretty JSON."""
    from scdl.io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
