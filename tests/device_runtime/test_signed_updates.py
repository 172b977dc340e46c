"""Signed updates (The Update Framework) end to end: a real repository signed with Ed25519 keys
(cloud.export.signing), served by the real service on loopback, and devices that update through
`tuf.ngclient.Updater` or install offline from the metadata carried with a bundle. Tampered,
re-signed with a wrong key, stripped, expired and replayed metadata are refused and the old bundle
keeps serving; a rotated root is followed.
"""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata

from cloud.export.signing import SignedRepository, create_keys, load_signer
from cloud.service import BundleFolder, CloudService, create_app
from cloud.service.bundles import SignedFiles
from device_runtime import signed
from device_runtime.bundle import BundleRegistry
from device_runtime.client import CloudClient
from device_runtime.signed import UntrustedBundle
from device_runtime.store import HistoryStore
from tests.helpers.device import copy_bundle
from tests.helpers.service import serve_in_thread, tiny_run

FIRST, LATER = "2030-01-01T00:00:00+00:00", "2031-01-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    run_dir, data_dir = tiny_run(tmp_path_factory.mktemp("signed"))
    return CloudService.load(run_dir, data_dir)


@pytest.fixture
def world(tmp_path, device_bundle):
    """Keys, a repository with bundle v1 signed, and a device that trusts its root."""
    keys = tmp_path / "keys"
    create_keys(keys)
    repo = SignedRepository.init(tmp_path / "repo", keys / "root.pem", keys)
    v1 = copy_bundle(device_bundle, tmp_path / "bundles" / "v1", model_version="v1", created_at=FIRST)
    repo.add_bundle(v1, keys)
    device = tmp_path / "device"
    signed.trust_root(device, repo.metadata / "1.root.json")
    return tmp_path, keys, repo, BundleRegistry(device)


def serve(service, repo):
    empty = repo.folder.parent / "plain-bundles"
    empty.mkdir(exist_ok=True)
    return serve_in_thread(create_app(service, BundleFolder(empty), signed=SignedFiles(repo.folder)))


def sync(url, registry):
    with HistoryStore(registry.root / "history.db") as store:
        return CloudClient(url, timeout=10).sync(registry, store)


def add_v2(world, device_bundle, **changes):
    tmp, keys, repo, _ = world
    v2 = copy_bundle(device_bundle, tmp / "bundles" / "v2", model_version="v2", created_at=LATER, **changes)
    repo.add_bundle(v2, keys)
    return v2


def test_sync_installs_the_signed_bundle_and_offline_installs_verify_the_carried_metadata(world, service, tmp_path):
    tmp, _, repo, registry = world
    with serve(service, repo) as url:
        report = sync(url, registry)
        assert report.installed and registry.active().manifest.model_version == "v1"
        assert sync(url, registry).installed is None  # same bundle: nothing to do
    offline = BundleRegistry(tmp_path / "offline")
    signed.trust_root(offline.root, repo.metadata / "1.root.json")
    assert signed.install(offline, tmp / "bundles" / "v1").manifest.model_version == "v1"
    archive = tmp_path / "v1.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((tmp / "bundles" / "v1").rglob("*")):
            zf.write(path, f"v1/{path.relative_to(tmp / 'bundles' / 'v1')}")
    zipped = BundleRegistry(tmp_path / "zipped")
    signed.trust_root(zipped.root, repo.metadata / "1.root.json")
    assert signed.install(zipped, archive).manifest.model_version == "v1"


def test_unsigned_bundles_are_refused_unless_allowed_loudly(world, device_bundle, tmp_path, caplog):
    _, _, _, registry = world
    plain = copy_bundle(device_bundle, tmp_path / "plain")
    with pytest.raises(UntrustedBundle, match="unsigned bundle .*dir-cloud repo add"):
        signed.install(registry, plain)
    assert registry.active() is None
    fresh = BundleRegistry(tmp_path / "fresh")
    with pytest.raises(UntrustedBundle, match="trusts no signing root.*dir-device trust ROOT.json"):
        signed.install(fresh, plain)
    with caplog.at_level(logging.WARNING):
        signed.allow_unsigned(fresh.root)
        assert signed.install(fresh, plain).path.is_dir()
    assert "UNSIGNED BUNDLES ALLOWED" in caplog.text and "WITHOUT a signature check" in caplog.text


def test_a_root_that_is_not_self_signed_is_not_trusted(world, tmp_path):
    _, keys, repo, _ = world
    md = Metadata.from_file(str(repo.metadata / "1.root.json"))
    md.signatures.clear()
    md.sign(load_signer(keys / "targets.pem"))
    (tmp_path / "bad-root.json").write_bytes(md.to_bytes())
    with pytest.raises(UntrustedBundle, match="not a TUF root metadata file signed by its own root keys"):
        signed.trust_root(tmp_path / "other", tmp_path / "bad-root.json")


def _serving_v1_then(world, service, device_bundle, damage):
    """Install v1 by sync, sign v2, apply `damage(repo)`, then sync: refused, v1 stays."""
    _, _, repo, registry = world
    with serve(service, repo) as url:
        assert sync(url, registry).installed
        add_v2(world, device_bundle)
        damage(repo)
        with pytest.raises(UntrustedBundle) as info:
            sync(url, registry)
    assert registry.active().manifest.model_version == "v1"
    assert [p.name for p in (registry.root / "downloads").iterdir()] == []
    return str(info.value)


def _signed_file(repo: SignedRepository, name: str) -> Path:
    info = repo._latest("targets").signed.targets[name]
    return repo._target_path(name, info)


def test_tampered_manifest_is_refused_online_and_offline(world, service, device_bundle):
    def edit_k(repo):
        path = _signed_file(repo, "v2/manifest.json")
        manifest = json.loads(path.read_text())
        manifest["K"] = 1
        path.write_text(json.dumps(manifest))

    assert "does not match its signed metadata" in _serving_v1_then(world, service, device_bundle, edit_k)
    v2 = world[0] / "bundles" / "v2"
    manifest = json.loads((v2 / "manifest.json").read_text())
    manifest["K"] = 1
    (v2 / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UntrustedBundle, match="manifest.json: not signed"):
        signed.install(world[3], v2)
    assert world[3].active().manifest.model_version == "v1"


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_model_file_is_refused_online_and_offline(world, service, device_bundle):
    def flip(repo):
        _flip(_signed_file(repo, "v2/model.tflite"))

    assert "LengthOrHashMismatch" in _serving_v1_then(world, service, device_bundle, flip)
    v2 = world[0] / "bundles" / "v2"
    _flip(v2 / "model.tflite")
    with pytest.raises(UntrustedBundle, match="model.tflite: does not match its signed length and sha256"):
        signed.install(world[3], v2)


def test_metadata_signed_with_a_wrong_key_or_stripped_is_refused(world, service, device_bundle, tmp_path):
    create_keys(tmp_path / "wrong")

    def resign(repo):
        path = repo.metadata / "timestamp.json"
        md = Metadata.from_file(str(path))
        md.signed.version += 1
        md.signatures.clear()
        md.sign(load_signer(tmp_path / "wrong" / "timestamp.pem"))
        path.write_bytes(md.to_bytes())

    assert "UnsignedMetadataError" in _serving_v1_then(world, service, device_bundle, resign)


def test_stripped_signature_is_refused(world, service, device_bundle):
    def strip(repo):
        snapshot = repo._latest("timestamp").signed.snapshot_meta.version
        path = repo.metadata / f"{snapshot}.snapshot.json"
        raw = json.loads(path.read_text())
        raw["signatures"] = []
        path.write_text(json.dumps(raw))

    assert "UnsignedMetadataError" in _serving_v1_then(world, service, device_bundle, strip)


def test_expired_metadata_is_refused(world, service, device_bundle):
    tmp, keys, repo, registry = world
    with serve(service, repo) as url:
        assert sync(url, registry).installed
        v2 = copy_bundle(device_bundle, tmp / "bundles" / "v2", model_version="v2", created_at=LATER)
        repo.add_bundle(v2, keys, expiry_days={"timestamp": -1})
        with pytest.raises(UntrustedBundle, match="ExpiredMetadataError"):
            sync(url, registry)
    assert registry.active().manifest.model_version == "v1"
    with pytest.raises(UntrustedBundle, match="ExpiredMetadataError"):
        signed.install(registry, v2)


def test_replayed_older_metadata_is_refused(world, service, device_bundle, tmp_path):
    _, _, repo, registry = world
    old = tmp_path / "old-metadata"
    shutil.copytree(repo.metadata, old)
    add_v2(world, device_bundle)
    with serve(service, repo) as url:
        assert sync(url, registry).installed and registry.active().manifest.model_version == "v2"
        shutil.rmtree(repo.metadata)
        shutil.copytree(old, repo.metadata)  # an attacker replays the repository as it was before v2
        with pytest.raises(UntrustedBundle, match="BadVersionNumberError: New timestamp version"):
            sync(url, registry)
    assert registry.active().manifest.model_version == "v2"


def test_rotated_root_is_followed_and_an_unchained_root_refused(world, service, device_bundle, tmp_path):
    tmp, keys, repo, registry = world
    with serve(service, repo) as url:
        assert sync(url, registry).installed
        create_keys(tmp_path / "new")
        assert repo.rotate(keys / "root.pem", tmp_path / "new" / "root.pem", tmp_path / "new") == 2
        v2 = copy_bundle(device_bundle, tmp / "bundles" / "v2", model_version="v2", created_at=LATER)
        repo.add_bundle(v2, tmp_path / "new")
        assert sync(url, registry).installed and registry.active().manifest.model_version == "v2"
        with pytest.raises(FileNotFoundError):
            repo.add_bundle(v2, keys / "missing")
        # a root 3 signed by a key the device never trusted (not by root 2's key)
        md = repo.root()
        md.signed.version = 3
        md.signatures.clear()
        create_keys(tmp_path / "evil")
        md.sign(load_signer(tmp_path / "evil" / "root.pem"))
        (repo.metadata / "3.root.json").write_bytes(md.to_bytes())
        with pytest.raises(UntrustedBundle, match="UnsignedMetadataError"):
            sync(url, registry)
    assert registry.active().manifest.model_version == "v2"


def test_the_service_never_serves_links_or_names_outside_the_repository(world, service, tmp_path):
    import urllib.error
    import urllib.request

    _, _, repo, _ = world
    (repo.metadata / "9.root.json").symlink_to(repo.metadata / "1.root.json")
    (tmp_path / "secret.json").write_text("{}")
    (repo.targets / "linked").symlink_to(tmp_path, target_is_directory=True)
    bundles = tmp_path / "plain-bundles"
    bundles.mkdir()
    (bundles / "linked").symlink_to(repo.folder, target_is_directory=True)
    assert BundleFolder(bundles).scan() == []
    with serve(service, repo) as url:
        assert urllib.request.urlopen(f"{url}/tuf/metadata/1.root.json", timeout=10).status == 200
        for path in [
            "metadata/9.root.json",
            "targets/linked/secret.json",
            "metadata/..%2f..%2fkeys%2froot.pem",
            "metadata/%2e%2e/metadata/1.root.json",
            "keys/root.pem",
            "metadata/.1.root.json.tmp",
        ]:
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(f"{url}/tuf/{path}", timeout=10)
            assert answer.value.code == 404, path


def test_a_bundle_signed_by_another_repository_is_refused_offline(world, device_bundle, tmp_path):
    _, _, _, registry = world
    create_keys(tmp_path / "other-keys")
    other = SignedRepository.init(tmp_path / "other", tmp_path / "other-keys" / "root.pem", tmp_path / "other-keys")
    foreign = copy_bundle(device_bundle, tmp_path / "foreign", model_version="foreign", created_at=LATER)
    other.add_bundle(foreign, tmp_path / "other-keys")
    with pytest.raises(UntrustedBundle, match="does not check out under the trusted root .*UnsignedMetadataError"):
        signed.install(registry, foreign)
    assert registry.active() is None
