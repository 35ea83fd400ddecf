from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgeseg.errors import ArtifactError
from edgeseg.fileio import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    read_json,
    remove_stale_temp_files,
    sha256_file,
    sha256_files,
)


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.bin"]


def test_crash_inside_write_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"complete")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_read_only_folder_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a read-only folder does to mkstemp, faked: CI runs as root, which ignores directory permissions."""
    import tempfile

    def read_only(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(ArtifactError, match="cannot write into") as info:
        atomic_write_bytes(tmp_path / "x", b"1")
    assert "PermissionError: Permission denied" in str(info.value) and "writable folder" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_is_a_user_error_without_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "engine.bin"

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ArtifactError, match="nothing was left behind"):
        atomic_write_bytes(target, b"x" * 100)
    assert list(tmp_path.iterdir()) == []


def test_json_round_trip_and_corrupt(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "m.json", {"b": 1, "a": [1.5]})
    assert read_json(path) == {"a": [1.5], "b": 1}
    path.write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt"):
        read_json(path)
    with pytest.raises(ArtifactError, match="not found"):
        read_json(tmp_path / "missing.json")


def test_hashes_depend_on_content_and_names(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"1")
    b.write_bytes(b"1")
    assert sha256_file(a) == sha256_file(b)
    assert sha256_files([a, b]) == sha256_files([b, a])
    b.write_bytes(b"2")
    assert sha256_files([a]) != sha256_files([a, b])


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".model.onnx.abc.tmp").write_bytes(b"half")
    (tmp_path / "model.onnx").write_bytes(b"whole")
    assert [p.name for p in remove_stale_temp_files(tmp_path)] == [".model.onnx.abc.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
