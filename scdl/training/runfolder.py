"""The run folder of ``scdl train --out RUN_DIR``: the one place that names its files and says what state it is in.

Layout (written by :class:`scdl.training.trainer.Trainer`)::

    RUN_DIR/config.json          the resolved settings (what --resume reloads)
    RUN_DIR/labels.csv           the classes the model learns
    RUN_DIR/cohort_report.json   the cohort check (problems, cases, annotated classes, validation source)
    RUN_DIR/checkpoint.pt        the latest checkpoint (exact resume)
    RUN_DIR/best.pt              the networks of the best validation
    RUN_DIR/log.csv              one row per logged iteration
    RUN_DIR/validation.csv       one row per validation
    RUN_DIR/curves.png           training curves
    RUN_DIR/model/               the model package of a finished run (model/card.json)
    RUN_DIR/cohort/manifest.csv  the cohort that SCDL Train exported from the scene (when it started the run)
    RUN_DIR/train.log            stderr of a child ``scdl train`` (SSL benchmark), beside
    RUN_DIR/bench_train_config.json  the ``--config`` file it gave that child

States: **empty** (no checkpoint), **resumable** (config.json + checkpoint.pt, no model yet: a stopped run),
**finished** (model/card.json written). ``scdl train --out`` refuses a folder that holds a checkpoint, and a
non-empty folder that no run of SCDL started (:meth:`RunFolder.check_new_run`). While a run writes the folder
it holds :data:`LOCK` (:class:`RunLock`); a second run into the same folder is refused.

Recipe folders (``Resources/Models/recipes/<id>/``, read by ``bench/train_default_model.py``) hold
:data:`RECIPE_CONFIG` (an ``scdl train --config`` file) and :data:`RECIPE_COHORT` (data and split).
The file names are a contract with the SCDL Train module and with users' scripts: extend, never rename.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from scdl.errors import ScdlError

CONFIG = "config.json"
LABELS = "labels.csv"
COHORT_REPORT = "cohort_report.json"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
LOG = "log.csv"
VALIDATION = "validation.csv"
CURVES = "curves.png"
MODEL = "model"
MODEL_CARD = "card.json"          # = scdl.models.card.CARD_FILE, inside MODEL

SCENE_COHORT = "cohort"          # folder of the cohort exported from the Slicer scene
CHILD_LOG = "train.log"           # stderr of a child scdl train (scdl.bench.ssl_train)
CHILD_CONFIG = "bench_train_config.json"   # the --config file given to that child

#: The files worth handing over or showing after a run (relative to RUN_DIR; the package's card last).
RESULT_FILES = (CURVES, LOG, VALIDATION, CONFIG, COHORT_REPORT, f"{MODEL}/{MODEL_CARD}")

LOCK = ".scdl-train.lock"         # held (flock) while a run writes the folder; stays as the mark of a run folder
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"   # the checkpoint before the latest (scdl.training.checkpoint)

#: What may be in a folder before ``scdl train --out`` starts a new run there: what SCDL's own tools put there
#: before they start the child (SCDL Train's scene cohort, the SSL benchmark's log and config) and hidden files.
PRE_RUN_ENTRIES = (SCENE_COHORT, CHILD_LOG, CHILD_CONFIG)

RECIPE_CONFIG = "config.json"
RECIPE_COHORT = "cohort.json"


def recipe_files(folder: os.PathLike | str) -> tuple[Path, Path]:
    """(config, cohort) file paths of a recipe folder."""
    return Path(folder) / RECIPE_CONFIG, Path(folder) / RECIPE_COHORT


@dataclass(frozen=True)
class RunFolder:
    """Paths and state of one run folder (nothing is read or written on construction)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # -- files ---------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def labels(self) -> Path:
        return self.path / LABELS

    @property
    def cohort_report(self) -> Path:
        return self.path / COHORT_REPORT

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def previous_checkpoint(self) -> Path:
        return self.path / PREVIOUS_CHECKPOINT

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK

    @property
    def log(self) -> Path:
        return self.path / LOG

    @property
    def validation(self) -> Path:
        return self.path / VALIDATION

    @property
    def curves(self) -> Path:
        return self.path / CURVES

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL

    @property
    def model_card(self) -> Path:
        return self.path / MODEL / MODEL_CARD

    @property
    def scene_cohort_dir(self) -> Path:
        return self.path / SCENE_COHORT

    @property
    def scene_cohort_manifest(self) -> Path:
        from scdl.training.cohort import MANIFEST_NAME

        return self.path / SCENE_COHORT / MANIFEST_NAME

    @property
    def child_log(self) -> Path:
        return self.path / CHILD_LOG

    @property
    def child_config(self) -> Path:
        return self.path / CHILD_CONFIG

    def result_files(self) -> list[Path]:
        """:data:`RESULT_FILES` that exist, as paths."""
        return [self.path / name for name in RESULT_FILES if (self.path / name).is_file()]

    # -- state ---------------------------------------------------------------------------------
    def holds_run(self) -> bool:
        """A run was started here (a checkpoint exists): ``scdl train --out`` refuses the folder."""
        return self.checkpoint.exists()

    def is_finished(self) -> bool:
        """The run ended with a model package."""
        return self.model_card.is_file()

    def can_resume(self) -> bool:
        """A stopped run that ``scdl train --resume`` continues: config and checkpoint, no model yet."""
        return self.config.is_file() and self.checkpoint.is_file() and not self.is_finished()

    def foreign_entries(self, marked: Optional[bool] = None) -> list[str]:
        """What in the folder would a new run overwrite or mix with, though no run of SCDL made it: every
        entry except hidden files and :data:`PRE_RUN_ENTRIES`; [] for a missing or empty folder, and for a
        folder that a run of SCDL started (``marked``, default: it holds :data:`LOCK`) and that holds no
        checkpoint yet (a run that stopped before its first checkpoint: its files are made again)."""
        marked = self.lock_file.exists() if marked is None else marked
        if not self.path.is_dir() or marked:
            return []
        return sorted(e.name for e in os.scandir(self.path) if not e.name.startswith(".") and e.name not in PRE_RUN_ENTRIES)

    def check_new_run(self, marked: Optional[bool] = None) -> None:
        """Refuse (one ScdlError) to start a NEW run here: the folder holds a run (a checkpoint: resume it) or
        files that no run of SCDL wrote (a user's folder: ``labels.csv``, ``config.json`` and ``model/``
        would be overwritten). ``marked``: whether a run of SCDL started here (default: :data:`LOCK` exists;
        the trainer passes what it saw before it took the lock)."""
        if self.path.exists() and not self.path.is_dir():
            raise ScdlError("is a file, not a folder: the run folder holds the run's files.", self.path,
                            "give the path of a new folder (scdl train creates it).")
        if self.holds_run():
            raise ScdlError("this folder already holds a training run.", self.path,
                            f"continue it with --resume {self.path}, or choose another --out folder.")
        foreign = self.foreign_entries(marked)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise ScdlError(f"this folder is not empty and is not a run folder of scdl train (it holds {shown}); "
                            f"a new run would overwrite or mix with these files.", self.path,
                            "choose a new or empty --out folder (scdl train creates it).")

    def check_unlocked(self) -> None:
        """One ScdlError when a live process holds the folder's lock now (checked early, before a cohort check
        of minutes; the run takes the lock itself before it writes)."""
        if self.lock_file.is_file():
            RunLock(self.lock_file).acquire().release()

    def lock(self) -> "RunLock":
        """Take the folder's lock (one ScdlError when another live process holds it); see :class:`RunLock`."""
        return RunLock(self.lock_file).acquire()

    def load_config(self) -> dict[str, Any]:
        """The resolved config of the run (for ``--resume``); one clear error when it is missing or damaged."""
        if not self.config.is_file():
            raise ScdlError(f"this folder holds no training run ({CONFIG} is missing).", self.path,
                            "give the RUN_DIR of an earlier scdl train (the --out folder).")
        try:
            config = json.loads(self.config.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as err:
            raise ScdlError(f"the run's {CONFIG} cannot be read ({err}).", self.config,
                            "restore the file or start a new run.") from None
        return config


def can_resume(run_dir: os.PathLike | str) -> bool:
    """:meth:`RunFolder.can_resume` of ``run_dir``."""
    return RunFolder(run_dir).can_resume()


def load_run_config(run_dir: os.PathLike | str) -> dict[str, Any]:
    """:meth:`RunFolder.load_config` of ``run_dir``."""
    return RunFolder(run_dir).load_config()


class RunLock:
    """An exclusive lock on a run folder while a run writes it (``RUN_DIR/.scdl-train.lock``).

    ``fcntl.flock`` (``msvcrt.locking`` on Windows) on the lock file: the operating system releases it when the
    process ends in any way (kill -9 included), so a lock is never stale; the file names the holder's PID and
    host for the message, and stays behind as the mark of a run folder. A second ``scdl train`` into the same
    folder is refused in one line instead of mixing two runs' files.
    """

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            from scdl.io.atomic import _explain_os_error

            raise _explain_os_error(err, self.path.parent) from None
        locked = _try_lock(fd)
        if locked is None:                         # a file system without locks (some network shares)
            locked = not _holder_alive(fd)
        if locked is False and _holder_dead(fd):
            fd, locked = _take_over(self.path, fd)
        if not locked:
            holder = _read_holder(fd)
            os.close(fd)
            raise ScdlError(f"another scdl train ({holder}) is writing this run folder; two runs would mix their "
                            "files.", self.path.parent,
                            "wait until it ends (or stop it), or choose another --out folder.")
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode("utf-8"))
        except OSError:
            pass                                   # the lock holds; only the note of its holder is missing
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)                    # no holder any more (what a file system without locks reads)
        with contextlib.suppress(OSError):
            _unlock(fd)
        with contextlib.suppress(OSError):
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __del__(self) -> None:
        self.release()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _try_lock(fd: int) -> Optional[bool]:
    """True: locked; False: another process holds the lock; None: the file system has no locks."""
    import errno

    try:
        import fcntl
    except ImportError:                             # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None


def _take_over(path: Path, fd: int) -> tuple[int, Optional[bool]]:
    """The lock's named holder is dead, yet the lock is held: by a descendant that inherited the descriptor (a
    data-loader worker of a run killed with -9 lives a moment longer; it never writes the run folder). Wait up to
    10 s for the lock, then replace the lock file (a new file, a new lock). Returns (descriptor, locked)."""
    for _ in range(50):
        time.sleep(0.2)
        if _try_lock(fd):
            return fd, True
    os.close(fd)
    with contextlib.suppress(OSError):
        path.unlink()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    return fd, _try_lock(fd)


def _holder(fd: int) -> Optional[tuple[int, str]]:
    """(PID, host) the lock file names, or None when it names none."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
        return int(info["pid"]), str(info.get("host", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _holder_dead(fd: int) -> bool:
    """Whether the lock file names a process of this host, not this one, that no longer exists."""
    holder = _holder(fd)
    if holder is None or holder[1] != socket.gethostname() or holder[0] == os.getpid():
        return False
    return not _pid_exists(holder[0])


def _holder_alive(fd: int) -> bool:
    """Without file locks: whether the PID the lock file names is alive on this host (a dead one is stale)."""
    holder = _holder(fd)
    if holder is None:
        return False
    pid, host = holder
    if host != socket.gethostname() or pid == os.getpid():
        return host != socket.gethostname()          # another machine's run: assume it lives
    return _pid_exists(pid)


def _unlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
        return f"process {int(info['pid'])} on {info.get('host', '?')}, started {info.get('started', '?')}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
