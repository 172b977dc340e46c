"""Slate bodies joined from per-item pieces (`SlateBodies`) are the bytes pydantic writes for the same slate.

A real service on loopback answers GET /v1/users/{user}/slate in each vector form; each body must equal
`CandidateSlate.model_dump_json()` of the slate built the plain way (the ranker's picks, the vectors the
service returns for those ids), byte for byte. Items are checked once, at start-up.
"""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

from cloud.service import CloudService
from cloud.service.slates import SlateBodies
from shared_schema import CandidateItem, CandidateSlate, SourceCandidates
from shared_schema.messages import COMPACT_FLOAT16, media_type, wire_context


def plain_slate(service: CloudService, user: str, n: int, request_id: str) -> CandidateSlate:
    """The slate as models: the ranker's picks per source with the vectors POST /v1/vectors serves."""
    sources = []
    for name, (rows, scores) in zip(service.spec.source_names, service.ranker.candidates(service.users.index(user), n)):
        ids = [str(service.data.items(name).ids[row]) for row in rows]
        vectors = {i.item_id: i.vector for i in service.vectors({name: ids}).sources[0].items}
        items = [CandidateItem(item_id=i, vector=vectors[i], upstream_score=float(s)) for i, s in zip(ids, scores)]
        sources.append(SourceCandidates(source=name, items=items))
    return CandidateSlate(
        user_id=user, request_id=request_id, embedding_version=service.embedding_version, sources=sources
    )


@pytest.mark.parametrize("form", ["json", "float32", "float16"])
def test_served_slates_are_what_pydantic_writes(served, form):
    service, url = served
    for user in service.users:
        for n in (1, service.spec.n):
            request = urllib.request.Request(f"{url}/v1/users/{user}/slate?n={n}", headers={"Accept": media_type(form)})
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
                assert response.headers["content-type"] == media_type(form)
            slate = plain_slate(service, user, n, json.loads(body)["request_id"])
            assert sum(len(s.items) for s in slate.sources) > 0
            assert body == slate.model_dump_json(context=wire_context(form)).encode()


def test_bodies_with_odd_ids_scores_and_an_empty_source():
    ids = [['v"1', "vidéo/2", "v\\3"], ["a1"]]
    vectors = [np.array([[1e-7, -2.5], [0.1, 3.0], [1 / 3, 1e4]], np.float32), np.array([[7.0]], np.float32)]
    bodies = SlateBodies(["video", "article"], ids, vectors, embedding_version="e\u00e9")
    picked = [(np.array([2, 0]), np.array([0.1 + 0.2, 1e-9])), (np.array([], np.int64), np.array([]))]
    expected = CandidateSlate(
        user_id='ü"ser',
        request_id="r1",
        embedding_version="e\u00e9",
        sources=[
            SourceCandidates(
                source="video",
                items=[
                    CandidateItem(item_id="v\\3", vector=vectors[0][2].tolist(), upstream_score=0.1 + 0.2),
                    CandidateItem(item_id='v"1', vector=vectors[0][0].tolist(), upstream_score=1e-9),
                ],
            ),
            SourceCandidates(source="article", items=[]),
        ],
    )
    assert bodies.forms == ("json", "float32", "float16")
    for form in bodies.forms:
        body = bodies.slate('ü"ser', "r1", picked, form)
        assert body == expected.model_dump_json(context=wire_context(form)).encode()
        parsed = CandidateSlate.model_validate_json(body, context=wire_context(form))
        if form == "float16":  # each value the nearest float16
            rounded = [[np.float16(x).item() for x in item.vector] for item in expected.sources[0].items]
            assert [item.vector for item in parsed.sources[0].items] == rounded
            assert rounded != [item.vector for item in expected.sources[0].items]
        else:
            assert parsed == expected


def test_float16_is_left_out_when_a_vector_exceeds_it():
    vectors = [np.array([[1.0, 7e4]], np.float32)]  # float16 ends at 65504
    bodies = SlateBodies(["video"], [["v1"]], vectors, embedding_version="e")
    assert bodies.forms == ("json", "float32")
    with pytest.raises(ValueError, match="beyond float16's range"):
        CandidateItem(item_id="v1", vector=vectors[0][0].tolist()).model_dump_json(context=COMPACT_FLOAT16)


def test_items_are_checked_once_at_start_up():
    with pytest.raises(ValueError, match=r"item 'v2' of source 'video' cannot go in a slate \(vector: .*NaN"):
        SlateBodies(["video"], [["v1", "v2"]], [np.array([[1.0], [np.nan]], np.float32)], embedding_version="e")
    with pytest.raises(ValueError, match="item_id: String should have at most 256 characters"):
        SlateBodies(["video"], [["v" * 300]], [np.array([[1.0]], np.float32)], embedding_version="e")
    bodies = SlateBodies(["video"], [["v1"]], [np.array([[1.0]], np.float32)], embedding_version="e")
    with pytest.raises(ValueError, match="user_id holds 1..256"):
        bodies.slate("u" * 257, "r", [(np.array([0]), np.array([0.5]))], form="json")
