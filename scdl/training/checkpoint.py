"""Training checkpoints: everything an exact resume needs, written atomically, loaded without pickled code.

``RUN_DIR/checkpoint.pt`` (the latest) holds the iteration, the training step's state (networks, SCDL head,
Mean-Teacher teacher), optimiser, scheduler and AMP scaler states, the random states of every process, the
data stream position and the best validation so far. ``RUN_DIR/best.pt`` holds the segmentation networks of
the best validation. Both are ``torch.save`` of tensors and plain containers, written through
:func:`scdl.io.atomic.atomic_path` (a kill during the write leaves the previous file intact) and read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch

from scdl.errors import ScdlError
from scdl.io.atomic import atomic_path
from scdl.training import runfolder

FORMAT = "scdl-train-checkpoint"
VERSION = 1
CHECKPOINT_NAME = runfolder.CHECKPOINT
BEST_NAME = runfolder.BEST


def save_checkpoint(path: os.PathLike | str, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus format and version) atomically to ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
        except RuntimeError as err:          # torch's zip writer reports a failed write as a RuntimeError
            raise _as_os_error(err, tmp) from None
    return path


#: Below this much free space, a failed ``torch.save`` is taken for a full disk.
_FULL_DISK_BYTES = 1 << 20


def _as_os_error(err: RuntimeError, tmp: Path) -> OSError:
    """The OSError that :func:`scdl.io.atomic.atomic_path` turns into the one-line message naming the target:
    ENOSPC when the disk is (nearly) full, EIO with torch's words otherwise."""
    import errno

    try:
        with contextlib.suppress(OSError):
            tmp.unlink()                     # what torch wrote does not count as used space
        stat = os.statvfs(tmp.parent)
        free = stat.f_bavail * stat.f_frsize
    except OSError:
        free = None
    if free is not None and free < _FULL_DISK_BYTES:
        return OSError(errno.ENOSPC, "No space left on device")
    return OSError(errno.EIO, f"torch.save failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}")


def load_checkpoint(path: os.PathLike | str, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (weights_only: no code is executed)."""
    path = Path(path)
    if not path.is_file():
        raise ScdlError("there is no checkpoint to resume from.", path,
                        f"give the folder of a run that saved a checkpoint (RUN_DIR with {runfolder.CHECKPOINT}).")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged file of any kind is a user-facing problem
        raise ScdlError(f"the checkpoint cannot be read ({type(err).__name__}: {err}).", path,
                        "resume from another run, or delete it and start again.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ScdlError("this file is not an SCDL training checkpoint.", path, "give the RUN_DIR of an scdl train run.")
    if int(state.get("version", 0)) > VERSION:
        raise ScdlError(f"the checkpoint was written by a newer SCDL (format {state.get('version')}).", path,
                        "update SCDL to resume this run.")
    return state
