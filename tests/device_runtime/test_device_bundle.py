"""Bundle install on the device: verification, atomic swap, rollback, refusal of bad bundles."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from device_runtime.backends import load_backend
from device_runtime.bundle import BundleRegistry, verify
from shared_schema import SCHEMA_VERSION
from tests.helpers.device import copy_bundle, read_manifest


@pytest.fixture
def registry(tmp_path, device_bundle) -> BundleRegistry:
    """A registry with the session bundle installed and active."""
    reg = BundleRegistry(tmp_path / "root")
    reg.install(device_bundle)
    return reg


def _model_file(bundle: Path) -> str:
    return next(f.path for f in read_manifest(bundle).files if f.runtime == "tflite")


def _assert_still_serving(reg: BundleRegistry, version: str) -> None:
    active = reg.active()
    assert active.version == version
    verify(active.path)
    scores = load_backend(active.path, active.manifest).run(
        {s.name: np.zeros(s.shape, np.float32) for s in active.manifest.inputs}
    )
    assert scores.shape == tuple(active.manifest.outputs[0].shape)


def _assert_no_leftovers(reg: BundleRegistry) -> None:
    names = {p.name for p in reg.versions_dir.iterdir()}
    assert names == {reg.active().version, *reg.previous()}


def test_install_copies_verifies_and_activates(tmp_path, device_bundle):
    reg = BundleRegistry(tmp_path / "root")
    assert reg.active() is None
    installed = reg.install(device_bundle)
    manifest = read_manifest(device_bundle)
    assert installed.manifest == manifest
    assert installed.path.parent == reg.versions_dir and installed.version.startswith(manifest.model_version + "-")
    assert json.loads((reg.root / "current").read_text())["active"] == installed.version
    for f in manifest.files:
        assert (installed.path / f.path).read_bytes() == (device_bundle / f.path).read_bytes()
    assert reg.active() == installed and reg.previous() == []
    _assert_no_leftovers(reg)


def test_install_from_zip(tmp_path, device_bundle):
    archive = shutil.make_archive(str(tmp_path / "bundle"), "zip", device_bundle.parent, device_bundle.name)
    reg = BundleRegistry(tmp_path / "root")
    from_zip = reg.install(archive)
    assert from_zip.manifest == read_manifest(device_bundle)
    assert from_zip.version == BundleRegistry(tmp_path / "root2").install(device_bundle).version


def test_reinstalling_the_active_bundle_changes_nothing(registry, device_bundle):
    before = registry.active()
    assert registry.install(device_bundle) == before
    assert registry.previous() == []


def test_new_version_keeps_the_previous_for_rollback(registry, device_bundle, tmp_path):
    first = registry.active().version
    second = registry.install(copy_bundle(device_bundle, tmp_path / "v2", model_version="test-2"))
    assert second.version.startswith("test-2-") and registry.previous() == [first]
    back = registry.rollback()
    assert back.version == first and registry.previous() == []
    assert not (registry.versions_dir / second.version).exists()
    with pytest.raises(ValueError, match="no previous bundle to roll back to"):
        registry.rollback()


def test_old_versions_beyond_keep_are_removed(tmp_path, device_bundle):
    reg = BundleRegistry(tmp_path / "root", keep=2)
    versions = [
        reg.install(copy_bundle(device_bundle, tmp_path / f"v{i}", model_version=f"v{i}")).version for i in range(3)
    ]
    assert reg.active().version == versions[2] and reg.previous() == [versions[1]]
    _assert_no_leftovers(reg)


@pytest.mark.parametrize("damage", ["corrupt_byte", "truncate", "delete_file"])
def test_damaged_bundle_is_refused_and_the_active_one_keeps_serving(registry, device_bundle, tmp_path, damage):
    active = registry.active().version
    bad = copy_bundle(device_bundle, tmp_path / "bad", model_version="bad-1")
    target = bad / _model_file(bad)
    data = bytearray(target.read_bytes())
    if damage == "corrupt_byte":
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
        error, match = ValueError, "sha256 .* does not match manifest.json"
    elif damage == "truncate":
        target.write_bytes(bytes(data[: len(data) // 3]))
        error, match = ValueError, "truncated or wrong file"
    else:
        target.unlink()
        error, match = FileNotFoundError, "listed in manifest.json but missing"
    with pytest.raises(error, match=match):
        registry.install(bad)
    _assert_still_serving(registry, active)
    _assert_no_leftovers(registry)


def test_incompatible_schema_version_is_refused(registry, device_bundle, tmp_path):
    active = registry.active().version
    bad = copy_bundle(device_bundle, tmp_path / "bad")
    raw = json.loads((bad / "manifest.json").read_text())
    raw["schema_version"] = SCHEMA_VERSION + 1
    (bad / "manifest.json").write_text(json.dumps(raw))
    expected = rf"schema_version {SCHEMA_VERSION + 1} is not supported .* reads {SCHEMA_VERSION}"
    with pytest.raises(ValueError, match=expected):
        registry.install(bad)
    _assert_still_serving(registry, active)


def test_missing_or_broken_manifest_is_refused(registry, device_bundle, tmp_path):
    active = registry.active().version
    bad = copy_bundle(device_bundle, tmp_path / "bad")
    (bad / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json: missing"):
        registry.install(bad)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        registry.install(bad)
    with pytest.raises(FileNotFoundError, match="no such bundle"):
        registry.install(tmp_path / "nowhere")
    _assert_still_serving(registry, active)


def test_manifest_that_breaks_the_layout_is_refused(registry, device_bundle, tmp_path):
    manifest = read_manifest(device_bundle)
    bad = copy_bundle(device_bundle, tmp_path / "bad", n=manifest.n + 1)
    with pytest.raises(ValueError, match="do not follow the tensor layout"):
        registry.install(bad)


def test_file_path_escaping_the_bundle_is_refused(registry, device_bundle, tmp_path):
    manifest = read_manifest(device_bundle)
    files = [f.model_copy(update={"path": "../" + f.path}) if f.runtime == "tflite" else f for f in manifest.files]
    bad = copy_bundle(device_bundle, tmp_path / "bad", files=files)
    with pytest.raises(ValueError, match="(?s)files.2.path.*'../model.tflite' is not a plain relative file name"):
        registry.install(bad)


def test_bundle_this_runtime_cannot_load_is_refused(registry, device_bundle, tmp_path):
    """Checksums fine, but the only model file is not a model: install must not activate it."""
    manifest = read_manifest(device_bundle)
    tflite = next(f for f in manifest.files if f.runtime == "tflite")
    bad = copy_bundle(device_bundle, tmp_path / "bad")
    (bad / tflite.path).write_bytes(b"not a flatbuffer" * 8)
    junk = tflite.model_copy(update={"size": 128, "sha256": hashlib.sha256(b"not a flatbuffer" * 8).hexdigest()})
    (bad / "manifest.json").write_text(
        manifest.model_copy(update={"files": [junk], "model_version": "junk"}).model_dump_json()
    )
    with pytest.raises(ValueError, match="model.tflite: not a tflite model .*expected one of \\[b'TFL3'\\]"):
        registry.install(bad)
    _assert_no_leftovers(registry)


def test_corrupt_zip_is_refused(registry, tmp_path):
    archive = tmp_path / "bundle.zip"
    archive.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(ValueError, match="not a readable zip"):
        registry.install(archive)


@pytest.mark.parametrize("garbage", ["random", "header"])
def test_garbage_program_with_a_matching_sha256_is_refused_without_aborting(registry, device_bundle, tmp_path, garbage):
    """A random model_portable.pte used to abort the process inside ExecuTorch (rc 134)."""
    manifest = read_manifest(device_bundle)
    bad = copy_bundle(device_bundle, tmp_path / "bad")
    real = (bad / "model_portable.pte").read_bytes()
    data = os.urandom(len(real)) if garbage == "random" else real[:16] + os.urandom(len(real) - 16)
    (bad / "model_portable.pte").write_bytes(data)
    files = [
        f.model_copy(update={"sha256": hashlib.sha256(data).hexdigest()}) if f.path == "model_portable.pte" else f
        for f in manifest.files
    ]
    (bad / "manifest.json").write_text(
        manifest.model_copy(update={"files": files, "model_version": "junk"}).model_dump_json()
    )
    before = registry.active().version
    with pytest.raises(ValueError, match="model_portable.pte: (not a executorch model|this runtime cannot load it)"):
        registry.install(bad)
    _assert_still_serving(registry, before)
    _assert_no_leftovers(registry)


def test_damaged_active_files_fall_back_to_the_previous_good_version(registry, device_bundle, tmp_path, caplog):
    first = registry.active().version
    second = registry.install(copy_bundle(device_bundle, tmp_path / "v2", model_version="v2")).version
    with open(registry.versions_dir / second / _model_file(device_bundle), "r+b") as fh:
        fh.seek(64)
        fh.write(b"\xff\xfe")
    with caplog.at_level("WARNING", logger="device_runtime.bundle"):
        serving = registry.serving()
    assert serving.version == first and registry.active().version == first
    assert f"falling back to the previous good version {first}" in caplog.text and "sha256" in caplog.text


def test_current_pointer_must_name_a_version_folder(registry, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    for active in ["../../elsewhere", "/etc", "missing-000000000000", 3]:
        registry.pointer.write_text(json.dumps({"active": active, "previous": []}))
        with pytest.raises(ValueError, match="is not a version folder"):
            registry.active()
