"""Atomic file and folder writes: write to a temporary sibling, verify it, then rename over the target.

The temporary file is read back (:func:`scdl.io.verify.verify_file`: full gzip decompression, NIfTI/NRRD sizes,
JSON parse, ...) before the rename, so a writer that fails silently on a full disk replaces nothing. Errors
name the target, never the hidden temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from scdl.errors import ScdlError
from scdl.io.formats import split_suffix
from scdl.io.verify import WriteCheckFailed, verify_file

#: Temporary files and folders are named ``.<stem><PARTIAL_MARK><random><suffix>`` beside their target.
PARTIAL_MARK = ".partial-"


def _verify(tmp: Path, target: Path, suffix: str) -> None:
    try:
        verify_file(tmp, suffix)
    except WriteCheckFailed as err:
        raise ScdlError(f"the file could not be written completely ({err}); nothing was replaced.", target,
                        "free disk space (a full disk is the usual cause) or choose another output folder.") from None


def _retarget(err: ScdlError, tmp: Path, target: Path) -> ScdlError:
    """The same error, naming ``target`` where it named the temporary path (or a file inside it)."""
    path = err.path
    if path and (path == str(tmp) or path.startswith(str(tmp) + os.sep)):
        rel = os.path.relpath(path, tmp)
        path = str(target if rel == "." else target / rel) if tmp.is_dir() or rel != "." else str(target)
        message = err.message.replace(str(tmp), str(target))
        return ScdlError(message, path, err.fix)
    return err


def remove_stale_partials(folder: os.PathLike | str, stem: str = "") -> list[Path]:
    """Delete temporary files / folders that a killed writer left in ``folder`` (``.<stem>.partial-*``).

    Call it only where no other writer works at the same time (a run folder at the start and end of its run).
    Returns what was removed.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.glob(f".{stem}*{PARTIAL_MARK}*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            _remove(path)
        removed.append(path)
    return removed


def probe_writable(folder: os.PathLike | str, target: os.PathLike | str | None = None, create: bool = True) -> None:
    """Check BEFORE long work that files can be created in ``folder`` (created if missing; with
    ``create=False`` nothing is created and the nearest existing parent is probed): a one-line ScdlError
    naming ``target`` (default the folder) when it is read-only, without rights or full."""
    folder = Path(folder)
    named = Path(target) if target is not None else folder
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        else:                       # probe the nearest existing folder; create nothing
            folder = folder.absolute()
            while not folder.exists() and folder.parent != folder:
                folder = folder.parent
        # the probe has the name pattern of the target's temporary file: a name too long for the file system
        # (the temporary name is 18 characters longer than the target's) fails here, not after the work
        stem, suffix = split_suffix(named) if target is not None else ("scdl-probe", "")
        fd, name = tempfile.mkstemp(prefix=f".{stem}{PARTIAL_MARK}", suffix=suffix, dir=folder)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
            _remove(Path(name))
    except OSError as err:
        raise _explain_os_error(err, named) from err


def _explain_os_error(err: OSError, target: Path) -> ScdlError:
    if err.errno == errno.ENOSPC:
        return ScdlError("the disk is full; nothing was written.", target, "free disk space or choose another output folder.")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ScdlError("cannot write here (permission denied).", target, "choose an output folder you can write to.")
    if err.errno == errno.ENAMETOOLONG:
        stem, suffix = split_suffix(target)
        longest = len(os.fsencode(f".{stem}{PARTIAL_MARK}xxxxxxxx{suffix}"))
        return ScdlError(f"the file name is too long for the file system ({len(os.fsencode(target.name))} bytes; "
                         f"SCDL first writes a temporary file of {longest} bytes beside it, and most file systems "
                         f"allow 255).", target, f"use a file name of at most {255 - (longest - len(os.fsencode(target.name)))} bytes.")
    return ScdlError(f"could not write the file ({err.strerror or err}).", target, "check the output path.")


@contextlib.contextmanager
def atomic_path(target: os.PathLike | str) -> Iterator[Path]:
    """Yield a temporary path next to ``target`` with the same extension; rename it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left untouched, so a cancelled or failed
    write never leaves a partial output. The parent folder is created if needed.
    """
    target = Path(target)
    stem, suffix = split_suffix(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}{PARTIAL_MARK}", suffix=suffix, dir=target.parent)
        os.close(fd)
    except OSError as err:
        raise _explain_os_error(err, target) from err
    tmp = Path(tmp_name)
    try:
        yield tmp
        _verify(tmp, target, suffix)
        _apply_umask(tmp)
        os.replace(tmp, target)
    except OSError as err:
        _remove(tmp)
        raise _explain_os_error(err, target) from err
    except ScdlError as err:
        _remove(tmp)
        raise _retarget(err, tmp, target) from err
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(target: os.PathLike | str) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; on success it replaces ``target`` (an old one is removed)."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{PARTIAL_MARK}", dir=target.parent))
    except OSError as err:
        raise _explain_os_error(err, target) from err
    try:
        yield tmp
        for path in sorted(tmp.rglob("*")):
            if path.is_file():
                _verify(path, target / path.relative_to(tmp), split_suffix(path)[1])
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _explain_os_error(err, target) from err
    except ScdlError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _retarget(err, tmp, target) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(target: os.PathLike | str, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: os.PathLike | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _apply_umask(path: Path) -> None:
    """mkstemp creates files 0600; give the output the permissions a normal ``open()`` would (0666 & ~umask)."""
    with contextlib.suppress(OSError):
        if path.is_file():
            os.chmod(path, 0o666 & ~_current_umask())


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
