"""The paths a command is given, checked before anything is opened or written.

- :func:`check_input_path`: the input exists, is no symbolic-link loop or dangling link, and is a regular file
  or a folder. A named pipe (FIFO), a device or a socket is refused BEFORE it is opened: opening a FIFO with
  no writer blocks forever, and a device may never end.
- :func:`check_folder_entries`: the same for the files of a DICOM folder (GDCM opens every file in it).
- :func:`check_outputs`: no output is one of the inputs (the same file, by path or as a hard link), no two
  outputs are the same file, and no output is a folder, a FIFO, a device or a socket (a write renames a new file
  onto the target: ``-o /dev/null`` as root would replace the device). ``scdl segment``, ``synth`` and ``evaluate`` go through it (one owner).
- :func:`same_file`.

Every refusal is one :class:`~scdl.errors.ScdlError` naming the path and the fix.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Iterable, Optional, Sequence

from scdl.errors import ScdlError

#: What each kind of non-regular file is called in messages.
_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> Optional[str]:
    for test, name in _KINDS:
        if test(mode):
            return name
    return None


def _not_a_file(path: Path, kind: str, what: str) -> ScdlError:
    return ScdlError(f"is {kind}, not a file: reading the {what} from it could wait forever, so it is not opened.",
                     path, f"give the {what} as a regular file (copy the data into a file first).")


def check_input_path(path: "os.PathLike[str] | str", what: str = "input") -> Path:
    """``path`` as a Path, or one ScdlError: missing, a symbolic-link loop, a dangling link, no permission to
    look at it, or neither a regular file nor a folder (FIFO, device, socket). Nothing is opened."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ScdlError("is a symbolic link that loops (it points back to itself through other links).", path,
                            "give the file itself, or repair the link (ls -l shows where it points).") from None
        if err.errno == errno.ENAMETOOLONG:
            raise ScdlError("has a name that is too long for the file system.", path,
                            "give a shorter path.") from None
        if err.errno in (errno.EACCES, errno.EPERM):
            raise ScdlError(f"the {what} cannot be read (permission denied).", path,
                            "check the permissions of the file and of its folders.") from None
        if os.path.islink(path):
            raise ScdlError(f"is a symbolic link to {os.readlink(path)!r}, which does not exist.", path,
                            "give the file itself, or repair the link.") from None
        raise ScdlError("does not exist.", path, "check the path (and that the drive or share is mounted).") from None
    if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode):
        return path
    raise _not_a_file(path, _kind(info.st_mode) or "not a regular file", what)


def check_folder_entries(folder: "os.PathLike[str] | str", what: str = "DICOM file") -> None:
    """Refuse a folder that holds a FIFO, device or socket (readers that open every file of a folder, such as
    GDCM for a DICOM folder, would block on it). Dangling links and sub-folders are left to the reader."""
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return                                   # the reader reports an unreadable folder itself
    for entry in entries:
        try:
            mode = entry.stat(follow_symlinks=True).st_mode
        except OSError:
            continue
        kind = _kind(mode)
        if kind is not None:
            raise ScdlError(f"is {kind} inside the folder {folder.name!r}: the DICOM reader opens every file of "
                            "the folder and would wait forever on it.", entry.path,
                            f"move it out of the folder (it is not a {what}).")


def same_file(a: "os.PathLike[str] | str", b: "os.PathLike[str] | str") -> bool:
    """True when ``a`` and ``b`` name the same file: the same resolved path, or (both existing) the same
    inode (a hard link, a bind mount, another spelling)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except (OSError, RuntimeError, ValueError):
        return False


def check_outputs(outputs: Sequence[tuple[str, "os.PathLike[str] | str | None"]],
                  inputs: Iterable[tuple[str, "os.PathLike[str] | str | None"]]) -> None:
    """Refuse, before any work, an output that would overwrite an input or another output.

    Args:
        outputs: ``(what, path)`` pairs, e.g. ``("label map", "seg.nii.gz")``; None paths are skipped.
        inputs: ``(what, path)`` pairs of everything the command reads (files or folders; None skipped). An
            output inside an input FOLDER is allowed (e.g. the label map written into the DICOM folder);
            only an output that IS an input file is refused.
    """
    named = [(what, Path(p)) for what, p in outputs if p is not None]
    sources = [(what, Path(p)) for what, p in inputs if p is not None]
    for what, target in named:
        try:
            mode = os.lstat(target).st_mode
        except OSError:
            continue                                 # not there yet (a link is replaced, never followed)
        if stat.S_ISDIR(mode):
            raise ScdlError(f"the {what} path is a folder.", target, "give a file name.")
        kind = _kind(mode)
        if kind is not None:                        # e.g. -o /dev/null as root: the device would be replaced
            raise ScdlError(f"the {what} path is {kind}, not a file: SCDL writes a new file and renames it onto "
                            "the target, which would replace it.", target, "give the path of a regular file.")
    for what, target in named:
        for source_what, source in sources:
            if same_file(target, source) and not source.is_dir():
                raise ScdlError(f"the {what} would overwrite the {source_what} ({source.name}).", target,
                                f"choose another output path; the {source_what} is read, never written.")
    for index, (what, target) in enumerate(named):
        for other_what, other in named[index + 1:]:
            if same_file(target, other) or os.path.abspath(target) == os.path.abspath(other):
                raise ScdlError(f"the {what} and the {other_what} have the same path.", target,
                                "give each output its own file name.")
