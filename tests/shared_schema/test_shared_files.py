"""shared_schema.files: the atomic file write and the file sha256 both sides use."""

from __future__ import annotations

import hashlib
import os

import pytest

from shared_schema.files import atomic_write_bytes, file_sha256


def test_atomic_write_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "current"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["current"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_bytes(target, b"old")

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_file_sha256_reads_past_one_block(tmp_path):
    data = os.urandom((1 << 20) + 12345)
    path = tmp_path / "model.tflite"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
