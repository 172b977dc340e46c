"""Compact vectors on the wire: base64 little-endian float32 or float16 by content negotiation, JSON numbers
by default.

A real service on loopback answers a plain request (curl, older clients) with JSON numbers and the device
client's Accept with the compact form; JSON and float32 parse to the same float32 values, float16 to the
nearest float16 of each. The device client asks for float16 only when its bundle's measured effect allows.
"""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
from pydantic import ValidationError

from cloud.service import BundleFolder, CloudService, create_app
from device_runtime.bundle import read_manifest
from device_runtime.client import ACCEPT_VECTORS, CloudClient
from shared_schema import CandidateItem, CandidateSlate
from shared_schema.manifest import FLOAT16_METRIC
from shared_schema.messages import (
    COMPACT,
    COMPACT_FLOAT16,
    COMPACT_MEDIA_TYPE,
    decode_vector,
    encode_vector,
    media_type,
    wire_context,
    wire_form,
)
from shared_schema.service import ItemVectors
from tests.helpers.service import serve_in_thread, served_bundle, tiny_run


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run_dir, data_dir = tiny_run(tmp_path_factory.mktemp("wire"))
    service = CloudService.load(run_dir, data_dir)
    (bundles := tmp_path_factory.mktemp("bundles"))
    with serve_in_thread(create_app(service, BundleFolder(bundles))) as base:
        yield service, base


@pytest.fixture(scope="module")
def url(served):
    return served[1]


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


def test_float16_vectors_round_to_the_nearest_float16():
    values = np.random.default_rng(1).standard_normal(40).astype(np.float32)
    text = encode_vector(values, "float16")
    assert len(text) < len(encode_vector(values)) * 0.55  # half the bytes
    assert decode_vector(text, "float16") == values.astype(np.float16).astype(np.float32).tolist()
    item = CandidateItem(item_id="v1", vector=values.tolist())
    parsed = CandidateItem.model_validate_json(item.model_dump_json(context=COMPACT_FLOAT16), context=COMPACT_FLOAT16)
    assert np.abs(np.array(parsed.vector) - values).max() <= np.abs(values).max() * 2**-11
    with pytest.raises(ValidationError, match="not whole float16 values"):
        CandidateItem.model_validate({"item_id": "v1", "vector": "AAAA"}, context=COMPACT_FLOAT16)  # 3 bytes
    with pytest.raises(ValidationError, match="NaN or infinite"):  # float16 inf: 0x7c00
        CandidateItem.model_validate({"item_id": "v1", "vector": "AHw="}, context=COMPACT_FLOAT16)
    assert [wire_form(media_type(f)) for f in ("json", "float32", "float16")] == ["json", "float32", "float16"]
    with pytest.raises(ValueError, match="vectors=bfloat16 is not one of"):
        wire_form(f"{COMPACT_MEDIA_TYPE}; vectors=bfloat16")


@pytest.mark.parametrize(
    ("accept", "form"),
    [
        (None, "json"),
        ("*/*", "json"),
        ("text/html", "json"),
        (COMPACT_MEDIA_TYPE, "float32"),
        (f"{COMPACT_MEDIA_TYPE}; vectors=float16", "float16"),
        (f"{COMPACT_MEDIA_TYPE};q=0.5, application/json", "json"),
        (f"{COMPACT_MEDIA_TYPE}; vectors=float16; q=0.2, {COMPACT_MEDIA_TYPE}", "float32"),
        (f"{COMPACT_MEDIA_TYPE}; vectors=bfloat16", "json"),
        (f"{COMPACT_MEDIA_TYPE}; q=0, application/json", "json"),
        (ACCEPT_VECTORS["float16"], "float16"),
        (ACCEPT_VECTORS["float32"], "float32"),
    ],
)
def test_the_accept_header_picks_the_form(url, accept, form):
    user = CloudClient(url).users(limit=1)[0]
    kind, body = get(f"{url}/v1/users/{user}/slate", accept)
    assert kind == media_type(form)
    reference = CandidateSlate.model_validate_json(get(f"{url}/v1/users/{user}/slate")[1])
    slate = CandidateSlate.model_validate_json(body, context=wire_context(form))
    vectors = [np.array(i.vector) for s in slate.sources for i in s.items]
    expected = [np.array(i.vector, np.float32) for s in reference.sources for i in s.items]
    if form == "float16":
        expected = [v.astype(np.float16).astype(np.float32) for v in expected]
    assert all(np.array_equal(a, b) for a, b in zip(vectors, expected, strict=True))


def test_the_client_asks_for_float16_when_the_bundle_allows_it(served, tmp_path):
    service, url = served
    client = CloudClient(url)
    user = client.users(limit=1)[0]
    plain = client.fetch_slate(user)
    manifest = read_manifest(served_bundle(tmp_path / "b", service.spec, "2026-01-01T00:00:00+00:00"))
    assert client.vectors == "float32"
    client.use_bundle(manifest)  # no float16 measure: float32
    assert client.vectors == "float32"
    client.use_bundle(manifest.model_copy(update={"metrics": {FLOAT16_METRIC: 5e-4}}))
    assert client.vectors == "float16"
    halved = client.fetch_slate(user)
    for a, b in zip(plain.sources, halved.sources, strict=True):
        for x, y in zip(a.items, b.items, strict=True):
            assert np.array_equal(np.array(x.vector, np.float32).astype(np.float16), np.array(y.vector, np.float16))
    ids = {plain.sources[0].source: [plain.sources[0].items[0].item_id]}
    assert client.fetch_vectors(ids).sources[0].items[0].vector == halved.sources[0].items[0].vector
    client.use_bundle(manifest.model_copy(update={"metrics": {FLOAT16_METRIC: 5e-2}}))  # beyond its tolerance
    assert client.vectors == "float32"
    strict = CloudClient(url, float16_tolerance=None)
    strict.use_bundle(manifest.model_copy(update={"metrics": {FLOAT16_METRIC: 0.0}}))
    assert strict.vectors == "float32" and strict.fetch_slate(user).sources[0].items == plain.sources[0].items
