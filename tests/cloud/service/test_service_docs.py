"""The service's API docs: every error a route answers is declared with its body schema, every model has
field descriptions and an example, and /docs and /redoc render the endpoints in headless Chromium with
every request kept on loopback (a dead proxy for everything else), i.e. without a CDN.
"""

from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient

from cloud.service import BundleFolder, CloudService, create_app
from cloud.service.docs import ERRORS
from tests.helpers.browser import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS, wait_for
from tests.helpers.service import serve_in_thread, served_bundle, tiny_run

REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"  # ReDoc's footer logo; it hides the image when offline
ROUTES = {
    "/health": "get",
    "/version": "get",
    "/v1/users": "get",
    "/v1/users/{user_id}/slate": "get",
    "/v1/lists/{split}/{row}": "get",
    "/v1/vectors": "post",
    "/v1/bundles": "get",
    "/v1/bundles/{version}": "get",
    "/v1/bundles/{version}/files/{name}": "get",
}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    run_dir, data_dir = tiny_run(root)
    service = CloudService.load(run_dir, data_dir, max_vector_ids=5)
    served_bundle(root / "bundles" / "b1", service.spec, created_at="2030-01-01T00:00:00+00:00")
    return create_app(service, BundleFolder(root / "bundles"), max_body_bytes=2000)


def _provoked(client: TestClient) -> list[tuple[str, object]]:
    """(route, response) for every 4xx the routes can answer, provoked for real."""
    big = {"ids": {"video": ["v" * 3000]}}
    return [
        ("/v1/users", client.get("/v1/users?limit=0")),
        ("/v1/users/{user_id}/slate", client.get("/v1/users/nobody/slate")),
        ("/v1/users/{user_id}/slate", client.get("/v1/users/u1/slate?n=99")),
        ("/v1/lists/{split}/{row}", client.get("/v1/lists/test/99")),
        ("/v1/lists/{split}/{row}", client.get("/v1/lists/nope/0")),
        ("/v1/vectors", client.post("/v1/vectors", json={"ids": {"video": ["v1", "v2", "v3", "v4", "v5", "v6"]}})),
        ("/v1/vectors", client.post("/v1/vectors", json=big)),
        ("/v1/vectors", client.post("/v1/vectors", json={"ids": {"podcast": ["p1"]}})),
        ("/v1/vectors", client.post("/v1/vectors", json={"ids": {"video": "v1"}})),
        ("/v1/bundles/{version}", client.get("/v1/bundles/b-nope")),
        ("/v1/bundles/{version}/files/{name}", client.get("/v1/bundles/b1/files/nope.bin")),
        (
            "/v1/bundles/{version}/files/{name}",
            client.get("/v1/bundles/b1/files/model.tflite", headers={"Range": "bytes=999999-"}),
        ),
    ]


def test_openapi_declares_exactly_the_4xx_each_route_answers_with_its_body(app):
    client = TestClient(app)
    spec = client.get("/openapi.json").json()
    declared = {
        path: {int(code) for code in spec["paths"][path][method]["responses"] if code.startswith("4")}
        for path, method in ROUTES.items()
    }
    answered: dict[str, set[int]] = {path: set() for path in ROUTES}
    for path, response in _provoked(client):
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
        assert response.status_code in declared[path], f"{path} answered {response.status_code}, not declared"
        answered[path].add(response.status_code)
        if response.headers["content-type"] == "application/json":
            model = ERRORS[response.status_code][0]
            model.model_validate(response.json())  # the body has the declared schema
            ref = spec["paths"][path][ROUTES[path]]["responses"][str(response.status_code)]["content"][
                "application/json"
            ]["schema"]["$ref"]
            assert ref.endswith(f"/{model.__name__}")
    assert answered == declared  # nothing declared that no request can provoke
    for path, method in ROUTES.items():
        assert "500" in spec["paths"][path][method]["responses"]


def test_every_model_in_the_spec_has_field_descriptions_and_an_example(app):
    spec = TestClient(app).get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {
        "CandidateSlate",
        "ItemVectors",
        "VectorRequest",
        "BundleList",
        "ServiceInfo",
        "UserList",
        "ErrorBody",
        "InvalidRequest",
    } <= set(schemas)
    for name, schema in schemas.items():
        missing = [field for field, prop in schema.get("properties", {}).items() if not prop.get("description")]
        assert not missing, f"{name}: fields without a description: {missing}"
        assert schema.get("examples") or all(p.get("examples") for p in schema["properties"].values()), (
            f"{name} has no example"
        )


@pytest.fixture(scope="module")
def offline_browser(tmp_path_factory):
    """Headless Chromium whose only reachable host is loopback: every other request goes to a dead proxy."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        reason = f"{', '.join(missing)} missing: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(f"browser tests need Chromium in CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        *CHROMIUM_FLAGS,
        "--proxy-server=http://127.0.0.1:9",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.mark.slow
def test_docs_pages_render_the_endpoints_offline(app, offline_browser):
    browser = offline_browser
    with serve_in_thread(app) as url:
        for page in ("/docs", "/redoc"):
            html = TestClient(app).get(page).text
            assert "http://" not in html.replace(url, "") and "https://" not in html, f"{page} links off the machine"
        browser.get(f"{url}/docs")
        wait_for(
            browser,
            lambda d: len(d.find_elements("css selector", ".opblock-summary-path")) >= len(ROUTES),
            "Swagger UI to list the operations",
        )
        paths = {e.text.replace("\u200b", "") for e in browser.find_elements("css selector", ".opblock-summary-path")}
        assert set(ROUTES) <= paths
        browser.get(f"{url}/redoc")
        wait_for(
            browser,
            lambda d: "/v1/vectors" in d.find_element("tag name", "body").text,
            "ReDoc to render the operations",
        )
        assert "Current vectors of item ids per source" in browser.find_element("tag name", "body").text
        loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        off_machine = [u for u in loaded if not u.startswith(url) and u != REDOC_LOGO]
        assert loaded and not off_machine, loaded
