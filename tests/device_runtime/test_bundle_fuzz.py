"""Hypothesis fuzzing of what `dir-device install` takes: manifests (hostile values in every field, raw
bytes), bundle folders (missing, extra and linked files) and zips (hostile member names, links, sizes,
garbage). Every case must end in a ValueError or FileNotFoundError naming the field or file, with the
previously active bundle still active and no staging folder left behind (1,050 cases, about 25 s on 2 busy cores)."""

from __future__ import annotations

import itertools
import json
import shutil
import stat
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_runtime.bundle import BundleRegistry
from tests.helpers.device import SPEC
from tests.helpers.service import served_bundle

SETTINGS = settings(
    max_examples=350,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ACTIVE = "active-000000000000"
FIELDS = [
    "schema_version",
    "model_name",
    "model_version",
    "created_at",
    "sources",
    "vector_dims",
    "n",
    "t",
    "K",
    "target_shares",
    "embedding_version",
    "inputs",
    "outputs",
    "files",
    "decoder",
    "decoder_options",
    "metrics",
    "notes",
]
HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["../../etc/passwd", "/abs/path", "%2e%2e/x", "a\\b", "", "nan", "1e999", "2030-13-45"]),
    st.lists(st.one_of(st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=5)), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(-3, 3), max_size=3),
)
JSON = st.recursive(
    st.one_of(st.none(), st.integers(), st.text(max_size=5)),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)
_counter = itertools.count()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A registry with an active bundle (put in place by hand) and a valid bundle to mutate."""
    tmp = tmp_path_factory.mktemp("fuzz")
    root = tmp / "device"
    served_bundle(root / "versions" / ACTIVE, SPEC, created_at="2020-01-01T00:00:00+00:00")
    (root / "current").write_text(json.dumps({"active": ACTIVE, "previous": []}))
    template = served_bundle(tmp / "template", SPEC, created_at="2030-01-01T00:00:00+00:00", files=("model.tflite",))
    return tmp, BundleRegistry(root), template


def _case_dir(tmp: Path) -> Path:
    folder = tmp / f"case-{next(_counter)}"
    folder.mkdir()
    return folder


def _install_is_refused(registry: BundleRegistry, path: Path) -> str:
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        registry.install(path)
    assert registry.active().version == ACTIVE
    assert [p.name for p in registry.versions_dir.iterdir()] == [ACTIVE]  # no staging folder left
    message = str(info.value)
    assert "Traceback" not in message and message.strip()
    return message


@SETTINGS
@given(field=st.sampled_from(FIELDS), value=HOSTILE, drop=st.booleans())
def test_manifest_fields_with_hostile_values(world, field, value, drop):
    tmp, registry, template = world
    bundle = _case_dir(tmp) / "b"
    shutil.copytree(template, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    if drop:
        manifest.pop(field)
    else:
        manifest[field] = value
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    message = _install_is_refused(registry, bundle)
    # the field is named, or (its value being valid) the model file is: random bytes are no model
    assert field in message or "model.tflite" in message or "schema_version" in message, message
    shutil.rmtree(bundle.parent)


@SETTINGS
@given(
    raw=st.one_of(
        st.binary(max_size=200), st.text(max_size=200).map(str.encode), JSON.map(lambda v: json.dumps(v).encode())
    ),
    damage=st.sampled_from(["none", "missing", "link", "truncate", "extra-link"]),
)
def test_bundle_folders_with_raw_manifests_and_damaged_files(world, raw, damage):
    tmp, registry, template = world
    bundle = _case_dir(tmp) / "b"
    shutil.copytree(template, bundle)
    if raw:
        (bundle / "manifest.json").write_bytes(raw)
    if damage == "missing":
        (bundle / "model.tflite").unlink()
    elif damage == "link":
        (bundle / "model.tflite").unlink()
        (bundle / "model.tflite").symlink_to(template / "model.tflite")
    elif damage == "truncate":
        (bundle / "model.tflite").write_bytes(b"TFL3")
    elif damage == "extra-link":
        (bundle / "other").symlink_to("/etc")
    message = _install_is_refused(registry, bundle)
    assert (
        "manifest.json" in message
        or "model.tflite" in message
        or "symbolic link" in message
        or "schema_version" in message
    ), message
    shutil.rmtree(bundle.parent)


MEMBER = st.one_of(
    st.sampled_from(
        [
            "manifest.json",
            "model.tflite",
            "b/manifest.json",
            "b/model.tflite",
            "../evil",
            "/abs",
            "a/../../evil",
            "dir/",
            ".hidden",
            "b/../manifest.json",
        ]
    ),
    st.text(alphabet="ab./\\%_-", min_size=1, max_size=12),
)


@SETTINGS
@given(
    members=st.lists(
        st.tuples(MEMBER, st.binary(max_size=64), st.sampled_from(["file", "link", "template"])), max_size=5
    ),
    garbage=st.one_of(st.none(), st.binary(min_size=1, max_size=300)),
)
def test_zips_with_hostile_members_links_and_garbage(world, members, garbage):
    tmp, registry, template = world
    case = _case_dir(tmp)
    archive = case / "bundle.zip"
    if garbage is not None:
        archive.write_bytes(garbage)
    else:
        with zipfile.ZipFile(archive, "w") as zf:
            for name, data, kind in members:
                if kind == "link":
                    info = zipfile.ZipInfo(name)
                    info.external_attr = (stat.S_IFLNK | 0o777) << 16
                    zf.writestr(info, "/etc/passwd")
                elif kind == "template" and (template / Path(name).name).is_file():
                    zf.writestr(name, (template / Path(name).name).read_bytes())
                else:
                    zf.writestr(name, data)
    message = _install_is_refused(registry, archive)
    assert "bundle.zip" in message or "manifest.json" in message or "model.tflite" in message, message
    assert not (tmp / "evil").exists() and not (case / "evil").exists()
    shutil.rmtree(case)
