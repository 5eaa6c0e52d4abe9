"""What the code that names, numbers, colours or counts classes uses of a label table: :class:`LabelTableLike`.

:class:`scdl.labels.table.LabelTable` is the implementation (loaded from a Slicer colour-table CSV); functions
that only read a table (writers of ``.seg.nrrd`` and DICOM SEG, the overlay legend, the cache fingerprint, the
model package, synthesis, inference) take this protocol, so a test can hand them any object of this shape.
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence, runtime_checkable

from scdl.labels.table import LabelEntry


@runtime_checkable
class LabelTableLike(Protocol):
    """A read-only label table: entries in value order (0, the background, is not an entry)."""

    @property
    def name(self) -> str:
        """The table's name ("synapse", "totalsegmentator_v2", ...; may be empty)."""
        ...

    @property
    def entries(self) -> Sequence[LabelEntry]:
        """One :class:`~scdl.labels.table.LabelEntry` (value, name, colour, codes) per label, by value."""
        ...

    @property
    def names(self) -> list[str]:
        """Names in value order."""
        ...

    @property
    def values(self) -> list[int]:
        """Label values in increasing order."""
        ...

    @property
    def num_classes(self) -> int:
        """Number of network output channels: largest value + 1 (background 0 included)."""
        ...

    def find(self, name: str) -> Optional[LabelEntry]:
        """The entry whose name matches ``name`` after normalisation (synonyms included), or None."""
        ...

    def by_name(self, name: str) -> LabelEntry:
        """Like :meth:`find`, ``KeyError`` when no entry matches."""
        ...

    def by_value(self, value: int) -> LabelEntry:
        """The entry with this label value (``KeyError`` if none)."""
        ...
