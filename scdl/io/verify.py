"""Read back a freshly written file before it replaces anything: cheap checks that catch a short write.

Some writers do not report a full disk: ITK's NIfTI writer leaves a truncated ``.nii.gz`` and returns
normally. :func:`verify_file` is run by :func:`scdl.io.atomic.atomic_path` on the temporary file, before the
rename, and raises :class:`WriteCheckFailed` when the content cannot be complete:

- ``.gz`` (``.nii.gz``, ``.tar.gz``): the whole gzip stream decompresses and ends properly;
- ``.nii``: the header parses and the file holds ``vox_offset + voxels · bytes per voxel`` bytes;
- ``.nrrd`` / ``.seg.nrrd``: the header ends, and the data after it is complete (gzip: decompresses; raw:
  the size the header's sizes and type need);
- ``.mha``: the MetaImage header ends, and its local data is complete (zlib: decompresses; raw: size);
- ``.json`` / ``.csv`` / ``.txt`` / ``.md``: UTF-8 decodes (Python's own writes report a full disk; the
  content is the caller's);
- ``.png``: ends with the IEND chunk;
- ``.pt`` (torch zip): the zip's central directory reads and every member's CRC matches;
- ``.safetensors``: the header parses and the data the header describes is there.

Every other suffix: the file exists. Costs one read of the file (decompression for ``.gz``).
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

from scdl.io.formats import split_suffix

_CHUNK = 1 << 20


class WriteCheckFailed(Exception):
    """The written file is incomplete or unreadable (message says what is wrong)."""


def _gzip_complete(path: Path) -> None:
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(_CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as err:
        raise WriteCheckFailed(f"the compressed data is incomplete ({err})") from None


_NIFTI_BYTES = {2: 1, 4: 2, 8: 4, 16: 4, 64: 8, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8, 32: 8, 128: 3, 2304: 4}


def _nifti_complete(path: Path) -> None:
    size = path.stat().st_size
    with path.open("rb") as handle:
        header = handle.read(348)
    if len(header) < 348:
        raise WriteCheckFailed("the NIfTI header is incomplete")
    for order in ("<", ">"):
        if struct.unpack(order + "i", header[:4])[0] == 348:
            break
    else:
        raise WriteCheckFailed("the NIfTI header is not readable")
    dims = struct.unpack(order + "8h", header[40:56])
    datatype = struct.unpack(order + "h", header[70:72])[0]
    vox_offset = struct.unpack(order + "f", header[108:112])[0]
    ndim = max(0, min(int(dims[0]), 7))
    voxels = 1
    for d in dims[1:1 + ndim]:
        voxels *= max(int(d), 1)
    need = int(vox_offset) + voxels * _NIFTI_BYTES.get(int(datatype), 1)
    if size < need:
        raise WriteCheckFailed(f"the NIfTI file holds {size} of its {need} bytes")


_NRRD_BYTES = {"uchar": 1, "unsigned char": 1, "uint8": 1, "uint8_t": 1, "signed char": 1, "char": 1, "int8": 1,
               "int8_t": 1, "short": 2, "short int": 2, "signed short": 2, "int16": 2, "int16_t": 2, "ushort": 2,
               "unsigned short": 2, "uint16": 2, "uint16_t": 2, "int": 4, "signed int": 4, "int32": 4, "int32_t": 4,
               "uint": 4, "unsigned int": 4, "uint32": 4, "uint32_t": 4, "float": 4, "double": 8, "longlong": 8,
               "long long": 8, "int64": 8, "int64_t": 8, "ulonglong": 8, "unsigned long long": 8, "uint64": 8,
               "uint64_t": 8}


def _nrrd_complete(path: Path) -> None:
    data = path.read_bytes()
    end = data.find(b"\n\n")
    if not data.startswith(b"NRRD") or end < 0:
        raise WriteCheckFailed("the NRRD header is incomplete")
    fields: dict[str, str] = {}
    for line in data[:end].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, _sep, value = line.partition(":")
        fields[key.strip().lower()] = value.lstrip("=").strip()
    if "data file" in fields or "datafile" in fields:
        return                                   # detached data: checked by its own writer
    body = data[end + 2:]
    encoding = fields.get("encoding", "raw").lower()
    sizes = [int(v) for v in fields.get("sizes", "0").split()]
    voxels = 1
    for s in sizes:
        voxels *= s
    need = voxels * _NRRD_BYTES.get(fields.get("type", "uchar").lower(), 1)
    if encoding in ("gzip", "gz"):
        try:
            out = zlib.decompressobj(zlib.MAX_WBITS | 32)
            got = len(out.decompress(body)) + len(out.flush())
        except zlib.error as err:
            raise WriteCheckFailed(f"the compressed NRRD data is incomplete ({err})") from None
        if not out.eof or got < need:
            raise WriteCheckFailed("the compressed NRRD data is incomplete")
    elif encoding == "raw" and len(body) < need:
        raise WriteCheckFailed(f"the NRRD data holds {len(body)} of its {need} bytes")


_MET_BYTES = {"MET_UCHAR": 1, "MET_CHAR": 1, "MET_USHORT": 2, "MET_SHORT": 2, "MET_UINT": 4, "MET_INT": 4,
              "MET_ULONG": 8, "MET_LONG": 8, "MET_ULONG_LONG": 8, "MET_LONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


def _mha_complete(path: Path) -> None:
    data = path.read_bytes()
    fields: dict[str, str] = {}
    offset = 0
    while offset < len(data):
        end = data.find(b"\n", offset)
        if end < 0:
            raise WriteCheckFailed("the MetaImage header is incomplete")
        key, _sep, value = data[offset:end].decode("latin-1").partition("=")
        fields[key.strip()] = value.strip()
        offset = end + 1
        if key.strip() == "ElementDataFile":
            break
    else:
        raise WriteCheckFailed("the MetaImage header is incomplete")
    if fields.get("ElementDataFile", "").upper() != "LOCAL":
        return
    voxels = 1
    for v in fields.get("DimSize", "0").split():
        voxels *= int(v)
    need = voxels * _MET_BYTES.get(fields.get("ElementType", "MET_UCHAR"), 1) * int(fields.get("ElementNumberOfChannels", "1"))
    body = data[offset:]
    if fields.get("CompressedData", "False").lower() == "true":
        try:
            out = zlib.decompressobj()
            got = len(out.decompress(body)) + len(out.flush())
        except zlib.error as err:
            raise WriteCheckFailed(f"the compressed MetaImage data is incomplete ({err})") from None
        if not out.eof or got < need:
            raise WriteCheckFailed("the compressed MetaImage data is incomplete")
    elif len(body) < need:
        raise WriteCheckFailed(f"the MetaImage data holds {len(body)} of its {need} bytes")


def _png_complete(path: Path) -> None:
    with path.open("rb") as handle:
        head = handle.read(8)
        handle.seek(max(path.stat().st_size - 12, 0))
        tail = handle.read(12)
    if head != b"\x89PNG\r\n\x1a\n" or tail[4:8] != b"IEND":
        raise WriteCheckFailed("the PNG image is incomplete")


def _zip_complete(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise WriteCheckFailed(f"the archive is incomplete ({err})") from None
    if bad is not None:
        raise WriteCheckFailed(f"the archive member {bad} is damaged")


def _safetensors_complete(path: Path) -> None:
    size = path.stat().st_size
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise WriteCheckFailed("the safetensors header is incomplete")
        (length,) = struct.unpack("<Q", raw)
        if length > size - 8:
            raise WriteCheckFailed("the safetensors header is incomplete")
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            raise WriteCheckFailed("the safetensors header is not readable") from None
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if size < 8 + length + end:
        raise WriteCheckFailed(f"the safetensors file holds {size} of its {8 + length + end} bytes")


def verify_file(path: os.PathLike | str, suffix: str | None = None) -> None:
    """Raise :class:`WriteCheckFailed` when ``path`` (written as ``suffix``, default its own) is incomplete."""
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            return
        raise WriteCheckFailed("the file was not written")
    suffix = (suffix if suffix is not None else split_suffix(path)[1]).lower()
    try:
        if suffix.endswith(".gz"):
            _gzip_complete(path)
        elif suffix == ".nii":
            _nifti_complete(path)
        elif suffix in (".nrrd", ".seg.nrrd"):
            _nrrd_complete(path)
        elif suffix == ".mha":
            _mha_complete(path)
        elif suffix in (".json", ".csv", ".txt", ".md", ".tsv"):
            path.read_bytes().decode("utf-8")
        elif suffix == ".png":
            _png_complete(path)
        elif suffix == ".pt":
            if zipfile.is_zipfile(path):
                _zip_complete(path)
            elif path.stat().st_size == 0:
                raise WriteCheckFailed("the file is empty")
        elif suffix == ".safetensors":
            _safetensors_complete(path)
    except UnicodeDecodeError:
        raise WriteCheckFailed("the text is incomplete") from None
    except ValueError as err:
        raise WriteCheckFailed(f"the content does not parse ({err})") from None
