"""The cloud service app through FastAPI's TestClient: slates, upstream ranker, vectors, bundles, errors.

The data is conftest's tiny logs (2 users, sources video/article, n=3), prepared, with a small DIR
trained for one epoch; the train split is lists L1-L6. Expected upstream scores are worked out by hand
from those logs in the tests below.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cloud.service import BundleFolder, CloudService, create_app
from cloud.service.slates import encode_items, slate_for_list
from shared_schema import CandidateSlate
from shared_schema.manifest import MANIFEST_NAME
from shared_schema.service import BundleList, ItemVectors
from tests.helpers.service import served_bundle, tiny_run

OLD, NEW = "2030-01-01T00:00:00+00:00", "2030-06-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> CloudService:
    run_dir, data_dir = tiny_run(tmp_path_factory.mktemp("service"))
    return CloudService.load(run_dir, data_dir, max_vector_ids=5)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, service) -> BundleFolder:
    """b-old and b-new (newer created_at), a newer corrupt one, one without manifest and a hidden folder."""
    root = tmp_path_factory.mktemp("bundles")
    served_bundle(root / "b-old", service.spec, created_at=OLD, model_version="old")
    served_bundle(root / "b-new", service.spec, created_at=NEW, model_version="new")
    broken = served_bundle(root / "b-broken", service.spec, created_at="2031-01-01T00:00:00+00:00")
    data = bytearray((broken / "model.tflite").read_bytes())
    data[100] ^= 0xFF
    (broken / "model.tflite").write_bytes(bytes(data))
    (root / "b-empty").mkdir()
    served_bundle(root / ".b-next.tmp-1234", service.spec, created_at="2032-01-01T00:00:00+00:00")
    return BundleFolder(root)


@pytest.fixture(scope="module")
def client(service, bundles) -> TestClient:
    return TestClient(create_app(service, bundles, max_body_bytes=2000))


def _timings(response) -> dict[str, float]:
    entries = [e.strip().split(";dur=") for e in response.headers["server-timing"].split(",")]
    return {name: float(ms) for name, ms in entries}


def test_health_version_and_openapi(client, service):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/version").json()
    assert info["embedding_version"] == service.run.embedding_version
    assert info["model_name"] == "dir" and info["sources"] == ["video", "article"] and info["schema_version"] == 1
    assert info["vector_dims"] == service.model.item_encoder.vector_dims() and info["max_vector_ids"] == 5
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/health",
        "/version",
        "/v1/users",
        "/v1/users/{user_id}/slate",
        "/v1/lists/{split}/{row}",
        "/v1/vectors",
        "/v1/bundles",
        "/v1/bundles/{version}",
        "/v1/bundles/{version}/files/{name}",
    } <= set(paths)
    assert "swagger" in client.get("/docs").text.lower()


def test_no_endpoint_accepts_behaviour(client):
    spec = client.get("/openapi.json").json()
    with_body = [
        (method, path)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if method in ("post", "put", "patch") or "requestBody" in op
    ]
    assert with_body == [("post", "/v1/vectors"), ("post", "/v1/vectors/buckets")]
    assert set(spec["components"]["schemas"]["VectorRequest"]["properties"]) == {"ids"}
    assert set(spec["components"]["schemas"]["BucketRequest"]["properties"]) == {"buckets"}


def test_user_slate_follows_popularity_and_affinity_without_clicked_items(client, service):
    # Train clicks: video v1, v2, v3 once each; article a3 twice, a4 once. Popularity = log1p(c)/log1p(max).
    # u1 clicked v1, v2, v4, a1, a2, a3 (any split), liked genres {drama, comedy}, topics {sport}.
    # u2 clicked v3, v4, v5, a2, a3, a4, liked genres {drama}, topics {tech, sport, politics}.
    expected = {
        "u1": {"video": [("v3", 0.5 + 0.5 * 0.5), ("v5", 0.0)], "article": [("a4", 0.5 * math.log(2) / math.log(3))]},
        "u2": {"video": [("v1", 0.5 + 0.5), ("v2", 0.5)], "article": [("a1", 0.5 / 3)]},
    }
    for user, want in expected.items():
        response = client.get(f"/v1/users/{user}/slate")
        assert response.status_code == 200, response.text
        slate = CandidateSlate.model_validate(response.json())
        assert slate.user_id == user and slate.embedding_version == service.embedding_version
        got = {s.source: [(i.item_id, i.upstream_score) for i in s.items] for s in slate.sources}
        for source, items in want.items():
            assert [i for i, _ in got[source]] == [i for i, _ in items], (user, source)
            assert np.allclose([s for _, s in got[source]], [s for _, s in items]), (user, source)
        ids = service.data.items("video").ids
        rows = np.array([list(ids).index(i.item_id) for i in slate.sources[0].items])
        assert np.allclose(
            [i.vector for i in slate.sources[0].items], encode_items(service.model, service.data, "video", rows)
        )
        assert {"upstream", "encode", "app"} <= set(_timings(response))
    assert client.get("/v1/users/u1/slate?n=1").json()["sources"][0]["items"][0]["item_id"] == "v3"
    assert service.data.items("video") is service.data.items("video")  # opened once, not per request


def test_bad_slate_requests_are_clear_4xx(client):
    unknown = client.get("/v1/users/nobody/slate")
    assert unknown.status_code == 404
    assert "'nobody'" in unknown.json()["detail"] and "GET /v1/users" in unknown.json()["detail"]
    assert client.get("/v1/users").json() == {"total": 2, "offset": 0, "users": ["u1", "u2"]}
    for bad in ("n=0", "n=4", "n=abc"):
        response = client.get(f"/v1/users/u1/slate?{bad}")
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "n"], bad


def test_list_slate_replays_a_prepared_list(client, service):
    body = client.get("/v1/lists/test/1").json()
    slate, history = slate_for_list(service.model, service.data, "test", 1, service.embedding_version)
    assert CandidateSlate.model_validate(body["slate"]) == slate
    assert [e["item_id"] for e in body["history"]] == [e.item_id for e in history] and history
    outside = client.get("/v1/lists/test/2")
    assert outside.status_code == 404 and "outside split 'test'" in outside.json()["detail"]
    assert client.get("/v1/lists/nope/0").status_code == 422
    assert client.get("/v1/lists/test/-1").status_code == 422


def test_vectors_known_unknown_and_limits(client, service):
    response = client.post("/v1/vectors", json={"ids": {"article": ["a2", "zz", "a2"], "video": ["v5"]}})
    answer = ItemVectors.model_validate(response.json())
    assert answer.embedding_version == service.embedding_version and answer.unknown == {"article": ["zz"]}
    got = {s.source: s.items for s in answer.sources}
    assert [i.item_id for i in got["article"]] == ["a2"] and [i.item_id for i in got["video"]] == ["v5"]
    a2 = list(service.data.items("article").ids).index("a2")
    assert np.allclose(got["article"][0].vector, encode_items(service.model, service.data, "article", [a2])[0])

    wrong_source = client.post("/v1/vectors", json={"ids": {"podcast": ["p1"]}})
    assert wrong_source.status_code == 422 and "['video', 'article']" in wrong_source.json()["detail"]
    malformed = client.post("/v1/vectors", content=b'{"ids": {"video": [', headers={"content-type": "application/json"})
    assert malformed.status_code == 422 and malformed.json()["detail"][0]["type"] == "json_invalid"
    for bad in ({}, {"ids": {"video": "v1"}}, {"ids": {"video": [1]}}, {"ids": {}, "clicks": ["v1"]}):
        assert client.post("/v1/vectors", json=bad).status_code == 422, bad

    too_many = client.post("/v1/vectors", json={"ids": {"video": ["v1", "v2", "v3"], "article": ["a1", "a2", "a3"]}})
    assert too_many.status_code == 413 and "at most 5" in too_many.json()["detail"]
    big = client.post("/v1/vectors", json={"ids": {"video": ["v" * 3000]}})
    assert big.status_code == 413 and "limit of 2000 bytes" in big.json()["detail"]
    streamed = client.post(
        "/v1/vectors",
        content=iter([b'{"ids": {"video": ["', b"v" * 1500, b"v" * 1500, b'"]}}']),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413 and "limit of 2000 bytes" in streamed.json()["detail"]
    small_streamed = client.post(
        "/v1/vectors", content=iter([b'{"ids": {"video": ', b'["v1"]}}']), headers={"content-type": "application/json"}
    )
    assert small_streamed.status_code == 200 and small_streamed.json()["sources"][0]["items"][0]["item_id"] == "v1"


def test_bundle_listing_newest_first_without_broken_or_hidden(client):
    listing = BundleList.model_validate(client.get("/v1/bundles").json())
    assert [b.version for b in listing.bundles] == ["b-new", "b-old"] and listing.latest == "b-new"
    assert client.get("/v1/bundles/latest").json()["model_version"] == "new"
    missing = client.get("/v1/bundles/b-nope")
    assert missing.status_code == 404
    assert "'b-nope'" in missing.json()["detail"] and "['b-new', 'b-old']" in missing.json()["detail"]
    assert client.get("/v1/bundles/b-broken").status_code == 404
    assert client.get("/v1/bundles/b-empty").status_code == 404


def test_bundle_file_sha256_etag_and_range(client, bundles):
    entry = client.get("/v1/bundles/b-old").json()
    assert entry["files"][0]["path"] == MANIFEST_NAME
    for item in entry["files"]:
        data = (bundles.root / "b-old" / item["path"]).read_bytes()
        response = client.get(item["url"])
        assert response.status_code == 200 and response.content == data
        assert response.headers["x-content-sha256"] == item["sha256"] == hashlib.sha256(data).hexdigest()
        assert response.headers["etag"] == f'"{item["sha256"]}"'
        assert int(response.headers["content-length"]) == len(data)
    assert entry["manifest_sha256"] == entry["files"][0]["sha256"]
    model = entry["files"][1]
    data = (bundles.root / "b-old" / model["path"]).read_bytes()
    etag = f'"{model["sha256"]}"'
    assert client.get(model["url"], headers={"If-None-Match": etag}).status_code == 304
    assert client.get(model["url"], headers={"If-None-Match": '"other"'}).status_code == 200
    part = client.get(model["url"], headers={"Range": "bytes=100-", "If-Range": etag})
    assert part.status_code == 206 and part.content == data[100:]
    assert part.headers["content-range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    stale = client.get(model["url"], headers={"Range": "bytes=100-", "If-Range": '"older"'})
    assert stale.status_code == 200 and stale.content == data
    missing = client.get("/v1/bundles/b-old/files/model.bin")
    assert missing.status_code == 404 and MANIFEST_NAME in missing.json()["detail"]
    assert client.get("/v1/bundles/b-old/files/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_unexpected_error_is_a_500_json_without_traceback(service, bundles, monkeypatch):
    def explode(user, n):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service.ranker, "candidates", explode)
    response = TestClient(create_app(service, bundles), raise_server_exceptions=False).get("/v1/users/u1/slate")
    assert response.status_code == 500
    detail = response.json()["detail"]
    assert "error id" in detail and "secret" not in response.text and "Traceback" not in response.text
