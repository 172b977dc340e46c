"""Compact vectors on the wire: base64 little-endian float32 by content negotiation, JSON numbers by default.

A real service on loopback answers a plain request (curl, older clients) with JSON numbers and the device
client's Accept with the compact form; both parse to the same float32 values.
"""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
from pydantic import ValidationError

from cloud.service import BundleFolder, CloudService, create_app
from device_runtime.client import CloudClient
from shared_schema import CandidateItem, CandidateSlate
from shared_schema.messages import COMPACT, COMPACT_MEDIA_TYPE, decode_vector, encode_vector
from shared_schema.service import ItemVectors
from tests.helpers.service import serve_in_thread, tiny_run


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    run_dir, data_dir = tiny_run(tmp_path_factory.mktemp("wire"))
    service = CloudService.load(run_dir, data_dir)
    (bundles := tmp_path_factory.mktemp("bundles"))
    with serve_in_thread(create_app(service, BundleFolder(bundles))) as base:
        yield base


def get(url: str, accept: str | None = None, body: bytes | None = None) -> tuple[str, bytes]:
    headers = {"Accept": accept} if accept else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=30) as response:
        return response.headers["content-type"], response.read()


def test_vectors_round_trip_exactly_as_float32():
    values = np.random.default_rng(0).standard_normal(40).astype(np.float32)
    text = encode_vector(values)
    assert decode_vector(text) == values.tolist()
    item = CandidateItem(item_id="v1", vector=values.tolist())
    assert CandidateItem.model_validate_json(item.model_dump_json(context=COMPACT)) == item
    with pytest.raises(ValidationError, match="base64 of little-endian float32"):
        CandidateItem(item_id="v1", vector="not base64!")
    with pytest.raises(ValidationError, match="not whole float32 values"):
        CandidateItem(item_id="v1", vector="AAAA")  # 3 bytes


def test_slates_and_vectors_both_ways_on_a_real_server(url):
    user = CloudClient(url).users(limit=1)[0]
    plain_type, plain = get(f"{url}/v1/users/{user}/slate")
    compact_type, compact = get(f"{url}/v1/users/{user}/slate", COMPACT_MEDIA_TYPE)
    assert plain_type == "application/json" and compact_type == COMPACT_MEDIA_TYPE
    raw_plain, raw_compact = json.loads(plain), json.loads(compact)
    assert isinstance(raw_plain["sources"][0]["items"][0]["vector"], list)
    assert isinstance(raw_compact["sources"][0]["items"][0]["vector"], str)
    a, b = CandidateSlate.model_validate_json(plain), CandidateSlate.model_validate_json(compact)
    for sa, sb in zip(a.sources, b.sources):
        assert [(i.item_id, i.vector) for i in sa.items] == [(i.item_id, i.vector) for i in sb.items]
    assert len(compact) < len(plain)

    fetched = CloudClient(url).fetch_slate(user)  # the device client asks for the compact form
    assert [[i.vector for i in s.items] for s in fetched.sources] == [[i.vector for i in s.items] for s in a.sources]

    ids = {a.sources[0].source: [a.sources[0].items[0].item_id, "nope"]}
    body = json.dumps({"ids": ids}).encode()
    _, plain = get(f"{url}/v1/vectors", body=body)
    kind, compact = get(f"{url}/v1/vectors", COMPACT_MEDIA_TYPE, body)
    assert kind == COMPACT_MEDIA_TYPE
    assert ItemVectors.model_validate_json(plain) == ItemVectors.model_validate_json(compact)
    assert CloudClient(url).fetch_vectors(ids) == ItemVectors.model_validate_json(plain)
