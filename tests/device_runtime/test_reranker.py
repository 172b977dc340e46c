"""The Reranker facade end to end: real bundle, real TFLite/ExecuTorch, real SQLite history."""

from __future__ import annotations

import numpy as np
import pytest

from device_runtime.backends import load_backend
from device_runtime.bundle import BundleRegistry
from device_runtime.merge import quota_slots
from device_runtime.reranker import Reranker
from shared_schema import SCHEMA_VERSION, BehaviorEvent, CandidateItem, CandidateSlate, SourceCandidates
from tests.helpers.device import make_slate, read_manifest

STAGES = {"validate_cache", "history_read", "assembly", "inference", "merge", "record_exposures", "total"}


@pytest.fixture
def reranker(device_bundle, tmp_path):
    with Reranker.open(device_bundle, tmp_path / "history.db", backend="tflite", delegate="cpu", merge="score") as r:
        yield r


def test_a_merge_bundle_is_merged_by_the_controller_unless_told(device_bundle, tmp_path):
    with Reranker.open(device_bundle, tmp_path / "history.db", backend="tflite", delegate="cpu") as reranker:
        manifest = reranker.manifest
        assert reranker.merge == "controller"
        result = reranker.rerank(make_slate(manifest, counts=[manifest.n] * len(manifest.source_names)))
        assert result.merge == "controller"
        shown = reranker.store.exposure_counts(manifest.source_names)
        assert list(shown) == quota_slots(manifest.K, manifest.target_shares).tolist()  # no debt yet: the quota


def _clicks(manifest, source_index: int, count: int, seed: int = 1, t0: float = 1000.0) -> list[BehaviorEvent]:
    rng = np.random.default_rng(seed)
    name, dim = manifest.source_names[source_index], manifest.vector_dims[source_index]
    return [
        BehaviorEvent(
            item_id=f"h{name}{i}", source=name, action="click", ts=t0 + i, vector=rng.standard_normal(dim).tolist()
        )
        for i in range(count)
    ]


def test_rerank_returns_every_candidate_once_with_stage_timings(reranker):
    manifest = reranker.manifest
    slate = make_slate(manifest, counts=[manifest.n, 4])
    result = reranker.rerank(slate)
    ids = [item.item_id for item in result.items]
    assert sorted(ids) == sorted(i.item_id for s in slate.sources for i in s.items)
    assert (result.backend, result.delegate, result.merge) == ("tflite", "cpu", "score")
    assert result.bundle_version == manifest.model_version and result.request_id == slate.request_id
    assert set(result.timings_ms) == STAGES and all(v >= 0 for v in result.timings_ms.values())
    assert result.timings_ms["total"] >= result.timings_ms["inference"]
    top = result.items[: manifest.K]
    assert [r.score for r in top] == sorted((r.score for r in result.items), reverse=True)[: manifest.K]
    assert result.items[0].title is not None
    shown = reranker.store.exposure_counts(manifest.source_names)
    assert shown.sum() == manifest.K
    assert list(shown) == [sum(r.source == s for r in top) for s in manifest.source_names]


def test_scores_are_the_model_on_the_slate_and_the_newest_stored_clicks(reranker, device_bundle):
    manifest = reranker.manifest
    slate = make_slate(manifest, seed=3, counts=[6, manifest.n])
    cold = {r.item_id: r.score for r in reranker.rerank(slate).items}
    events = _clicks(manifest, 0, manifest.t + 5)  # more than t: only the newest t count
    for event in events:
        reranker.record(event)
    warm = {r.item_id: r.score for r in reranker.rerank(slate).items}
    assert cold != warm  # fresh on-device behaviour changes the ranking scores

    newest_first = [e.vector for e in sorted(events, key=lambda e: -e.ts)][: manifest.t]
    cands = [np.array([i.vector for i in s.items]) for s in slate.sources]
    hists = [np.array(newest_first), np.zeros((0, manifest.vector_dims[1]))]
    other = load_backend(device_bundle, manifest, "executorch", "portable")
    expected = other.run(manifest.layout().assemble(cands, hists))[0]
    for s, source in enumerate(slate.sources):
        for i, item in enumerate(source.items):
            assert warm[item.item_id] == pytest.approx(float(expected[s, i]), abs=1e-4)


def test_quota_merge_gives_each_source_its_share_of_the_top_k(device_bundle, tmp_path):
    manifest = read_manifest(device_bundle)
    with Reranker.open(device_bundle, tmp_path / "h.db", merge="quota") as reranker:
        result = reranker.rerank(make_slate(manifest, seed=5))
    top = result.items[: manifest.K]
    want = quota_slots(manifest.K, manifest.target_shares)
    assert [sum(r.source == s for r in top) for s in manifest.source_names] == list(want)


def test_controller_steers_cumulative_exposure_toward_the_target(device_bundle, tmp_path):
    manifest = read_manifest(device_bundle)
    with Reranker.open(device_bundle, tmp_path / "h.db", merge="controller") as reranker:
        for page in range(12):
            reranker.rerank(make_slate(manifest, seed=page, prefix=f"p{page}-"))
        shown = reranker.store.exposure_counts(manifest.source_names)
    assert shown.sum() == 12 * manifest.K
    shares = shown / shown.sum()
    assert np.abs(shares - np.array(manifest.target_shares)).max() < 0.05


def test_open_from_a_registry_serves_the_active_bundle(device_bundle, tmp_path):
    registry = BundleRegistry(tmp_path / "root")
    with pytest.raises(FileNotFoundError, match="dir-device install BUNDLE"):
        Reranker.open(registry.root, tmp_path / "h.db")
    installed = registry.install(device_bundle)
    with Reranker.open(registry.root, tmp_path / "h.db") as reranker:
        result = reranker.rerank(make_slate(installed.manifest))
        info = reranker.info()
    assert result.bundle_version == installed.version
    assert info["bundle"]["version"] == installed.version and info["bundle"]["path"] == str(installed.path)
    assert info["attempts"][-1]["result"] == "ok"
    assert (info["backend"], info["delegate"]) == (result.backend, result.delegate)
    assert info["store"]["rows"]["exposures"] == installed.manifest.K
    assert (info["merge"], info["decoder"], info["decoder_options"]) == ("controller", "merge", {})  # default_merge


def _with(slate: CandidateSlate, **changes) -> CandidateSlate:
    return slate.model_copy(update=changes)


def _bad_slates(manifest):
    good = make_slate(manifest)
    video, article = good.sources
    d0 = manifest.vector_dims[0]
    too_many = [CandidateItem(item_id=f"x{i}", vector=[0.0] * d0) for i in range(manifest.n + 1)]
    nan_item = CandidateItem.model_construct(item_id="nan", vector=[float("nan")] * d0)
    return [
        (_with(good, schema_version=SCHEMA_VERSION + 1), "slate.schema_version"),
        (_with(good, embedding_version="old"), "slate.embedding_version 'old' differs"),
        (_with(good, sources=[video, SourceCandidates(source="ads", items=[])]), r"slate.sources\[1\].source 'ads'"),
        (_with(good, sources=[video, video]), r"slate.sources\[1\].source 'video' appears twice"),
        (_with(good, sources=[SourceCandidates(source=video.source, items=too_many)]), "at most n="),
        (_with(good, sources=[SourceCandidates(source=video.source, items=[video.items[0]] * 2)]), "item ids repeat"),
        (
            _with(good, sources=[article, SourceCandidates(source=video.source, items=[article.items[0]])]),
            r"slate.sources\[1\].items\[0\].vector: .* values, source 'video' takes",
        ),
        (
            _with(good, sources=[SourceCandidates(source=video.source, items=[nan_item])]),
            r"items\[0\].vector holds NaN",
        ),
        (_with(good, sources=[SourceCandidates(source=video.source, items=[])]), "slate.sources: no candidate items"),
        (_with(good, sources=[]), "slate.sources: no candidate items"),
    ]


def test_bad_slates_are_refused_naming_the_field_and_nothing_is_stored(device_bundle, tmp_path):
    manifest = read_manifest(device_bundle)
    with Reranker.open(device_bundle, tmp_path / "h.db", backend="tflite", delegate="cpu") as reranker:
        before = reranker.store.stats()["rows"]
        for slate, message in _bad_slates(manifest):
            with pytest.raises(ValueError, match=message):
                reranker.rerank(slate)
        assert reranker.store.stats()["rows"] == before
        assert len(reranker.rerank(make_slate(manifest)).items) == manifest.n * len(manifest.sources)


def test_record_checks_the_event_against_the_bundle(reranker):
    manifest = reranker.manifest
    with pytest.raises(ValueError, match=r"event\.source: unknown source 'ads'; the sources are"):
        reranker.record(BehaviorEvent(item_id="a", source="ads", action="click", ts=1.0))
    with pytest.raises(ValueError, match=r"event.vector: 2 values, source 'video' takes"):
        reranker.record(BehaviorEvent(item_id="a", source="video", action="click", ts=1.0, vector=[1.0, 2.0]))
    reranker.record(_clicks(manifest, 1, 1)[0])
    assert reranker.store.stats()["behaviors"] == {manifest.source_names[1]: {"impression": 0, "click": 1}}


def test_clicks_on_slate_items_use_the_cached_vectors(reranker):
    manifest = reranker.manifest
    slate = make_slate(manifest, seed=9)
    reranker.rerank(slate)  # caches the slate's item vectors
    item = slate.sources[1].items[2]
    reranker.record(BehaviorEvent(item_id=item.item_id, source=manifest.source_names[1], action="click", ts=5.0))
    ((_, vector),) = reranker.store.last_clicks(manifest.source_names, manifest.t)[1]
    np.testing.assert_array_equal(vector, np.asarray(item.vector, np.float32))


def test_open_rejects_an_unknown_merge_mode(device_bundle, tmp_path):
    with pytest.raises(ValueError, match="merge 'fair'"):
        Reranker.open(device_bundle, tmp_path / "h.db", merge="fair")
