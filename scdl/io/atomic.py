"""Atomic file and folder writes: write to a temporary sibling, then rename over the target."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from scdl.errors import ScdlError

#: Multi-part extensions that file writers (SimpleITK, slicerio) choose their format by.
_COMPOUND_SUFFIXES = (".seg.nrrd", ".nii.gz", ".tar.gz")


def split_suffix(path: os.PathLike | str) -> tuple[str, str]:
    """Split ``name.nii.gz`` into ``("name", ".nii.gz")`` (compound suffixes kept whole)."""
    name = Path(path).name
    lower = name.lower()
    for suffix in _COMPOUND_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix):]
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, "." + ext


def _explain_os_error(err: OSError, target: Path) -> ScdlError:
    if err.errno == errno.ENOSPC:
        return ScdlError("the disk is full; nothing was written.", target, "free disk space or choose another output folder.")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ScdlError("cannot write here (permission denied).", target, "choose an output folder you can write to.")
    return ScdlError(f"could not write the file ({err.strerror or err}).", target, "check the output path.")


@contextlib.contextmanager
def atomic_path(target: os.PathLike | str) -> Iterator[Path]:
    """Yield a temporary path next to ``target`` with the same extension; rename it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left untouched, so a cancelled or failed
    write never leaves a partial output. The parent folder is created if needed.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _explain_os_error(err, target) from err
    stem, suffix = split_suffix(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.partial-", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _apply_umask(tmp)
        os.replace(tmp, target)
    except OSError as err:
        _remove(tmp)
        raise _explain_os_error(err, target) from err
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(target: os.PathLike | str) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; on success it replaces ``target`` (an old one is removed)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield tmp
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
