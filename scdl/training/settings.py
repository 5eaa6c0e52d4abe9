"""The training configuration as a typed, frozen tree: :class:`TrainConfig` and its sections.

``scdl.training.config`` resolves the settings as JSON-like layers (defaults -> preset -> [init recipe] -> file
-> flags -> ``--set``) and validates them; :meth:`TrainConfig.from_dict` converts the resolved tree once into
this frozen form (the trainer reads typed fields), :meth:`TrainConfig.to_dict` gives back the tree that
``config.json`` holds (same keys, same values: old run folders and ``--resume`` read it back). Changes make a
new configuration (:meth:`TrainConfig.replace`, ``scdl.training.finetune.adjust_to_init``).

Keys a run folder written by an older SCDL lacks take the default of :data:`scdl.training.config.DEFAULTS`,
except those whose absence meant something else (:data:`MISSING`: ``finetune.keep_weight`` 0 and
``finetune.interpolate`` 1 = off for runs configured before the settings existed; ``synth`` None = the synthesis
engine's own defaults).

Groups whose keys their owner checks (``step``/``scdl``: ``scdl.training.step``; ``preprocessing``: the
card's schema, ``scdl.processing``; ``synth``: ``scdl.synth.engine``; ``cohort``, ``init``: records of
``scdl train``) stay read-only mappings. No torch here (the SCDLTrain panel reads the defaults).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Mapping, Optional, Union

from scdl.training.config import DEFAULTS, Framework, Preset, deep_update, validate_config

#: What an absent key meant before it existed (else: its DEFAULTS value); ``(group, key)`` or ``(key,)``.
MISSING: dict[tuple[str, ...], Any] = {("finetune", "keep_weight"): 0.0, ("finetune", "interpolate"): 1.0,
                                       ("synth",): None}


def _frozen(value: Any) -> Any:
    """A read-only copy of an open group (``None`` stays None)."""
    return None if value is None else MappingProxyType(copy.deepcopy(dict(value)))


def _plain(value: Any) -> Any:
    """JSON-like form: mappings -> dicts, tuples -> lists, Choices -> their strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Framework) or isinstance(value, Preset):
        return str(value.value)
    return copy.deepcopy(value)


class _Section:
    """A typed group of ``config.json``: built from its dict (lists -> tuples), written back as one."""

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any]):
        return cls(**{f.name: tuple(tree[f.name]) if isinstance(tree[f.name], list) else tree[f.name]
                      for f in fields(cls)})      # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}   # type: ignore[arg-type]


@dataclass(frozen=True)
class OptimizerSettings(_Section):
    """``optimizer``: SGD (the paper's) or AdamW, poly learning-rate decay (``scdl.training.optim``)."""

    name: str
    lr: float
    momentum: float
    weight_decay: float
    poly_power: float
    nesterov: bool


@dataclass(frozen=True)
class NetworkSettings(_Section):
    """``network``: the VNet's input channels, width and normalisation (``scdl.networks.vnet``)."""

    name: str
    in_channels: int
    n_filters: int
    norm: str


@dataclass(frozen=True)
class SamplingSettings(_Section):
    """``sampling``: class-centred patch draws (``scdl.training.sampling``)."""

    class_prob: float
    max_locations_per_class: int
    small_classes: tuple[Union[str, int], ...]
    small_prob: float
    zoom_prob: float
    zoom_range: tuple[float, float]


@dataclass(frozen=True)
class AugmentSettings(_Section):
    """``augment``: the patch augmentations and their probabilities (``scdl.training.augment``)."""

    flip: bool
    flip_prob: float
    affine: bool
    affine_prob: float
    rotate_deg: float
    scale: float
    intensity: bool
    intensity_prob: float
    intensity_scale: float
    intensity_shift: float
    noise: bool
    noise_prob: float
    noise_std: float
    organ_shift: bool
    organ_shift_prob: float
    organ_shift_range: tuple[float, float]
    slab: bool
    slab_prob: float
    slab_min: float
    slab_value: float
    edge_cut: bool
    edge_cut_prob: float


@dataclass(frozen=True)
class DataSettings(_Section):
    """``data``: loader processes, the preprocessing cache, label maps on another grid."""

    num_workers: int
    prefetch_factor: int
    cache_dir: Optional[str]
    resample_labels: bool


@dataclass(frozen=True)
class ValidationSettings(_Section):
    """``validation``: how often (``every``: 0 only at the end, -1 never), the sliding window's settings and the
    test-time batch-norm statistics (``bn_adapt``, :mod:`scdl.inference.adapt`); ``window_size`` (x, y, z)
    or None for the training patch."""

    every: int
    overlap: float
    sw_batch_size: int
    mode: str
    bn_adapt: float = 0.0
    window_size: Optional[tuple[int, int, int]] = None


@dataclass(frozen=True)
class DistributedSettings(_Section):
    """``distributed``: SyncBatchNorm and DDP's unused-parameter search ("auto" or a bool)."""

    sync_batchnorm: Union[str, bool]
    find_unused_parameters: Union[str, bool]


@dataclass(frozen=True)
class FinetuneSettings(_Section):
    """``finetune`` (``--init``): batch-norm statistics, the inherited recipe, "keep what you know"."""

    norm_stats: str
    inherit: bool
    keep_weight: float
    keep_temperature: float
    lr_scale: float
    interpolate: float


@dataclass(frozen=True)
class AveragingSettings(_Section):
    """``averaging``: the running mean of the networks' weights from ``start`` x iterations on
    (``scdl.training.averaging``)."""

    enabled: bool
    start: float


_SECTIONS: dict[str, type] = {"optimizer": OptimizerSettings, "network": NetworkSettings,
                              "sampling": SamplingSettings, "augment": AugmentSettings, "data": DataSettings,
                              "validation": ValidationSettings, "distributed": DistributedSettings,
                              "finetune": FinetuneSettings, "averaging": AveragingSettings}
_OPEN: tuple[str, ...] = ("preprocessing", "synth", "cohort", "init", "step", "scdl")


@dataclass(frozen=True)
class TrainConfig:
    """The resolved settings of one training run (the keys of ``config.json``; see module docstring)."""

    preset: str
    framework: Framework
    iterations: int
    seed: int
    labeled_batch: int                  # per process and micro-batch
    unlabeled_batch: int
    accumulate: int                     # micro-batches per optimiser step
    patch_size: Union[tuple[int, int, int], str]    # (x, y, z) voxels; "init": the --init model's (trainer)
    amp: bool
    cpu_bfloat16: bool
    threads: int                        # torch CPU threads (0: torch's default)
    labels: Optional[str]               # bundled table name or CSV path; "init": the --init model's classes
    checkpoint_every: int
    log_every: int
    averaging: AveragingSettings
    optimizer: OptimizerSettings
    network: NetworkSettings
    sampling: SamplingSettings
    augment: AugmentSettings
    data: DataSettings
    validation: ValidationSettings
    distributed: DistributedSettings
    finetune: FinetuneSettings
    preprocessing: Mapping[str, Any]    # the card's preprocessing block (scdl.processing), (x, y, z) order
    synth: Optional[Mapping[str, Any]]  # scdl.synth.engine.SYNTH_DEFAULTS keys (None: the engine's defaults)
    step: Mapping[str, Any]             # scdl.training.step.StepConfig (every key once the step is built)
    scdl: Mapping[str, Any]             # scdl.method.config.SCDLConfig (idem)
    cohort: Optional[Mapping[str, Any]] = None     # where the cases came from (scdl train; --resume reads it)
    init: Optional[Mapping[str, Any]] = None       # the --init model and what its recipe gave

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any]) -> "TrainConfig":
        """Validate and convert a settings tree (resolved by ``scdl.training.config``, or ``config.json``);
        absent keys: see module docstring. Raises ``ScdlError`` naming a bad setting."""
        full = deep_update(DEFAULTS, {k: v for k, v in tree.items() if k not in _OPEN})
        full.update({k: copy.deepcopy(v) for k, v in tree.items() if k in _OPEN})    # as given, not merged
        for path, value in MISSING.items():
            node: Any = tree
            for part in path:
                node = node.get(part, _ABSENT) if isinstance(node, Mapping) else _ABSENT
            if node is _ABSENT:
                full = deep_update(full, _nest(path, value)) if len(path) > 1 else {**full, path[0]: value}
        validate_config(full)
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = full[f.name]
            if f.name in _SECTIONS:
                value = _SECTIONS[f.name].from_dict(value)
            elif f.name in _OPEN:
                value = _frozen(value)
            elif f.name == "framework":
                value = Framework(value)
            elif f.name == "patch_size" and isinstance(value, (list, tuple)):
                value = tuple(value)
            values[f.name] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON tree of ``config.json`` (plain dicts and lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, _Section) else _plain(value)
        return out

    def replace(self, **changes: Any) -> "TrainConfig":
        """A new configuration with ``changes`` (sections as their dataclass or as a dict; open groups as dicts),
        validated."""
        tree = self.to_dict()
        for key, value in changes.items():
            tree[key] = value.to_dict() if isinstance(value, _Section) else _plain(value)
        return TrainConfig.from_dict(tree)

    @property
    def patch(self) -> tuple[int, int, int]:
        """The training patch (x, y, z), resolved (not ``"init"``)."""
        if isinstance(self.patch_size, str):
            raise ValueError("patch_size 'init' is resolved by the trainer from the --init model")
        return tuple(int(p) for p in self.patch_size)     # type: ignore[return-value]

    @property
    def unlabeled_per_step(self) -> int:
        """Unlabeled patches per micro-batch the framework uses (0 for supervised)."""
        return self.unlabeled_batch if self.framework.uses_unlabeled else 0


_ABSENT = object()


def _nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out




def as_train_config(config: Union[TrainConfig, Mapping[str, Any]]) -> TrainConfig:
    """``config`` as a :class:`TrainConfig` (a settings tree is converted, see :meth:`TrainConfig.from_dict`)."""
    return config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)


def replace_section(section: Any, **changes: Any) -> Any:
    """A copy of a frozen section with ``changes`` (``dataclasses.replace``)."""
    return dataclasses.replace(section, **changes)
