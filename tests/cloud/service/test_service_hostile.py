"""The service under hostile requests, over real HTTP to uvicorn on 127.0.0.1: each fuzz finding as a test,
then hypothesis-driven fuzzing of bodies, paths, queries and headers (derandomized, so every run sends the
same requests).

Every answer must be a 2xx/3xx or a clear 4xx whose JSON body is strict JSON (no NaN/Infinity) with a
`detail`; never a 500, never the served files changed. Run with -s to print the request counts:

    pytest tests/cloud/service/test_service_hostile.py -s -q
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.service import BundleFolder, CloudService, create_app
from tests.helpers.service import serve_in_thread, served_bundle, tiny_run

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
COUNTS: Counter = Counter()
CLEAR = {400, 404, 405, 413, 416, 422}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    run_dir, data_dir = tiny_run(root)
    service = CloudService.load(run_dir, data_dir, max_vector_ids=50)
    served_bundle(root / "bundles" / "b1", service.spec, created_at="2030-01-01T00:00:00+00:00")
    (root / "outside.txt").write_text("not served")
    before = folder_digest(root / "bundles")
    with serve_in_thread(create_app(service, BundleFolder(root / "bundles"), max_body_bytes=20_000)) as url:
        with httpx.Client(base_url=url, timeout=10) as client:
            yield client, root
            assert client.get("/health").json() == {"status": "ok"}  # still serving after everything
    assert folder_digest(root / "bundles") == before
    print(
        f"\nfuzz service requests: {COUNTS['cases']} requests, {COUNTS['answered']} answered 2xx/3xx, "
        f"{COUNTS['clear errors']} clear errors, {COUNTS['crashes']} crashes (500)"
    )


def folder_digest(folder) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode() + (path.read_bytes() if path.is_file() else b""))
    return h.hexdigest()


def strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"the answer holds {constant}, which is not JSON")

    return json.loads(text, parse_constant=refuse)


def check(response: httpx.Response) -> httpx.Response:
    """The answer is a success or a clear error: never a 500, errors are strict JSON with a detail."""
    COUNTS["cases"] += 1
    status = response.status_code
    if status >= 500:
        COUNTS["crashes"] += 1
        raise AssertionError(f"{response.request.method} {response.request.url}: {status} {response.text[:500]}")
    if status < 400:
        COUNTS["answered"] += 1
    else:
        assert status in CLEAR, (status, response.text[:500])
        COUNTS["clear errors"] += 1
    if response.headers.get("content-type", "").startswith("application/json") and response.request.method != "HEAD":
        body = strict_json(response.text)
        if status >= 400:
            detail = body["detail"]
            assert isinstance(detail, str) or all({"loc", "msg", "type"} <= set(d) for d in detail), detail
    return response


# --- the findings --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"ids": {"video": [NaN]}}',
        b'{"ids": {"video": [Infinity]}}',
        b'{"ids": {"video": ["v1"]}, "x": -Infinity}',
        b"NaN",
        b'{"ids": NaN}',
        b'{"ids": {"video": [1e999]}}',
    ],
)
def test_nan_and_infinity_bodies_are_a_422_that_does_not_echo_them(server, body):
    client, _ = server
    response = check(client.post("/v1/vectors", content=body, headers={"content-type": "application/json"}))
    assert response.status_code == 422
    problem = strict_json(response.text)["detail"][0]
    assert problem["loc"][0] == "body" and "NaN and Infinity are not JSON numbers" in problem["msg"]
    assert "NaN" not in response.text.replace("NaN and Infinity", "") and "Infinity," not in response.text
    assert "input" not in problem


def test_invalid_bodies_never_echo_the_input(server):
    client, _ = server
    for body, content_type in (
        (b"\xff\xfe{}", "application/json"),
        (b'{"ids": {"video": "' + b"x" * 500 + b'"}}', "application/json"),
        (b"ids=\xff", "text/plain"),
    ):
        response = check(client.post("/v1/vectors", content=body, headers={"content-type": content_type}))
        assert response.status_code in (400, 422) and "xxxxx" not in response.text


def test_lone_surrogate_ids_are_a_422_not_a_500(server):
    client, _ = server
    for body in (b'{"ids": {"video": ["\\ud800"]}}', b'{"ids": {"\\udfff": ["v1"]}}'):
        response = check(client.post("/v1/vectors", content=body, headers={"content-type": "application/json"}))
        assert response.status_code == 422 and "not Unicode text" in response.json()["detail"]


def test_head_on_a_bundle_file_gives_the_get_headers_without_a_body(server):
    client, root = server
    url = "/v1/bundles/b1/files/model.pte"
    got, head = client.get(url), check(client.head(url))
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(got.content) == (root / "bundles/b1/model.pte").stat().st_size
    for name in ("etag", "x-content-sha256", "content-type", "accept-ranges"):
        assert head.headers[name] == got.headers[name], name
    assert check(client.head(url, headers={"if-none-match": got.headers["etag"]})).status_code == 304
    assert check(client.head("/v1/bundles/b1/files/nope.bin")).status_code == 404
    assert check(client.head("/v1/bundles/zz/files/model.pte")).status_code == 404


# --- fuzzing ---------------------------------------------------------------------------------------------------

any_text = st.text(st.characters(), max_size=12)  # lone surrogates too: escaped, or sent as invalid UTF-8
numbers = st.one_of(st.integers(-(2**80), 2**80), st.floats(allow_nan=True, allow_infinity=True))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, any_text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)),
    max_leaves=12,
)
item_ids = st.one_of(st.sampled_from(["v1", "v2", "a1", "a4", "zz", "", " v1", "V1"]), any_text, numbers)
near_valid = st.fixed_dictionaries(
    {
        "ids": st.dictionaries(
            st.one_of(st.sampled_from(["video", "article"]), any_text), st.lists(item_ids, max_size=6), max_size=3
        )
    },
    optional={"extra": json_values, "clicks": st.lists(item_ids, max_size=3)},
)


@st.composite
def bodies(draw, values) -> tuple[bytes, str | None]:
    value = draw(values)
    raw = json.dumps(value, allow_nan=True, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    kind = draw(st.sampled_from(["as is", "as is", "cut", "junk", "pad"]))
    if kind == "cut":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif kind == "junk":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=6)) + raw[at:]
    elif kind == "pad":
        raw = b"[" * draw(st.integers(1, 5000)) + raw
    content_type = draw(
        st.sampled_from(
            [
                "application/json",
                "application/json",
                "application/json; charset=latin-1",
                "application/x+json",
                "text/plain",
                "multipart/form-data",
                None,
            ]
        )
    )
    return raw, content_type


def post_vectors(client: httpx.Client, body: tuple[bytes, str | None]) -> None:
    raw, content_type = body
    check(client.post("/v1/vectors", content=raw, headers={"content-type": content_type} if content_type else {}))


@settings(FUZZ, max_examples=250)
@given(body=bodies(near_valid))
def test_fuzzed_near_valid_vector_requests(server, body):
    post_vectors(server[0], body)


@settings(FUZZ, max_examples=250)
@given(body=bodies(json_values))
def test_fuzzed_arbitrary_json_bodies(server, body):
    post_vectors(server[0], body)


def encoded(segment: str) -> str:
    return quote(segment.encode("utf-8", "surrogatepass"), safe="")


segments = st.one_of(
    any_text.map(encoded),
    st.sampled_from(
        [
            "..",
            ".",
            "%2e%2e",
            "%2F",
            "b1",
            "u1",
            "u2",
            "model.pte",
            "manifest.json",
            "..%2foutside.txt",
            "%2fetc%2fpasswd",
            "..%2f..%2foutside.txt",
            "b1%2f..%2fb1",
            "%00",
            "%ff",
            "%ed%a0%80",
            "latest",
            "train",
            "0",
            "-1",
            "99999999999999999999",
        ]
    ),
)


@st.composite
def requests(draw, routes: str) -> tuple[str, str, dict]:
    a, b = draw(segments), draw(segments)
    headers = {}
    if routes == "bundles":
        path = draw(
            st.sampled_from(
                [
                    f"/v1/bundles/{a}",
                    f"/v1/bundles/{a}/files/{b}",
                    f"/v1/bundles/b1/files/{a}",
                    "/v1/bundles",
                    f"/v1/bundles/{a}/files",
                ]
            )
        )
        if draw(st.booleans()):
            headers["range"] = draw(
                st.sampled_from(
                    [
                        "bytes=0-10",
                        "bytes=10-",
                        "bytes=-5",
                        "bytes=99999-",
                        "bytes=5-1",
                        "bytes=a-b",
                        "items=0-1",
                        "bytes=0-1,3-4",
                    ]
                )
            )
        if draw(st.booleans()):
            headers["if-none-match"] = draw(st.sampled_from(["*", '"x"', "W/", "", ","]))
    else:
        query = draw(
            st.sampled_from(
                [
                    "",
                    "?n=1",
                    "?n=0",
                    "?n=nan",
                    "?n=1e400",
                    "?n=" + encoded(draw(any_text)),
                    "?offset=-1",
                    "?offset=99999999999999999999&limit=1001",
                    "?limit=abc",
                ]
            )
        )
        path = (
            draw(
                st.sampled_from(
                    [
                        f"/v1/users/{a}/slate",
                        f"/v1/lists/{a}/{b}",
                        "/v1/users",
                        f"/v1/{a}",
                        f"/{a}",
                        "/version",
                        "/health",
                    ]
                )
            )
            + query
        )
    return draw(st.sampled_from(["GET", "GET", "HEAD"])), path, headers


@settings(FUZZ, max_examples=250)
@given(request=requests("bundles"))
def test_fuzzed_bundle_requests(server, request):
    client, root = server
    method, path, headers = request
    response = check(client.request(method, path, headers=headers))
    if (
        "/files/" in response.request.url.path
        and response.status_code in (200, 206)
        and method == "GET"
        and not response.headers["content-type"].startswith("multipart/")
    ):
        served = {p.read_bytes() for p in (root / "bundles").rglob("*") if p.is_file()}
        assert any(response.content in data for data in served)  # only bytes of bundle files, never outside.txt


@settings(FUZZ, max_examples=250)
@given(request=requests("slates"))
def test_fuzzed_slate_and_list_requests(server, request):
    method, path, headers = request
    check(server[0].request(method, path, headers=headers))
