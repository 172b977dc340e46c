"""The documented slate contract: docs/schemas/ matches the models, the examples are valid messages,
`dir-cloud vectors` / `slate --items` build vectors and slates offline, and `dir-cloud` without the
cloud extra names the extra to install."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cloud.cli import extra_providing, main
from shared_schema import CandidateItem, CandidateSlate, RankedItem, SourceCandidates
from shared_schema.schemas import MESSAGES, stale_schemas
from shared_schema.service import BundleEntry, BundleFileEntry, ItemVectors
from tests.helpers.service import tiny_run

REPO = Path(__file__).resolve().parents[2]


def test_committed_json_schemas_are_current():
    stale = stale_schemas(REPO / "docs" / "schemas")
    assert not stale, f"docs/schemas out of date: {stale}; run `dir-cloud schemas --out docs/schemas`"
    assert main(["schemas", "--out", str(REPO / "docs" / "schemas"), "--check"]) == 0


def test_schema_check_names_a_stale_file(tmp_path, capsys):
    assert main(["schemas", "--out", str(tmp_path)]) == 0
    (tmp_path / "CandidateSlate.json").write_text("{}\n")
    assert main(["schemas", "--out", str(tmp_path), "--check"]) == 1
    assert "CandidateSlate.json" in capsys.readouterr().err


@pytest.mark.parametrize(
    "model",
    [*MESSAGES, CandidateItem, SourceCandidates, RankedItem, BundleEntry, BundleFileEntry],
    ids=lambda m: m.__name__,
)
def test_every_documented_example_is_a_valid_message(model):
    schema = model.model_json_schema()
    assert schema["examples"], f"{model.__name__} has no example"
    for example in schema["examples"]:
        model.model_validate(example)
    assert all(p.get("description") for p in schema["properties"].values())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("contract"))[0]


def test_vectors_and_items_slate_offline_match_the_item_encoder(run_dir, tmp_path, capsys):
    from cloud.data.prepared import PreparedData
    from cloud.service.slates import encode_items
    from cloud.training.runs import load_run

    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps({"article": ["a2", "zz"], "video": ["v5", "v1"]}))
    assert main(["vectors", "--run", str(run_dir), "--items", str(ids), "--out", str(tmp_path / "v.json")]) == 0
    answer = ItemVectors.model_validate_json((tmp_path / "v.json").read_text())
    run = load_run(run_dir)
    data = PreparedData(run.config["data"])
    assert answer.unknown == {"article": ["zz"]} and answer.embedding_version == run.embedding_version
    video = {s.source: s for s in answer.sources}["video"]
    assert [i.item_id for i in video.items] == ["v5", "v1"]
    rows = [list(data.items("video").ids).index(i) for i in ("v5", "v1")]
    assert np.allclose([i.vector for i in video.items], encode_items(run.model, data, "video", np.array(rows)))

    ids.write_text(json.dumps({"ids": {"video": ["v1", "v5"], "article": ["a2"]}}))
    assert (
        main(["slate", "--run", str(run_dir), "--items", str(ids), "--user", "u7", "--out", str(tmp_path / "s")]) == 0
    )
    slate = CandidateSlate.model_validate_json((tmp_path / "s" / "slate.json").read_text())
    assert slate.user_id == "u7" and slate.embedding_version == run.embedding_version
    assert [(s.source, [i.item_id for i in s.items]) for s in slate.sources] == [
        ("video", ["v1", "v5"]),
        ("article", ["a2"]),
    ]
    assert slate.sources[0].items[1].vector == video.items[0].vector

    ids.write_text(json.dumps({"video": ["v1", "nope"]}))
    assert main(["slate", "--run", str(run_dir), "--items", str(ids), "--out", str(tmp_path / "bad")]) == 2
    assert "{'video': ['nope']}" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    ids.write_text(json.dumps({"video": "v1"}))
    assert main(["vectors", "--run", str(run_dir), "--items", str(ids)]) == 2
    assert str(ids) in capsys.readouterr().err


BLOCKED = """
import sys
BLOCK = {"torch", "pandas", "matplotlib", "tqdm", "fastapi", "uvicorn", "executorch", "litert_torch"}
class DeviceOnlyInstall:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, DeviceOnlyInstall())
from cloud.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv", [["train", "--data", "d", "--out", "r"], ["--help"]])
def test_dir_cloud_without_the_cloud_extra_names_it(argv):
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(BLOCKED), *argv], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "pip install 'dir-rerank[cloud]'" in done.stderr and "dir-device" in done.stderr


def test_missing_modules_map_to_the_extra_that_installs_them():
    assert extra_providing("torch") == "cloud" and extra_providing("pandas") == "cloud"
    assert extra_providing("litert_torch") == "export" and extra_providing("executorch") == "export"
    assert extra_providing("no_such_module") is None
