"""Atomic writes: all or nothing, the real extension on the temp file, normal permissions."""

from __future__ import annotations

import os
import stat

import pytest

from scdl.errors import ScdlError
from scdl.io.atomic import atomic_dir, atomic_path, atomic_write_text, split_suffix


def test_split_suffix_keeps_compound_extensions() -> None:
    assert split_suffix("a/b/seg.seg.nrrd") == ("seg", ".seg.nrrd")
    assert split_suffix("ct.nii.gz") == ("ct", ".nii.gz")
    assert split_suffix("x.nrrd") == ("x", ".nrrd")
    assert split_suffix("README") == ("README", "")


def test_failed_write_leaves_nothing(tmp_path) -> None:
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
            tmp.write_bytes(b"partial")
            raise RuntimeError("cancelled half way")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_replaced_only_on_success(tmp_path) -> None:
    target = tmp_path / "card.json"
    atomic_write_text(target, "old")
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise KeyError("boom")
    assert target.read_text(encoding="utf-8") == "old"
    atomic_write_text(target, "new")
    assert target.read_text(encoding="utf-8") == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json"]


def test_output_gets_umask_permissions_not_0600(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        target = tmp_path / "labels.txt"
        atomic_write_text(target, "x")
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_atomic_dir_replaces_whole_folder(tmp_path) -> None:
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "b.txt").write_text("2")
            raise ValueError
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_unwritable_folder_is_one_clear_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ScdlError) as info:
        atomic_write_text(blocker / "sub" / "out.txt", "x")
    assert str(blocker / "sub" / "out.txt") in str(info.value) and "Fix:" in str(info.value)
