"""Verified, resumable downloads over HTTP(S).

A file is fetched into ``<dest>.part`` (continued with an HTTP Range request if a previous attempt left
one), verified (git blob id and/or SHA-256) and only then renamed onto ``dest``. A file that fails
verification is deleted. Interrupted downloads keep their ``.part`` so the next attempt resumes.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Union

from scdl.errors import ScdlError

BASE_URL_ENV = "SCDL_DOWNLOAD_BASE_URL"
_CHUNK = 1 << 20
ProgressCallback = Callable[[int, Optional[int]], None]


def git_blob_id(path: Union[str, os.PathLike]) -> str:
    """Git's object id of a file: SHA-1 of ``b"blob <size>\\0" + content`` (read in 1 MiB chunks)."""
    path = Path(path)
    h = hashlib.sha1()
    h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def git_blob_id_bytes(data: bytes) -> str:
    """Git's object id of ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256_of(path: Union[str, os.PathLike]) -> str:
    from scdl.models.manifest import sha256_file

    return sha256_file(path)


def base_url(default: str) -> str:
    """``SCDL_DOWNLOAD_BASE_URL`` if set (mirrors, tests), else ``default``; without a trailing slash."""
    return (os.environ.get(BASE_URL_ENV) or default).rstrip("/")


def verify_file(path: Path, git_blob: Optional[str] = None, sha256: Optional[str] = None) -> Optional[str]:
    """None if ``path`` matches the expected ids, else a sentence saying what differs."""
    if git_blob is not None:
        got = git_blob_id(path)
        if got != git_blob.lower():
            return f"its git blob id is {got}, expected {git_blob.lower()}"
    if sha256 is not None:
        got = sha256_of(path)
        if got != sha256.lower():
            return f"its SHA-256 is {got}, expected {sha256.lower()}"
    return None


def download_file(url: str, dest: Union[str, os.PathLike], *, git_blob: Optional[str] = None,
                  sha256: Optional[str] = None, progress: Optional[ProgressCallback] = None,
                  timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify it, then rename it into place.

    Args:
        git_blob / sha256: expected ids (at least one is required).
        progress: called as ``progress(bytes_done, bytes_total_or_None)`` after every chunk; it may raise
            (e.g. :class:`scdl.errors.Cancelled`) to stop; the partial file is kept for resuming.

    Raises:
        ScdlError: no connection / HTTP error (naming the URL, with the offline fix), or a file that does not
            match its expected id (deleted).
    """
    if git_blob is None and sha256 is None:
        raise ValueError("download_file needs an expected git_blob or sha256")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(2):
        offset = part.stat().st_size if part.exists() else 0
        _fetch(url, part, offset, progress, timeout)
        problem = verify_file(part, git_blob, sha256)
        if problem is None:
            os.replace(part, dest)
            return dest
        part.unlink(missing_ok=True)
        if offset == 0 or attempt == 1:
            raise ScdlError(f"the downloaded file is not the expected one: {problem}. It was deleted.", url,
                            "try again later; if it persists, the file on the server changed: do not use it.")
        # a stale partial file may have caused the mismatch: start once more from zero
    raise AssertionError("unreachable")


def _fetch(url: str, part: Path, offset: int, progress: Optional[ProgressCallback], timeout: float) -> None:
    if url.split(":", 1)[0].lower() not in ("http", "https"):
        raise ScdlError("only http(s) downloads are supported.", url, "use an http(s) URL.")
    request = urllib.request.Request(url, headers={"User-Agent": "scdl-downloader"})  # noqa: S310 (http(s) only)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http/https only, checked above)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the partial file is already complete
            return
        raise ScdlError(f"the server answered HTTP {err.code} ({err.reason}).", url,
                        "check the model id and try again later.") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ScdlError(f"could not download the file ({reason}); is this computer offline?", url,
                        "connect to the internet and retry (an interrupted download resumes), or download the file "
                        "on another computer and import it with `scdl models import FILES... --as MODEL_ID`.") from None
    with response:
        status = getattr(response, "status", 200)
        total = _total_size(response, offset if status == 206 else 0)
        mode = "ab" if (status == 206 and offset) else "wb"
        done = offset if mode == "ab" else 0
        if progress:
            progress(done, total)
        try:
            with open(part, mode) as f:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            raise ScdlError(f"the download was interrupted after {done} bytes ({err}).", url,
                            "run the same command again: it resumes where it stopped.") from None
    if total is not None and done != total:
        raise ScdlError(f"the download stopped after {done} of {total} bytes.", url,
                        "run the same command again: it resumes where it stopped.")


def _total_size(response, offset: int) -> Optional[int]:
    content_range = response.headers.get("Content-Range")
    if content_range:
        match = re.match(r"bytes\s+\d+-\d+/(\d+)", content_range)
        if match:
            return int(match.group(1))
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None
