"""Preprocessed cohort on disk: each case preprocessed once, stored as ``.npy`` and read back as memory maps.

Layout: ``<cache>/<key[:2]>/<key>/`` with

- ``image.npy``: float32 (D, H, W), the network input grid (scdl.processing.Preprocessor.forward);
- ``label.npy``: uint8/int16 (D, H, W), the label map on that grid in the MODEL's numbering (labeled cases);
- ``locations.npy``: int64 flat voxel indices per class, concatenated (class-aware patch centres);
- ``meta.json``: shape, per-class voxel counts and index ranges into ``locations.npy``, check facts.

Anatomy cases (a label map without image) also store ``structures.npy`` (int16, the map's own values, -1 =
outside the body) and ``depth.npy`` (uint8 mm) of :mod:`scdl.synth.layout` on the network grid, and
``meta["anatomy"]`` (tissue per value, spacing, window); ``image.npy`` holds one fixed synthesis (for
validation and previews) while training synthesises a fresh patch each time (scdl.training.sampling).

The key is a SHA-256 of the image's content hash, the label map's content hash, the label-table mapping and
every preprocessing setting, so a changed file or setting gives a new entry and an unchanged one is reused
by every later run. Entries are written atomically (a killed run leaves no half entry). Training never holds
the cohort in RAM: the data loader crops patches out of the memory maps.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from scdl.io.atomic import atomic_dir
from scdl.labels.protocol import LabelTableLike

#: Bump when the stored layout or the preprocessing code changes meaning.
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``<SCDL_HOME>/cache/preprocessed`` (shared by all runs of this user)."""
    from scdl.resources import user_home

    return user_home() / "cache" / "preprocessed"


def table_fingerprint(table: LabelTableLike) -> list[list[Any]]:
    """(value, name) pairs of a LabelTable: what matters for mapping label values by name."""
    if table is None:
        return []
    return [[int(e.value), str(e.name)] for e in table.entries]


def label_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8) if num_classes <= 256 else np.dtype(np.int16)


def class_locations(label: np.ndarray, num_classes: int, max_per_class: int) -> tuple[np.ndarray, dict[int, list[int]], list[int]]:
    """Flat voxel indices of every foreground class (at most ``max_per_class`` each, evenly spread).

    Args:
        label: int (D, H, W) in the model numbering.
    Returns:
        (locations int64 (K,), ranges {class: [start, end)} into locations, counts per class (num_classes,)).
    """
    flat = label.reshape(-1)
    counts = np.bincount(flat.astype(np.int64, copy=False), minlength=num_classes)[:num_classes]
    order = np.argsort(flat, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pieces, ranges, offset = [], {}, 0
    for cls in range(1, num_classes):
        n = int(counts[cls])
        if n == 0:
            continue
        idx = order[starts[cls]: starts[cls] + n]
        if n > max_per_class:
            idx = idx[np.linspace(0, n - 1, max_per_class).round().astype(np.int64)]
        pieces.append(idx.astype(np.int64))
        ranges[cls] = [offset, offset + len(idx)]
        offset += len(idx)
    locations = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    return locations, ranges, [int(c) for c in counts]


def npy_problem(path: Path, shape: Optional[tuple[int, ...]] = None) -> Optional[str]:
    """Why the ``.npy`` file at ``path`` cannot be what the entry needs (missing, not an array file, fewer or more
    bytes than its header promises, another shape), or None. Reads the header only."""
    fmt = np.lib.format
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            version = fmt.read_magic(handle)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            stored_shape, _fortran, dtype = read(handle)
            offset = handle.tell()
    except FileNotFoundError:
        return f"{path.name} is missing"
    except OSError as err:
        return f"{path.name} cannot be read ({err.strerror or err})"
    except (ValueError, SyntaxError, TypeError, EOFError) as err:
        return f"{path.name} is not a NumPy array file ({err})"
    if dtype.hasobject:
        return f"{path.name} holds Python objects, not numbers"
    expected = offset + int(np.prod(stored_shape, dtype=np.int64)) * dtype.itemsize
    if size != expected:
        return f"{path.name} has {size} bytes where its header promises {expected} (an unfinished or damaged write)"
    if shape is not None and tuple(stored_shape) != tuple(shape):
        return f"{path.name} has shape {tuple(stored_shape)}, the entry's meta.json says {tuple(shape)}"
    return None


def check_entry(folder: Path, meta: dict[str, Any]) -> Optional[tuple[Path, str]]:
    """(file, why) for the first damaged array of a cache entry, or None. Cheap: headers and file sizes only."""
    try:
        shape = tuple(int(s) for s in meta["shape"])
        ends = [int(r[1]) for r in (meta.get("ranges") or {}).values()]
    except (KeyError, TypeError, ValueError, IndexError) as err:
        return folder / "meta.json", f"meta.json is incomplete ({err!r})"
    needed: list[tuple[str, Optional[tuple[int, ...]]]] = [("image", shape)]
    if meta.get("labeled"):
        needed += [("label", shape), ("locations", None)]
    if meta.get("anatomy"):
        needed += [("structures", shape), ("depth", shape)]
    for name, want in needed:
        path = folder / f"{name}.npy"
        problem = npy_problem(path, want)
        if problem is not None:
            return path, problem
    if meta.get("labeled"):
        path = folder / "locations.npy"
        length = np.load(path, mmap_mode="r").shape[0] if ends else 0
        if ends and length < max(ends):
            return path, f"locations.npy holds {length} positions, meta.json refers to {max(ends)}"
    return None


def _grid_of(image: Any):
    from scdl.processing.grid import Grid

    return Grid.from_image(image)


class CachedCase:
    """One preprocessed case; arrays open lazily as read-only memory maps (cheap to pickle to workers)."""

    def __init__(self, folder: os.PathLike | str, meta: Optional[dict[str, Any]] = None):
        self.folder = Path(folder)
        self.meta = meta if meta is not None else json.loads((self.folder / "meta.json").read_text(encoding="utf-8"))
        self._arrays: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "meta": self.meta, "_arrays": {}}

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = np.load(self.folder / f"{name}.npy", mmap_mode="r")
        return self._arrays[name]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["shape"])

    @property
    def labeled(self) -> bool:
        return bool(self.meta.get("labeled"))

    @property
    def image(self) -> np.ndarray:
        """float32 (D, H, W) memory map."""
        return self._array("image")

    @property
    def label(self) -> Optional[np.ndarray]:
        """int (D, H, W) memory map in the model numbering, or None."""
        return self._array("label") if self.labeled else None

    @property
    def anatomy(self) -> Optional[dict[str, Any]]:
        """Synthesis facts of an anatomy case (tissue per value, spacing, window), None for a real CT."""
        return self.meta.get("anatomy")

    @property
    def structures(self) -> np.ndarray:
        """int16 (D, H, W) layout structures of an anatomy case (-1 = outside the body)."""
        return self._array("structures")

    @property
    def depth(self) -> np.ndarray:
        """uint8 (D, H, W) layout depth in mm of an anatomy case."""
        return self._array("depth")

    @property
    def present(self) -> list[int]:
        """Foreground classes with at least one voxel on the model grid."""
        return [int(c) for c in self.meta.get("ranges", {})]

    def locations(self, cls: int) -> np.ndarray:
        """Flat indices (into (D, H, W)) of voxels of class ``cls`` (subsampled evenly)."""
        start, end = self.meta["ranges"][str(cls)]
        return self._array("locations")[start:end]


class PreprocessCache:
    """Preprocess-once store keyed by content hashes and settings.

    Args:
        root: cache folder (default :func:`default_cache_dir`).
        preprocessing: the model card's preprocessing block (scdl.processing.config.PreprocessConfig.from_card).
        target: the model's LabelTable.
        max_locations: voxel positions kept per class for class-aware sampling.
    """

    def __init__(self, root: Optional[os.PathLike | str], preprocessing: dict[str, Any], target: Any,
                 max_locations: int = 20000):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.preprocessing = dict(preprocessing)
        self.target = target
        self.max_locations = int(max_locations)
        settings = {"version": CACHE_VERSION, "preprocessing": self.preprocessing,
                    "target": table_fingerprint(target), "max_locations": self.max_locations}
        self.settings_hash = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        self._pre = None
        #: (file, why) of the damaged entry the last :meth:`get` found, or None
        self.damaged: Optional[tuple[Path, str]] = None

    def key(self, image_hash: str, label_hash: Optional[str], source: Any = None, resampled: bool = False) -> str:
        """The entry key of one case (``source``: the label map's LabelTable or None)."""
        parts = {"settings": self.settings_hash, "image": image_hash, "label": label_hash,
                 "source": table_fingerprint(source), "resampled": bool(resampled)}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def folder(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Optional[CachedCase]:
        """The entry of ``key``, or None when there is none, it is of another version, or it is damaged (then
        :attr:`damaged` tells why; the caller makes it again)."""
        self.damaged = None
        folder = self.folder(key)
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            self.damaged = (meta_path, f"meta.json cannot be read ({err})")
            return None
        if meta.get("version") != CACHE_VERSION:
            return None
        problem = check_entry(folder, meta)
        if problem is not None:
            self.damaged = problem
            return None
        return CachedCase(folder, meta)

    def _preprocessor(self):
        if self._pre is None:
            from scdl.processing.pipeline import Preprocessor

            self._pre = Preprocessor(self.preprocessing)
        return self._pre

    def put_anatomy(self, key: str, label: Any, source: Any = None,
                    facts: Optional[dict[str, Any]] = None) -> CachedCase:
        """Store an anatomy case: the layout of ``label`` (SimpleITK, values of ``source``) on the network grid.

        The network grid is planned exactly as for a CT on the label map's grid, so anatomy and real cases
        share spacing and orientation.
        """

        from scdl.processing.intensity import window_and_scale
        from scdl.synth.engine import synthesize
        from scdl.synth.layout import make_layout
        from scdl.synth.tissues import tissue_lut

        pre = self._preprocessor()
        ctx = pre.plan(_grid_of(label))
        structures = np.asarray(pre.forward_labels(label, ctx)).astype(np.int32)
        table = source if source is not None else self.target
        structures[structures >= table.num_classes] = 0
        spacing_zyx = tuple(float(s) for s in ctx.model_grid.spacing[::-1])
        layout = make_layout(structures, spacing_zyx)
        num_classes = int(self.target.num_classes)
        if source is not None:
            from scdl.labels.mapping import map_label_array

            lab, _unknown = map_label_array(structures, source, self.target)
        else:
            lab = structures
        lab = np.where((lab >= 0) & (lab < num_classes), lab, 0).astype(label_dtype(num_classes))
        lut = tissue_lut(table)
        cfg = pre.config
        hu, _subject = synthesize(layout.structures, layout.depth, lut, spacing_zyx,
                                  np.random.default_rng(int(key[:8], 16)), phase="portal")
        arr = np.ascontiguousarray(window_and_scale(hu, cfg.window, cfg.scale), dtype=np.float32)
        locations, ranges, counts = class_locations(lab, num_classes, self.max_locations)
        meta: dict[str, Any] = {"version": CACHE_VERSION, "shape": [int(s) for s in arr.shape], "labeled": True,
                                "facts": facts or {}, "ranges": {str(k): v for k, v in ranges.items()},
                                "counts": counts,
                                "anatomy": {"lut": lut, "spacing_zyx": list(spacing_zyx),
                                            "window": [float(v) for v in cfg.window],
                                            "scale": [float(v) for v in cfg.scale]}}
        with atomic_dir(self.folder(key)) as tmp:
            np.save(tmp / "image.npy", arr)
            np.save(tmp / "label.npy", lab)
            np.save(tmp / "locations.npy", locations)
            np.save(tmp / "structures.npy", layout.structures)
            np.save(tmp / "depth.npy", layout.depth)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return CachedCase(self.folder(key), meta)

    def put(self, key: str, image: Any, label: Any = None, source: Any = None,
            facts: Optional[dict[str, Any]] = None) -> CachedCase:
        """Preprocess ``image`` (and ``label``, mapped from ``source`` to the target table) and store it.

        Args:
            image: SimpleITK CT image. label: SimpleITK label map on the image's grid, or None.
            source: LabelTable of ``label`` (None: already in the target numbering).
            facts: check results kept in meta.json (warnings to repeat on a cache hit, file names).
        """
        pre = self._preprocessor()
        arr, ctx = pre.forward(image)
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        meta: dict[str, Any] = {"version": CACHE_VERSION, "shape": [int(s) for s in arr.shape],
                                "labeled": label is not None, "facts": facts or {}}
        num_classes = int(self.target.num_classes)
        lab = None
        if label is not None:
            lab = np.asarray(pre.forward_labels(label, ctx))
            if source is not None:
                from scdl.labels.mapping import map_label_array

                lab, _unknown = map_label_array(lab, source, self.target)
            lab = np.asarray(lab)
            if lab.shape != arr.shape:
                raise RuntimeError(f"label grid {lab.shape} != image grid {arr.shape} after preprocessing")
            lab = np.where((lab >= 0) & (lab < num_classes), lab, 0).astype(label_dtype(num_classes))
            locations, ranges, counts = class_locations(lab, num_classes, self.max_locations)
            meta.update(ranges={str(k): v for k, v in ranges.items()}, counts=counts)
        with atomic_dir(self.folder(key)) as tmp:
            np.save(tmp / "image.npy", arr)
            if lab is not None:
                np.save(tmp / "label.npy", lab)
                np.save(tmp / "locations.npy", locations)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return CachedCase(self.folder(key), meta)
