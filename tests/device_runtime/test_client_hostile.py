"""A hostile service on loopback (real uvicorn) sends bundle listings that name paths outside the
download folder: relative, absolute, percent-encoded and through symbolic links. The client refuses
each with a clear error and touches nothing outside its own fresh download folder."""

from __future__ import annotations

import hashlib
import json

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from device_runtime import signed
from device_runtime.bundle import BundleRegistry
from device_runtime.client import CloudClient, CloudUnavailable
from device_runtime.store import HistoryStore
from tests.helpers.device import SPEC
from tests.helpers.service import serve_in_thread, served_bundle

LATER = "2099-01-01T00:00:00+00:00"
PAYLOAD = b"attacker bytes"


def hostile_app(version: str, paths: list[str]) -> FastAPI:
    """A service whose listing names bundle `version` with files `paths` (each served as PAYLOAD); its
    manifest_sha256 starts with the 12 zeros of the active folder's name, as an attacker would choose."""
    app = FastAPI()
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    entry = {
        "version": version,
        "model_name": "dir",
        "model_version": "evil",
        "created_at": LATER,
        "embedding_version": "e",
        "manifest_sha256": "0" * 64,
        "files": [{"path": p, "sha256": digest, "size": len(PAYLOAD), "url": "/file"} for p in paths],
    }

    @app.get("/v1/bundles")
    def listing():
        return JSONResponse({"latest": version, "bundles": [entry]})

    @app.get("/v1/bundles/{anything:path}")
    def one(anything: str):
        return JSONResponse(entry)

    @app.get("/file")
    def file():
        return Response(PAYLOAD)

    return app


@pytest.fixture
def device(tmp_path):
    """A registry whose active bundle is a valid manifest with files (put in place by hand), and a store."""
    root = tmp_path / "device"
    versions = root / "versions"
    served_bundle(versions / "active-000000000000", SPEC, created_at="2020-01-01T00:00:00+00:00")
    (root / "current").write_text(json.dumps({"active": "active-000000000000", "previous": []}))
    signed.allow_unsigned(root)  # the unsigned listing path is the one that took server-chosen paths
    victim = tmp_path / "victim-0123456789ab"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    with HistoryStore(tmp_path / "history.db") as store:
        yield BundleRegistry(root), store, victim


def snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.read_bytes() if p.is_file() else b"") for p in folder.rglob("*"))


HOSTILE_VERSIONS = [
    "../versions/active",  # relative: `downloads/../versions/active-000000000000` was deleted
    "/tmp/victim-0123456789ab",  # absolute
    "..%2fversions%2factive-000000000000",  # percent-encoded
    "%2e%2e",
    ".hidden",
    "a/b",
    "a\\b",
    "",
    "x" * 200,
]


@pytest.mark.parametrize("version", HOSTILE_VERSIONS)
def test_sync_refuses_a_listing_whose_version_is_a_path(device, version):
    registry, store, victim = device
    active_before = snapshot(registry.versions_dir)
    with (
        serve_in_thread(hostile_app(version, ["manifest.json"])) as url,
        pytest.raises(CloudUnavailable, match="bundle version .* refusing it"),
    ):
        CloudClient(url).sync(registry, store)
    assert snapshot(registry.versions_dir) == active_before
    assert registry.active().version == "active-000000000000"
    assert (victim / "keep.txt").read_text() == "precious"
    assert [p.name for p in (registry.root / "downloads").iterdir()] == []  # the private folder is gone


@pytest.mark.parametrize(
    "name",
    [
        "../../outside.txt",
        "/tmp/outside.txt",
        "%2e%2e/outside.txt",
        "a/../../x",
        "ok/./x",
        ".manifest.json",
        "a//b",
        "a/b/c/d/e",
    ],
)
def test_sync_refuses_a_listing_whose_file_name_is_a_path(device, name, tmp_path):
    registry, store, _ = device
    with (
        serve_in_thread(hostile_app("v2", ["manifest.json", name])) as url,
        pytest.raises(CloudUnavailable, match="unsafe file path"),
    ):
        CloudClient(url).sync(registry, store)
    assert not list(tmp_path.rglob("outside.txt")) and registry.active().version == "active-000000000000"
    assert [p.name for p in (registry.root / "downloads").iterdir()] == []


def test_sync_never_writes_through_symbolic_links(device, tmp_path):
    """The download folder's name is chosen by the client: a planted link named like the old
    `VERSION-SHA` folder is neither followed nor removed, and a `downloads` link out of the registry is refused."""
    registry, store, victim = device
    downloads = registry.root / "downloads"
    downloads.mkdir()
    planted = downloads / "v2-0123456789ab"
    planted.symlink_to(victim, target_is_directory=True)
    with serve_in_thread(hostile_app("v2", ["manifest.json", "model.pte"])) as url:
        with pytest.raises(CloudUnavailable, match="checksum disagree"):  # downloaded into its own folder
            CloudClient(url).sync(registry, store)
        assert planted.is_symlink() and (victim / "keep.txt").read_text() == "precious"
        assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
        planted.unlink()
        downloads.rmdir()
        downloads.symlink_to(victim, target_is_directory=True)
        with pytest.raises(ValueError, match="leads outside the registry"):
            CloudClient(url).sync(registry, store)
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert registry.active().version == "active-000000000000"


def test_download_refuses_a_file_url_on_another_host(device, tmp_path):
    app = hostile_app("v2", ["manifest.json"])
    with serve_in_thread(app) as url:
        client = CloudClient(url)
        entry = client._get("/v1/bundles/v2", None)
    entry["files"][0]["url"] = "//127.0.0.2/file"
    app2 = FastAPI()
    app2.get("/v1/bundles/{anything:path}")(lambda anything: JSONResponse(entry))
    with serve_in_thread(app2) as url, pytest.raises(CloudUnavailable, match="only a path on"):
        CloudClient(url).download_bundle("v2", tmp_path / "b")
