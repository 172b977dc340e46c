"""The device's CloudClient over real HTTP: a uvicorn server in a thread (tiny run, a real exported
bundle) and loopback peers that answer garbage, hang or refuse.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from types import SimpleNamespace

import numpy as np
import pytest

from cloud.export import write_bundle
from cloud.service import BundleFolder, CloudService, create_app
from device_runtime import signed
from device_runtime.bundle import BundleRegistry
from device_runtime.client import CloudClient, CloudUnavailable
from device_runtime.store import HistoryStore
from tests.helpers.service import bundle_copy, free_socket, http_answer, raw_server, serve_in_thread, tiny_run

LATER = "2099-01-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """The tiny run served with one real bundle `v1` (TFLite) of its model; base URL in `.url`."""
    root = tmp_path_factory.mktemp("client")
    run_dir, data_dir = tiny_run(root)
    service = CloudService.load(run_dir, data_dir, max_vector_ids=3)
    bundles = root / "bundles"
    bundles.mkdir()
    write_bundle(
        service.model,
        service.spec,
        bundles / "v1",
        backends="tflite",
        model_version="v1",
        embedding_version=service.embedding_version,
        progress=lambda *a, **k: None,
    )
    with serve_in_thread(create_app(service, BundleFolder(bundles))) as url:
        yield SimpleNamespace(service=service, bundles=bundles, url=url, client=CloudClient(url, timeout=10))


def test_fetch_slate_and_list(cloud):
    slate = cloud.client.fetch_slate("u1")
    expected, _ = cloud.service.user_slate("u1")
    assert slate.model_dump(exclude={"request_id"}) == expected.model_dump(exclude={"request_id"})
    assert [s.source for s in slate.sources] == ["video", "article"] and slate.sources[0].items
    assert all(len(s.items) <= 1 for s in cloud.client.fetch_slate("u1", n=1).sources)
    replay = cloud.client.fetch_list("test", 0)
    assert replay.slate.request_id == "test-0" and replay.history


def test_error_status_is_cloud_unavailable_with_the_servers_detail(cloud):
    with pytest.raises(CloudUnavailable, match="HTTP 404: user 'no body/ü' is not known") as info:
        cloud.client.fetch_slate("no body/ü")
    assert info.value.status == 404
    with pytest.raises(CloudUnavailable, match="HTTP 422") as info:
        cloud.client.fetch_slate("u1", n=99)
    assert info.value.status == 422 and "less than or equal to 3" in str(info.value)


def test_fetch_vectors_in_batches_under_the_server_cap(cloud):
    ids = {"video": ["v1", "v2", "v3", "v4", "v5"], "article": ["a1", "zz"]}
    answer = CloudClient(cloud.url, vector_batch=2).fetch_vectors(ids)
    expected = cloud.service.vectors({"video": ids["video"], "article": ["a1"]})
    assert answer.embedding_version == cloud.service.embedding_version and answer.unknown == {"article": ["zz"]}
    got = {s.source: [(i.item_id, i.vector) for i in s.items] for s in answer.sources}
    assert got == {s.source: [(i.item_id, i.vector) for i in s.items] for s in expected.sources}
    with pytest.raises(CloudUnavailable, match="at most 3") as info:
        CloudClient(cloud.url, vector_batch=10).fetch_vectors(ids)
    assert info.value.status == 413


def test_download_bundle_is_verified_and_atomic(cloud, tmp_path):
    dest = cloud.client.download_bundle("v1", tmp_path / "b")
    source = cloud.bundles / "v1"
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in source.iterdir())
    assert all((dest / p.name).read_bytes() == p.read_bytes() for p in source.iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # the .partial folder was renamed
    with pytest.raises(FileExistsError):
        cloud.client.download_bundle("v1", dest)
    with pytest.raises(CloudUnavailable, match="available versions: \\['v1'\\]"):
        cloud.client.download_bundle("v9", tmp_path / "c")


def test_download_resumes_a_partial_file_with_range(cloud, tmp_path, caplog):
    model = (cloud.bundles / "v1" / "model.tflite").read_bytes()
    partial = tmp_path / ".b.partial"
    partial.mkdir()
    (partial / "model.tflite").write_bytes(model[:1000])
    with caplog.at_level(logging.INFO, logger="device_runtime.client"):
        dest = cloud.client.download_bundle("v1", tmp_path / "b")
    assert f"resuming model.tflite at byte 1000 of {len(model)}" in caplog.text
    assert (dest / "model.tflite").read_bytes() == model


def test_download_discards_a_corrupt_copy_and_the_next_try_succeeds(cloud, tmp_path):
    model = (cloud.bundles / "v1" / "model.tflite").read_bytes()
    partial = tmp_path / ".b.partial"
    partial.mkdir()
    (partial / "model.tflite").write_bytes(b"\0" * 1000)  # right length so far, wrong bytes
    with pytest.raises(CloudUnavailable, match="sha256 .* the copy was discarded"):
        cloud.client.download_bundle("v1", tmp_path / "b")
    assert not (partial / "model.tflite").exists() and not (tmp_path / "b").exists()
    assert (cloud.client.download_bundle("v1", tmp_path / "b") / "model.tflite").read_bytes() == model


def test_download_refuses_a_listing_with_unsafe_paths(tmp_path):
    entry = {
        "version": "x",
        "model_name": "dir",
        "model_version": "x",
        "created_at": LATER,
        "embedding_version": "e",
        "manifest_sha256": "0" * 64,
        "files": [
            {"path": "manifest.json", "sha256": "0" * 64, "size": 2, "url": "/m"},
            {"path": "../../evil", "sha256": "0" * 64, "size": 2, "url": "/e"},
        ],
    }
    with raw_server(http_answer(json.dumps(entry).encode())) as url:
        with pytest.raises(CloudUnavailable):
            CloudClient(url).download_bundle("x", tmp_path / "b")
    assert not (tmp_path.parent / "evil").exists()


def test_sync_installs_only_newer_bundles_and_refreshes_stale_vectors(cloud, tmp_path):
    registry = BundleRegistry(tmp_path / "device")
    signed.allow_unsigned(registry.root)  # the unsigned listing (signed updates: test_signed_updates.py)
    store = HistoryStore(tmp_path / "history.db")
    dim = cloud.service.model.item_encoder.vector_dims()[0]
    store.cache_items("video", [("v1", [0.0] * dim), ("gone", [0.0] * dim)], "old-embedding")
    try:
        report = cloud.client.sync(registry, store)
        assert report.installed and report.active == report.installed == registry.active().version
        assert registry.active().manifest.model_version == "v1" and not report.skipped
        assert report.refreshed == 1 and report.unknown == [("video", "gone")]
        version = cloud.service.embedding_version
        assert store.embedding_version == version and store.stale_items(version) == [("video", "gone")]
        stored = store.db.conn.execute("SELECT vector FROM items WHERE item_id = 'v1'").fetchone()[0]
        served = cloud.service.vectors({"video": ["v1"]}).sources[0].items[0].vector
        # the bundle's measured float16 effect is within the client's tolerance: the refresh came as float16
        assert registry.active().manifest.metrics["float16_vectors_max_abs_diff"] <= 1e-3
        assert cloud.client.vectors == "float16"
        assert np.array_equal(np.frombuffer(stored, "<f4"), np.array(served, np.float16).astype(np.float32))

        assert cloud.client.sync(registry, store).installed is None  # same bundle: nothing to do
        bundle_copy(cloud.bundles / "v1", cloud.bundles / "v2", created_at=LATER, model_version="v2")
        newer = cloud.client.sync(registry, store)
        assert newer.installed and registry.active().manifest.model_version == "v2"
        shutil.rmtree(cloud.bundles / "v2")
        assert cloud.client.sync(registry, store).installed is None  # v1 is older: no downgrade
        assert registry.active().manifest.model_version == "v2"
    finally:
        shutil.rmtree(cloud.bundles / "v2", ignore_errors=True)
        store.close()


def test_sync_does_not_refresh_vectors_for_another_embedding_version(cloud, tmp_path):
    registry = BundleRegistry(tmp_path / "device")
    registry.install(bundle_copy(cloud.bundles / "v1", tmp_path / "other", embedding_version="other-embedding"))
    with HistoryStore(tmp_path / "history.db") as store:
        store.cache_items("video", [("v1", [0.0] * 3)], "older-embedding")
        report = cloud.client.sync(registry, store, install=False)
        assert report.installed is None and report.refreshed == 0
        assert "'other-embedding'" in report.skipped and cloud.service.embedding_version in report.skipped
        assert store.stale_items("other-embedding") == [("video", "v1")]


def test_unreachable_garbage_hanging_and_failing_servers_raise_cloud_unavailable(cloud, tmp_path):
    sock = free_socket()
    closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    with pytest.raises(CloudUnavailable, match="unavailable .*refused.*keep serving offline") as info:
        CloudClient(closed).fetch_slate("u1")
    assert info.value.status is None
    with raw_server(http_answer(b"{not json")) as url:
        with pytest.raises(CloudUnavailable, match="not a valid CandidateSlate"):
            CloudClient(url).fetch_slate("u1")
    with raw_server(http_answer(b'{"latest": 3}')) as url:
        with pytest.raises(CloudUnavailable, match="not a valid BundleList"):
            CloudClient(url).list_bundles()
    with raw_server(lambda conn: conn.sendall(b"hello, not HTTP\r\n\r\n")) as url:
        with pytest.raises(CloudUnavailable, match="unavailable"):
            CloudClient(url).health()
    with raw_server(http_answer(b"<html>oops</html>", "500 Internal Server Error", "text/html")) as url:
        with pytest.raises(CloudUnavailable, match="HTTP 500: <html>oops") as info:
            CloudClient(url).version()
        assert info.value.status == 500
    with raw_server(lambda conn: time.sleep(1.5)) as url:
        start = time.monotonic()
        with pytest.raises(CloudUnavailable, match="timed out"):
            CloudClient(url, timeout=0.3).fetch_slate("u1")
        assert time.monotonic() - start < 1.4
    registry = BundleRegistry(tmp_path / "device")
    signed.allow_unsigned(registry.root)
    active = registry.install(cloud.bundles / "v1")
    with raw_server(http_answer(b"garbage")) as url, HistoryStore(tmp_path / "history.db") as store:
        with pytest.raises(CloudUnavailable):
            CloudClient(url).sync(registry, store)
    assert registry.active() == active
    with pytest.raises(ValueError, match="http://"):
        CloudClient("127.0.0.1:8000")


def test_sync_installs_nothing_on_a_device_without_a_trust_policy(cloud, tmp_path):
    registry = BundleRegistry(tmp_path / "device")
    with HistoryStore(tmp_path / "history.db") as store:
        with pytest.raises(signed.UntrustedBundle, match="trusts no signing root"):
            cloud.client.sync(registry, store)
    assert registry.active() is None
