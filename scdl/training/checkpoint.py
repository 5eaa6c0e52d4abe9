"""Training checkpoints: everything an exact resume needs, written atomically, verified before they are used,
loaded without pickled code.

``RUN_DIR/checkpoint.pt`` (the latest) holds the iteration, the training step's state (networks, SCDL head,
Mean-Teacher teacher), optimiser, scheduler and AMP scaler states, the random states of every process, the
data stream position, the best validation so far and the run's settings (``config``: what ``--resume``
compares). ``RUN_DIR/best.pt`` holds the segmentation networks of the best validation. Both are
``torch.save`` of tensors and plain containers, written through :func:`scdl.io.atomic.atomic_path` (a kill
during the write leaves the previous file intact) and read with ``torch.load(weights_only=True)``.

Integrity: beside each file a SHA-256 (``checkpoint.pt.sha256``, the format of ``sha256sum``) is written
atomically with it. Before a resume the checkpoint is verified (:func:`checkpoint_damage`): every zip member's
CRC (``zipfile.testzip``) and the SHA-256. A changed bit fails the CRC of its zip member (a weight, the
optimiser state); the SHA-256 also catches a file changed as a whole (replaced, or re-zipped after an edit).
Both are read from disk once more at a resume (seconds). The checkpoint before the latest is kept as
``checkpoint.prev.pt`` (a hard link to the old file: one checkpoint more on disk), so a damaged latest
checkpoint names an intact one to continue from (``scdl train --resume RUN --previous-checkpoint``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import zipfile
from pathlib import Path
from typing import Any, Optional

import torch

from scdl.errors import ScdlError
from scdl.io.atomic import PARTIAL_MARK, atomic_path, atomic_write_text
from scdl.training import runfolder

FORMAT = "scdl-train-checkpoint"
VERSION = 1
CHECKPOINT_NAME = runfolder.CHECKPOINT
BEST_NAME = runfolder.BEST
PREVIOUS_NAME = runfolder.PREVIOUS_CHECKPOINT
#: Suffix of the checksum file beside a checkpoint.
CHECKSUM_SUFFIX = ".sha256"


def checksum_file(path: os.PathLike | str) -> Path:
    """``checkpoint.pt`` -> ``checkpoint.pt.sha256``."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def sha256_of(path: os.PathLike | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def accepted_digests(path: os.PathLike | str) -> Optional[list[str]]:
    """The SHA-256 values the checksum file accepts for ``path`` (None: no checksum file, an older run).

    Normally one; two while a save is between writing the checksum file and renaming the new checkpoint into
    place (either file is then correct)."""
    side = checksum_file(path)
    try:
        text = side.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return []
    return [line.split()[0].lower() for line in text.splitlines() if line.split()]


def _write_checksums(path: Path, digests: list[str]) -> None:
    atomic_write_text(checksum_file(path), "".join(f"{d}  {path.name}\n" for d in digests))


def _keep_previous(path: Path) -> None:
    """Keep the current ``checkpoint.pt`` as ``checkpoint.prev.pt`` (a hard link, renamed into place, with its
    checksum). Where the file system has no hard links, no previous checkpoint is kept."""
    previous = path.with_name(PREVIOUS_NAME)
    digests = accepted_digests(path)
    digest = digests[0] if digests and len(digests) == 1 else sha256_of(path)
    link = path.with_name(f".{previous.name}{PARTIAL_MARK}link")
    with contextlib.suppress(OSError):
        link.unlink()
    try:
        os.link(path, link)
    except OSError:
        return
    _write_checksums(previous, [digest])
    os.replace(link, previous)


def save_checkpoint(path: os.PathLike | str, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus format and version) atomically to ``path``, with its SHA-256 beside it; the latest
    checkpoint (``checkpoint.pt``) keeps the one before it as ``checkpoint.prev.pt``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
        except RuntimeError as err:          # torch's zip writer reports a failed write as a RuntimeError
            raise _as_os_error(err, tmp) from None
        digest = sha256_of(tmp)
        old = accepted_digests(path) if path.is_file() else None
        try:
            if path.name == CHECKPOINT_NAME and path.is_file():
                _keep_previous(path)
            # before the rename: the checksum file accepts the old and the new file (a kill in between is fine)
            _write_checksums(path, [digest] + ([old[0]] if old and len(old) == 1 else []))
        except ScdlError as err:             # e.g. a full disk: name the checkpoint, as for its own write
            raise ScdlError(err.message, path, err.fix) from None
    with contextlib.suppress(ScdlError):     # the file accepts both digests already
        _write_checksums(path, [digest])
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


def checkpoint_damage(path: os.PathLike | str) -> Optional[str]:
    """Why the checkpoint at ``path`` cannot be trusted (None: intact): the archive does not open, a member
    fails its CRC, or the file's SHA-256 is not the one written beside it."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as err:
        return f"the archive does not open ({err})"
    if bad is not None:
        member = bad.split("/", 1)[-1]               # torch's archive root is the name the file was written as
        return f"the archive member {member} fails its CRC (changed or damaged bytes)"
    digests = accepted_digests(path)
    if digests is None:
        return None                          # written before checksums existed: the CRCs are all there is
    if sha256_of(path) not in digests:
        return (f"its SHA-256 differs from the one written beside it ({checksum_file(path).name}): the file "
                "changed after it was saved")
    return None


def _iteration_of(path: Path) -> Optional[int]:
    with contextlib.suppress(Exception):
        state = torch.load(path, map_location="cpu", weights_only=True)
        return int(state["iteration"])
    return None


def last_good(run_dir: os.PathLike | str) -> tuple[Optional[Path], Optional[int]]:
    """The intact ``checkpoint.prev.pt`` of a run and its iteration, or (None, None)."""
    previous = Path(run_dir) / PREVIOUS_NAME
    if previous.is_file() and checkpoint_damage(previous) is None:
        return previous, _iteration_of(previous)
    return None, None


def _damaged(path: Path, why: str) -> ScdlError:
    run_dir = path.parent
    if path.name == CHECKPOINT_NAME:
        previous, iteration = last_good(run_dir)
        if previous is not None:
            return ScdlError(f"the checkpoint is damaged: {why}. The previous checkpoint {previous.name} "
                             f"(iteration {iteration}) is intact.", path,
                             f"continue from it: scdl train --resume {run_dir} --previous-checkpoint")
        best = run_dir / BEST_NAME
        kept = (f" {BEST_NAME} (the best validated networks, iteration {_iteration_of(best)}) is intact, but it "
                "holds no optimiser state to continue from." if best.is_file() and checkpoint_damage(best) is None
                else "")
        return ScdlError(f"the checkpoint is damaged: {why}. No earlier checkpoint is kept.{kept}", path,
                         "the run cannot be continued exactly: start a new run (--out NEW_DIR); check the disk "
                         "that holds the run folder.")
    return ScdlError(f"the file is damaged: {why}.", path, "check the disk; write it again (a new run).")


def verify_checkpoint(path: os.PathLike | str) -> None:
    """One ScdlError when the checkpoint is missing or damaged (:func:`checkpoint_damage`), naming the last
    intact checkpoint and how to continue from it."""
    path = Path(path)
    if not path.is_file():
        raise ScdlError("there is no checkpoint to resume from.", path,
                        f"give the folder of a run that saved a checkpoint (RUN_DIR with {runfolder.CHECKPOINT}).")
    why = checkpoint_damage(path)
    if why is not None:
        raise _damaged(path, why)


def load_checkpoint(path: os.PathLike | str, map_location: Any = "cpu", verify: bool = True) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (weights_only: no code is executed), verified first
    (:func:`checkpoint_damage`) unless ``verify`` is False."""
    path = Path(path)
    if verify:
        verify_checkpoint(path)
    elif not path.is_file():
        raise ScdlError("there is no checkpoint to resume from.", path,
                        f"give the folder of a run that saved a checkpoint (RUN_DIR with {runfolder.CHECKPOINT}).")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged file of any kind is a user-facing problem
        raise ScdlError(f"the checkpoint cannot be read ({type(err).__name__}: {_first_sentence(err)}).", path,
                        "resume from another run, or delete it and start again.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ScdlError("this file is not an SCDL training checkpoint.", path, "give the RUN_DIR of an scdl train run.")
    if int(state.get("version", 0)) > VERSION:
        raise ScdlError(f"the checkpoint was written by a newer SCDL (format {state.get('version')}).", path,
                        "update SCDL to resume this run.")
    return state


def _first_sentence(err: BaseException) -> str:
    """The error in one line, without torch's advice to load with ``weights_only=False`` (which would run any
    code a crafted file holds: a message never suggests what is unsafe to follow)."""
    from scdl.models.statedict import load_error_text

    return load_error_text(err)


def use_previous(run_dir: os.PathLike | str) -> int:
    """Make the intact ``checkpoint.prev.pt`` the latest checkpoint again (``--previous-checkpoint``); returns
    its iteration. One ScdlError when there is none or it is damaged too."""
    run_dir = Path(run_dir)
    previous = run_dir / PREVIOUS_NAME
    if not previous.is_file():
        raise ScdlError("this run keeps no previous checkpoint.", previous,
                        f"resume from the latest one: scdl train --resume {run_dir}")
    why = checkpoint_damage(previous)
    if why is not None:
        raise ScdlError(f"the previous checkpoint is damaged too: {why}.", previous,
                        "the run cannot be continued exactly: start a new run (--out NEW_DIR).")
    target = run_dir / CHECKPOINT_NAME
    digests = accepted_digests(previous)
    link = run_dir / f".{CHECKPOINT_NAME}{PARTIAL_MARK}prev"
    with contextlib.suppress(OSError):
        link.unlink()
    try:
        os.link(previous, link)
    except OSError:
        import shutil

        shutil.copyfile(previous, link)
    _write_checksums(target, [digests[0] if digests else sha256_of(previous)])
    os.replace(link, target)
    return _iteration_of(target) or 0
