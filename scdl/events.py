"""The progress event stream: one kind per line, one typed record per kind, one writer and one parser.

A ``--progress json`` child (``scdl segment``, ``scdl train`` ...) prints one JSON object per line on stdout;
the Slicer modules, the SSL benchmark and the release recipe read them back. This module is the contract:

- :class:`EventKind`: every kind the core emits;
- one frozen record per kind (:class:`IterationEvent`, :class:`ValidationEvent` ...), its fields in the order
  they are written, typed as emitted (``Optional`` where the core writes ``null``);
- :meth:`Event.to_line`: the record as its JSON line (``Progress.emit`` writes it in JSON mode);
- :func:`parse_event` (the line's JSON object, defensively) and :func:`parse_record` / :func:`record_from_dict`
  (that object as its record): the one parser of the stream.

On the wire a line is told by its first key::

    {"phase": "infer", "done": 3, "total": 12, "eta_s": 4.2}            PROGRESS: one phase of work (PhaseEvent)
    {"phase": "done", "output": "/path/out.seg.nrrd", ...}              DONE: the command's result (DoneEvent)
    {"event": "iteration", "iteration": 10, "iterations": 1500, ...}    a named event: {"event": KIND, fields...}

Parsing is lenient where the stream may be newer or hostile, as the Slicer side needs: a field the record does
not name is kept in ``extra`` (and written back after the named ones), a named field the line lacks is
``None``, an unknown ``event`` name has no record (:func:`record_from_dict` returns ``None``; the line's object
is still there for whoever wants it). Values are not coerced: :func:`parse_event` guarantees that counters are
finite numbers or ``None`` and names are strings; a list where a record promises a mapping stays a list, and
the reader guards it (``TrainMonitor.skipped``). Standard library only: the Slicer process imports it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Optional

from scdl.choice import Choice


class EventKind(Choice):
    """Every kind of line in the stream (the value is the ``event`` name; PROGRESS and DONE are ``phase`` lines)."""

    PROGRESS = "progress"           # {"phase": NAME, "done", "total", "eta_s"}: every phase (Progress.phase)
    DONE = "done"                   # {"phase": "done", ...}: the command's last line (Progress.done)
    MESSAGE = "message"             # Progress.message (JSON mode)
    WARNING = "warning"             # Progress.warning
    PLAN = "plan"                   # scdl train: the plan line
    PROBLEM = "problem"             # scdl train --check-only: one per cohort problem
    ANNOTATION = "annotation"       # scdl train: classes each case annotates (partially labeled cohort)
    INIT = "init"                   # trainer: fine-tuning from a model, which classes were kept
    START = "start"                 # trainer: training starts or resumes
    ITERATION = "iteration"         # trainer: every log_every iterations
    VALIDATION = "validation"       # trainer: every validation
    CHECKPOINT = "checkpoint"       # trainer: every checkpoint
    REPLICAS = "replicas"           # trainer: distributed run, the processes' weights compared at the end
    MODEL = "model"                 # packaging: the model package written
    CONFIDENCE = "confidence"       # scdl segment --uncertainty: per-organ confidence
    SAMPLE = "sample"               # scdl demo: the sample and whether the model saw it
    DICE = "dice"                   # scdl demo: the per-organ scores
    RUN = "run"                     # scdl bench: one configuration and seed done


#: Metadata of a field written only when it is not ``None`` (``ValidationEvent.baseline``).
_OMIT_NONE = {"omit_none": True}


def _omitted_when_none() -> Any:
    return field(default=None, metadata=_OMIT_NONE)


def _jsonable(value: Any) -> Any:
    """Make values JSON-safe (NaN/inf -> None, numpy/torch scalars -> Python, tuples -> lists)."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True, kw_only=True)
class Event:
    """A line of the stream. Subclasses declare ``kind`` and their fields (in wire order).

    ``extra``: fields of a parsed line that the record does not name (a newer core), kept and written back.
    """

    kind: ClassVar[EventKind]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        """The named fields in declaration order (those marked omit-when-None left out), then ``extra``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = value
        out.update(self.extra)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The line's object: ``{"event": kind, **fields}`` (:class:`PhaseEvent` and :class:`DoneEvent` differ)."""
        return {"event": self.kind.value, **self.fields()}

    def to_line(self) -> str:
        """The JSON line (no newline), NaN/inf written as ``null``, as ``Progress.emit`` prints it."""
        return json.dumps(_jsonable(self.to_dict()), separators=(", ", ": "))

    @classmethod
    def from_fields(cls, data: Mapping[str, Any]) -> "Event":
        """The record of a line's fields (discriminator removed): named fields missing -> ``None``, the
        others into ``extra``. Never raises; values are taken as they are (see the module docstring)."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
        extra = {k: v for k, v in data.items() if k not in names}
        return cls(**{name: data.get(name) for name in names}, extra=extra)


# -- phase lines --------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class PhaseEvent(Event):
    """``{"phase": "infer", "done": 3, "total": 12, "eta_s": 4.2}``: ``done`` of ``total`` steps of a phase;
    ``eta_s`` the phase's seconds left (``None`` before the first step)."""

    kind: ClassVar[EventKind] = EventKind.PROGRESS
    phase: str
    done: int
    total: int
    eta_s: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        return self.fields()


@dataclass(frozen=True, kw_only=True)
class DoneEvent(Event):
    """``{"phase": "done", ...}``: the last line of a successful command, carrying its result. The keys are the
    command's (docs/ARCHITECTURE.md, "Progress events"): ``segment`` output, device, timings_s [, uncertainty,
    preview]; ``train`` output, iteration, best_mean_dice, elapsed_s; ``train --check-only`` ok, errors,
    warnings, validation_source and the cohort's counts; ``models download`` model, path; ``phantom`` output,
    cases, seconds; ``demo`` outputs, mean_dice ...; ``bench`` output, table, chart, summary."""

    kind: ClassVar[EventKind] = EventKind.DONE
    result: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"phase": "done", **self.result, **self.extra}

    @classmethod
    def from_fields(cls, data: Mapping[str, Any]) -> "DoneEvent":
        return cls(result=dict(data))


# -- text ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class MessageEvent(Event):
    """A human-readable line (one line: control characters escaped by ``scdl.errors.one_line``)."""

    kind: ClassVar[EventKind] = EventKind.MESSAGE
    text: str


@dataclass(frozen=True, kw_only=True)
class WarningEvent(Event):
    """A warning for the user (also printed on stderr as ``warning: TEXT``)."""

    kind: ClassVar[EventKind] = EventKind.WARNING
    text: str


# -- scdl train: before the loop ----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class PlanEvent(Event):
    """The training plan (``Trainer.plan``): settings, the time and memory estimate and ``text``, one line."""

    kind: ClassVar[EventKind] = EventKind.PLAN
    preset: Optional[str]
    preset_note: str
    framework: str
    iterations: int
    patch_size: list[int]
    labeled_batch: int
    unlabeled_batch: int
    accumulate: int
    device: str
    keep_teachers: int
    seconds_per_iteration: Optional[float]
    total_seconds: Optional[float]
    peak_memory_mib: Optional[float]
    extrapolated: bool
    text: str


@dataclass(frozen=True, kw_only=True)
class ProblemEvent(Event):
    """One problem of the cohort check (``scdl.training.problems.CohortProblem``)."""

    kind: ClassVar[EventKind] = EventKind.PROBLEM
    severity: str
    code: str
    message: str
    path: str = ""
    case: str = ""
    fix: str = ""


@dataclass(frozen=True, kw_only=True)
class AnnotationEvent(Event):
    """Per labeled case the classes it annotates (``cases``: ``{"case", "annotated", ...}`` mappings);
    ``partial``: some case leaves classes unknown."""

    kind: ClassVar[EventKind] = EventKind.ANNOTATION
    partial: bool
    cases: list[dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class InitEvent(Event):
    """Fine-tuning from ``init`` (``scdl.training.finetune.initialise_from``): class names kept, new, dropped."""

    kind: ClassVar[EventKind] = EventKind.INIT
    init: str
    matched: list[str]
    new: list[str]
    dropped: list[str]
    networks_loaded: int
    networks_fresh: int


# -- scdl train: the loop -----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class StartEvent(Event):
    """Training starts (``iteration`` 0) or resumes (the checkpoint's iteration) towards ``iterations``."""

    kind: ClassVar[EventKind] = EventKind.START
    iteration: int
    iterations: int
    framework: str
    device: str
    world_size: int
    run_dir: str
    labeled: int
    unlabeled: int
    validation: int
    validation_source: str


@dataclass(frozen=True, kw_only=True)
class IterationEvent(Event):
    """The logging window's means: ``loss`` term -> value (``total`` first), the learning rate, speed, the
    window's ETA in seconds and the share of time spent waiting for data."""

    kind: ClassVar[EventKind] = EventKind.ITERATION
    iteration: int
    iterations: int
    loss: dict[str, Optional[float]]
    lr: float
    it_per_s: float
    eta_s: float
    data_wait: float


@dataclass(frozen=True, kw_only=True)
class ValidationEvent(Event):
    """One validation: mean and per-class Dice (``None``: not scored), per-class share of cases where the class
    was found, the best so far; ``baseline`` (written only when True): the initial model before fine-tuning."""

    kind: ClassVar[EventKind] = EventKind.VALIDATION
    iteration: int
    mean_dice: Optional[float]
    dice: dict[str, Optional[float]]
    found: dict[str, Optional[float]]
    best_iteration: Optional[int]
    best_mean_dice: Optional[float]
    source: str
    baseline: Optional[bool] = _omitted_when_none()


@dataclass(frozen=True, kw_only=True)
class CheckpointEvent(Event):
    """A checkpoint written at ``iteration`` to ``path``."""

    kind: ClassVar[EventKind] = EventKind.CHECKPOINT
    iteration: int
    path: str


@dataclass(frozen=True, kw_only=True)
class ReplicasEvent(Event):
    """Distributed run: the largest weight difference between the processes at the end (0: identical)."""

    kind: ClassVar[EventKind] = EventKind.REPLICAS
    iteration: int
    world_size: int
    max_weight_difference: float


@dataclass(frozen=True, kw_only=True)
class ModelEvent(Event):
    """The model package written to ``path`` from the weights of ``selected_iteration``."""

    kind: ClassVar[EventKind] = EventKind.MODEL
    path: str
    selected_iteration: int
    mean_dice: Optional[float]


# -- other commands -----------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ConfidenceEvent(Event):
    """``scdl segment --uncertainty``: organ name -> mean confidence (``None``: the organ was not found)."""

    kind: ClassVar[EventKind] = EventKind.CONFIDENCE
    organs: dict[str, Optional[float]]


@dataclass(frozen=True, kw_only=True)
class SampleEvent(Event):
    """``scdl demo``: the sample's patient and whether it was in the model's training data
    (``training``, ``validation``, ``held-out``, ``unknown``), said in ``text``."""

    kind: ClassVar[EventKind] = EventKind.SAMPLE
    patient: Optional[str]
    in_training_data: str
    text: str


@dataclass(frozen=True, kw_only=True)
class DiceEvent(Event):
    """``scdl demo``: per-class rows and the means (``scdl.metrics.evaluate.to_json_dict``)."""

    kind: ClassVar[EventKind] = EventKind.DICE
    classes: list[dict[str, Any]]
    mean: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class RunEvent(Event):
    """``scdl bench``: one configuration and seed trained and scored (or reused)."""

    kind: ClassVar[EventKind] = EventKind.RUN
    config: str
    seed: int
    reused: bool
    mean_dice: Optional[float]
    small_dice: Optional[float]
    train_wall_s: Optional[float]
    score_s: Optional[float]


#: The record of each kind.
RECORDS: dict[EventKind, type[Event]] = {cls.kind: cls for cls in (
    PhaseEvent, DoneEvent, MessageEvent, WarningEvent, PlanEvent, ProblemEvent, AnnotationEvent, InitEvent,
    StartEvent, IterationEvent, ValidationEvent, CheckpointEvent, ReplicasEvent, ModelEvent, ConfidenceEvent,
    SampleEvent, DiceEvent, RunEvent)}
_NAMED = {kind.value: kind for kind in RECORDS if kind not in (EventKind.PROGRESS, EventKind.DONE)}


def make_event(kind: EventKind | str, **fields: Any) -> Event:
    """The record of a named event from keyword fields (``Progress.event``); ``ValueError`` for a kind that is
    not a named event, ``TypeError`` for a field the record does not name or a missing one."""
    if str(kind) not in _NAMED:
        raise ValueError(f"not a named progress event: {kind!r} (one of {', '.join(_NAMED)})")
    return RECORDS[_NAMED[str(kind)]](**fields)


# -- parsing ------------------------------------------------------------------------------------------------
#: Longest line :func:`parse_event` decodes (the largest real event, a cohort's ``annotation`` or a
#: validation of 117 classes, is a few KiB); a longer line is not an event.
MAX_EVENT_CHARS = 1 << 20
#: Deepest nesting of arrays/objects :func:`parse_event` accepts (real events nest 3 levels).
MAX_EVENT_DEPTH = 16
#: Keys whose value, when present, must be a finite number (or null): progress and training counters.
_NUMBER_KEYS = ("done", "total", "eta_s", "iteration", "iterations", "elapsed_s")
#: Keys whose value, when present, must be a string.
_STRING_KEYS = ("phase", "event", "text", "output", "path")


def _depth_ok(line: str, limit: int) -> bool:
    """False when brackets outside strings nest deeper than ``limit`` (checked before decoding: the decoder
    recurses once per level)."""
    depth, in_string, escaped = 0, False, False
    for char in line:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return False
        elif char in "]}":
            depth -= 1
    return True


def _finite_or_none(text: str) -> Optional[float]:
    value = float(text)
    return value if math.isfinite(value) else None


def _no_constant(_name: str) -> None:
    return None                                      # NaN, Infinity, -Infinity -> null


def parse_event(line: str) -> Optional[dict[str, Any]]:
    """One line of a JSON-mode stream -> its object; ``None`` for anything else: a human-readable line, a
    damaged or partial line, JSON that is not an object, a line longer than :data:`MAX_EVENT_CHARS` or nested
    deeper than :data:`MAX_EVENT_DEPTH`, or an event whose counters (``done``, ``total``, ``iteration``, ...)
    are not numbers or whose names (``phase``, ``event``, ``text``) are not strings. Numbers that are not
    finite (``NaN``, ``Infinity``, ``1e400``) become ``None``. Never raises: the one decoder of the stream
    (Slicer modules, benchmarks) reads what a child process printed. A file name cannot put a line there: the
    child's text lines are printed through :func:`scdl.errors.one_line`."""
    if not isinstance(line, str) or len(line) > MAX_EVENT_CHARS:
        return None
    line = line.strip()
    if not line.startswith("{"):
        return None
    if line.count("[") + line.count("{") > MAX_EVENT_DEPTH and not _depth_ok(line, MAX_EVENT_DEPTH):
        return None
    try:
        obj = json.loads(line, parse_constant=_no_constant, parse_float=_finite_or_none)
    except (ValueError, RecursionError, MemoryError, OverflowError, TypeError):
        return None
    if not isinstance(obj, dict):
        return None
    for key in _NUMBER_KEYS:
        value = obj.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return None
        if isinstance(value, int) and abs(value) > 2**53:          # a counter no run reaches; 1e400 as an int
            return None
    for key in _STRING_KEYS:
        if obj.get(key) is not None and not isinstance(obj[key], str):
            return None
    return obj


def record_from_dict(data: Mapping[str, Any]) -> Optional[Event]:
    """A line's object (:func:`parse_event`) -> its record; ``None`` when it is no known kind (no ``phase``,
    an unknown ``event`` name). Never raises."""
    phase = data.get("phase")
    if phase == "done":
        return DoneEvent.from_fields({k: v for k, v in data.items() if k != "phase"})
    if phase is not None:
        return PhaseEvent.from_fields(data)
    kind = _NAMED.get(data.get("event")) if isinstance(data.get("event"), str) else None
    if kind is None:
        return None
    return RECORDS[kind].from_fields({k: v for k, v in data.items() if k != "event"})


def parse_record(line: str) -> Optional[Event]:
    """One line of the stream -> its record (:func:`parse_event`, then :func:`record_from_dict`); ``None`` for
    a text line, a damaged line or an unknown kind. Never raises."""
    data = parse_event(line)
    return None if data is None else record_from_dict(data)
