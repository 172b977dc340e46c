"""Shared fixtures of the service tests."""

from __future__ import annotations

import pytest

from cloud.service import BundleFolder, CloudService, create_app
from tests.helpers.service import serve_in_thread, tiny_run


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(service, base URL) of a tiny trained run served over HTTP on loopback for the module's tests."""
    run_dir, data_dir = tiny_run(tmp_path_factory.mktemp("served"))
    service = CloudService.load(run_dir, data_dir)
    with serve_in_thread(create_app(service, BundleFolder(tmp_path_factory.mktemp("bundles")))) as url:
        yield service, url
