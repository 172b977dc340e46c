"""Vector refresh keeps the history private: after an embedding change the device asks the real service
(uvicorn on loopback) for whole anonymity buckets of item ids, never for single ids, and every bucket it
names holds at least B items (or the source's whole table when that is smaller)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cloud.service import BundleFolder, CloudService, create_app
from device_runtime.client import CloudClient, SyncReport
from device_runtime.store import HistoryStore
from shared_schema.service import MIN_BUCKET_ITEMS, item_bucket
from tests.helpers.service import serve_in_thread, tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("private"))


def active(service):
    """What the refresh reads of the active bundle: its embedding version and sources."""
    return SimpleNamespace(
        manifest=SimpleNamespace(embedding_version=service.embedding_version, source_names=service.spec.source_names)
    )


def refresh_through(service, tmp_path, clicked: dict[str, list[str]]):
    """Cache `clicked` under an old embedding version, refresh over HTTP; returns (report, requests seen)."""
    seen = {"buckets": [], "paths": []}
    by_buckets = service.bucket_vectors
    service.bucket_vectors = lambda buckets: seen["buckets"].append(buckets) or by_buckets(buckets)
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    app = create_app(service, BundleFolder(bundles))

    @app.middleware("http")
    async def record_path(request, call_next):
        seen["paths"].append(request.url.path)
        return await call_next(request)

    with serve_in_thread(app) as url, HistoryStore(tmp_path / "h.db") as store:
        dims = dict(zip(service.spec.source_names, service.model.item_encoder.vector_dims()))
        for source, ids in clicked.items():
            store.cache_items(source, [(i, [0.0] * dims[source]) for i in ids], "old-embedding")
        report = SyncReport()
        CloudClient(url, timeout=10)._refresh(active(service), store, report)
        fresh = store.stale_items(service.embedding_version)
    service.bucket_vectors = by_buckets
    return report, seen, fresh


@pytest.mark.parametrize("least", [MIN_BUCKET_ITEMS, 3])
def test_no_request_names_fewer_than_b_items_per_bucket(run, tmp_path, least):
    service = CloudService.load(*run, min_bucket_items=least)
    tables = {s: [str(i) for i in ids] for s, ids in zip(service.spec.source_names, service._ids)}
    clicked = {s: ids[:2] + ["gone-item"] for s, ids in tables.items()}
    report, seen, stale = refresh_through(service, tmp_path, clicked)
    assert seen["buckets"] and all(request for request in seen["buckets"])
    for request in seen["buckets"]:
        for source, numbers in request.items():
            for number in numbers:
                members = service.bucket_items(source, number)
                assert len(members) >= least or members == tables[source]
    assert report.refreshed == sum(len(ids) - 1 for ids in clicked.values())
    assert sorted(report.unknown) == sorted((s, "gone-item") for s in clicked)
    assert sorted(stale) == sorted((s, "gone-item") for s in clicked)
    assert "/v1/vectors" not in seen["paths"] and "/v1/vectors/buckets" in seen["paths"]  # no id ever sent
    count = service.info().vector_buckets
    for source, ids in clicked.items():
        if least == MIN_BUCKET_ITEMS and len(tables[source]) < least:
            assert count[source] == 1  # the whole table in one bucket
        asked = {b for request in seen["buckets"] for b in request.get(source, [])}
        assert {item_bucket(i, count[source]) for i in ids} == asked  # buckets, never ids


def test_buckets_hold_at_least_b_items_on_a_larger_table():
    from cloud.service.state import _anonymity_buckets

    ids = [f"item-{i}" for i in range(20000)]
    buckets = _anonymity_buckets(ids, 256)
    assert len(buckets) > 20 and min(len(b) for b in buckets) >= 256
    assert sorted(i for b in buckets for i in b) == sorted(ids)
    assert all(item_bucket(i, len(buckets)) == n for n, b in enumerate(buckets) for i in b)
    assert _anonymity_buckets(ids[:100], 256) == [ids[:100]]
