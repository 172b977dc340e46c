"""`device_bundle`: one real exported DIR bundle per test session (tests/helpers/device.py builds it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers.device import build_bundle, export_key

_BUILT: dict[str, Path] = {}


def _cached_bundle(cache_root: Path) -> Path:
    from device_runtime.bundle import verify

    bundle = cache_root / export_key()
    try:
        verify(bundle)
    except (FileNotFoundError, ValueError):
        shutil.rmtree(cache_root, ignore_errors=True)  # stale keys and half-written exports go
        cache_root.mkdir(parents=True)
        build_bundle(bundle)
    return bundle


@pytest.fixture(scope="session")
def device_bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle directory shared by the whole session; copy it before changing anything in it."""
    if "bundle" not in _BUILT:
        prebuilt = os.environ.get("DIR_DEVICE_TEST_BUNDLE")
        cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
        if prebuilt:
            _BUILT["bundle"] = Path(prebuilt)
        elif cache is not None:
            _BUILT["bundle"] = _cached_bundle(cache.mkdir("device-bundle"))
        else:
            _BUILT["bundle"] = build_bundle(tmp_path_factory.mktemp("device-bundle") / "bundle")
    return _BUILT["bundle"]
