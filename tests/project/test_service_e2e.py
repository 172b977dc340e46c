"""End to end over real HTTP: `dir-cloud serve` in a subprocess, the device client, registry and Reranker.

Module setup (about a minute): synthetic logs of 40 users -> prepare -> a small DIR trained one epoch ->
a TFLite bundle of it (write_bundle) in the bundles folder -> `python -m cloud.cli serve` on a free
loopback port. The last test stops the server (the device must keep serving offline).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cloud.data.prepare import prepare
from cloud.data.prepared import PreparedData
from cloud.data.synth import SynthConfig, generate, write_logs
from cloud.export import write_bundle
from cloud.service.slates import encode_items
from cloud.training.config import TrainConfig
from cloud.training.runs import load_run
from cloud.training.trainer import train
from device_runtime import signed
from device_runtime.bundle import BundleRegistry
from device_runtime.client import CloudClient, CloudUnavailable
from device_runtime.reranker import Reranker
from device_runtime.store import HistoryStore
from shared_schema import BehaviorEvent, CandidateSlate
from tests.helpers.service import SMALL_DIR, free_socket, http_answer, raw_server

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    write_logs(generate(SynthConfig(users=40, requests_per_user=10, lists_per_user=6)), root / "logs")
    prepare(root / "logs", root / "data")
    train(TrainConfig(epochs=1, model_options=SMALL_DIR), root / "data", root / "run", progress=False)
    run = load_run(root / "run")
    (root / "bundles").mkdir()
    write_bundle(
        run.model,
        run.spec,
        root / "bundles" / "b1",
        backends="tflite",
        model_version="b1",
        embedding_version=run.embedding_version,
        progress=lambda *a, **k: None,
    )
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    log = open(root / "serve.log", "wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloud.cli",
            "serve",
            "--run",
            str(root / "run"),
            "--data",
            str(root / "data"),
            "--bundles",
            str(root / "bundles"),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = CloudClient(f"http://127.0.0.1:{port}", timeout=10)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                client.health()
                break
            except CloudUnavailable:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"dir-cloud serve did not come up:\n{(root / 'serve.log').read_text()[-3000:]}")
                time.sleep(0.25)
        yield SimpleNamespace(
            process=process, client=client, run=run, data=PreparedData(root / "data"), users=client.users(limit=5)
        )
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _scores(result) -> dict[str, float]:
    return {item.item_id: item.score for item in result.items}


def test_sync_rerank_click_and_the_next_rerank_uses_it(cloud, tmp_path):
    registry, db = BundleRegistry(tmp_path / "device"), tmp_path / "history.db"
    signed.allow_unsigned(registry.root)  # unsigned listing; signed updates: test_signed_updates.py
    known = str(cloud.data.items("video").ids[0])
    with HistoryStore(db) as store:
        dim = cloud.run.model.item_encoder.vector_dims()[0]
        store.cache_items("video", [(known, [0.0] * dim), ("video-gone", [0.0] * dim)], "old-embedding")
        report = cloud.client.sync(registry, store)
        assert report.installed and registry.active().manifest.model_version == "b1"
        assert report.refreshed == 1 and report.unknown == [("video", "video-gone")]
        stored = store.db.conn.execute("SELECT vector FROM items WHERE item_id = ?", (known,)).fetchone()[0]
        expected = encode_items(cloud.run.model, cloud.data, "video", np.array([0]))[0]
        assert cloud.client.vectors == "float16"  # the bundle's measured float16 effect is within tolerance
        assert np.array_equal(np.frombuffer(stored, "<f4"), expected.astype(np.float16).astype(np.float32))

    user = cloud.users[0]
    slate = cloud.client.fetch_slate(user)
    source = next(i for i, s in enumerate(slate.sources) if s.items)
    clicked = slate.sources[source].items[-1]
    with Reranker.open(registry.root, db) as reranker:
        first = reranker.rerank(slate)
        assert first.bundle_version == report.installed and first.backend == "tflite"
        assert len(first.items) == sum(len(s.items) for s in slate.sources)
        assert _scores(reranker.rerank(slate)) == _scores(first)  # nothing changed: same scores
        names = reranker.manifest.source_names
        reranker.record(BehaviorEvent(item_id=clicked.item_id, source=names[source], action="click", ts=time.time()))
        newest_id, newest_vector = reranker.store.last_clicks(names, reranker.manifest.t)[source][0]
        assert newest_id == clicked.item_id and np.allclose(newest_vector, clicked.vector)
        second = reranker.rerank(slate)
    diff = max(abs(_scores(second)[i] - _scores(first)[i]) for i in _scores(first))
    assert diff > 1e-6, "the click in the history did not change any score"
    again = cloud.client.fetch_slate(user)  # the cloud never saw the click: same candidates
    assert [[i.item_id for i in s.items] for s in again.sources] == [
        [i.item_id for i in s.items] for s in slate.sources
    ]


def test_device_keeps_serving_offline_when_the_cloud_is_garbage_or_down(cloud, tmp_path):
    registry, db = BundleRegistry(tmp_path / "device"), tmp_path / "history.db"
    signed.allow_unsigned(registry.root)  # unsigned listing; signed updates: test_signed_updates.py
    with HistoryStore(db) as store:
        cloud.client.sync(registry, store)
    (tmp_path / "slate.json").write_text(cloud.client.fetch_slate(cloud.users[1]).model_dump_json())
    cached = CandidateSlate.model_validate_json((tmp_path / "slate.json").read_text())
    with Reranker.open(registry.root, db, merge="score") as reranker:  # score: no exposure debt between pages
        online = reranker.rerank(cached)
    active = registry.active()

    with raw_server(http_answer(b"<<not json>>")) as url, HistoryStore(db) as store:
        garbage = CloudClient(url, timeout=2)
        with pytest.raises(CloudUnavailable, match="not a valid CandidateSlate"):
            garbage.fetch_slate(cloud.users[1])
        with pytest.raises(CloudUnavailable, match="not a valid BundleList"):
            garbage.sync(registry, store)

    cloud.process.terminate()  # the cloud goes down for good (this test runs last in the module)
    cloud.process.wait(10)
    with pytest.raises(CloudUnavailable, match="unavailable"):
        cloud.client.fetch_slate(cloud.users[1])
    with HistoryStore(db) as store, pytest.raises(CloudUnavailable, match="unavailable"):
        cloud.client.sync(registry, store)
    assert registry.active() == active
    with Reranker.open(registry.root, db, merge="score") as reranker:  # restart offline: last bundle, cached slate
        offline = reranker.rerank(cached)
    assert [i.item_id for i in offline.items] == [i.item_id for i in online.items]
    assert _scores(offline) == _scores(online)
