"""Hostile slates and events against a real Reranker and store (hypothesis), and the device CLI's input findings.

Every generated case either reranks/records or fails with a ValueError that names the field; a refused
case leaves the store as it was (PRAGMA integrity_check, the earlier rows intact). The case counts are
printed (`pytest -s`) and asserted.
"""

from __future__ import annotations

import json
import math
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from device_runtime import cli
from device_runtime.reranker import Reranker
from shared_schema import BehaviorEvent, CandidateSlate
from shared_schema.messages import MAX_ID_CHARS
from tests.helpers.device import make_slate, read_manifest

SLATE_CASES = 700
EVENT_CASES = 700
COUNTS = {"slate": [0, 0, 0], "event": [0, 0, 0]}  # surface -> [cases, accepted, refused]

HOSTILE = st.one_of(
    st.just("1.5"),
    st.just(True),
    st.just(False),
    st.none(),
    st.just(float("nan")),
    st.just(float("inf")),
    st.just(1e39),
    st.just(-1),
    st.just(""),
    st.just("x" * (MAX_ID_CHARS + 1)),
    st.just([]),
    st.just({}),
    st.just([1.0, "2"]),
    st.just([True, 0.5]),
    st.text(max_size=8),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
)


@pytest.fixture(scope="module")
def fuzz_reranker(device_bundle, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "history.db"
    with Reranker.open(device_bundle, path, "tflite", "cpu", "controller") as reranker:
        reranker.rerank(make_slate(reranker.manifest, seed=1))  # earlier rows the cases must not lose
        yield reranker


def snapshot(reranker: Reranker) -> tuple:
    conn = reranker.store.db.conn
    return tuple(
        conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
        for table in ("behaviors", "exposures", "items", "tallies", "meta")
    )


def assert_intact(reranker: Reranker, before: tuple) -> None:
    conn = reranker.store.db.conn
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert not conn.in_transaction
    assert snapshot(reranker) == before


def names_a_field(exc: Exception, prefix: str) -> bool:
    if isinstance(exc, ValidationError):
        return all(error["loc"] for error in exc.errors()) or str(exc).startswith(prefix)
    return str(exc).startswith(prefix)


@st.composite
def hostile_slates(draw, manifest):
    """A valid slate as JSON-like data, then one to three hostile edits at random places."""
    data = json.loads(make_slate(manifest, seed=draw(st.integers(0, 50))).model_dump_json())
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(["item_field", "vector_value", "top", "source", "move_item", "extra"]))
        sources = [x for x in data["sources"] if isinstance(x, dict)] if isinstance(data["sources"], list) else []
        source = draw(st.sampled_from(sources)) if sources else None
        listed = source["items"] if source and isinstance(source["items"], list) else []
        items = [x for x in listed if isinstance(x, dict)]
        if edit == "item_field" and items:
            item = draw(st.sampled_from(items))
            item[draw(st.sampled_from(["item_id", "vector", "title", "upstream_score"]))] = draw(HOSTILE)
        elif edit == "vector_value" and items:
            vector = draw(st.sampled_from(items))["vector"]
            if isinstance(vector, list) and vector:
                vector[draw(st.integers(0, len(vector) - 1))] = draw(HOSTILE)
        elif edit == "top":
            data[draw(st.sampled_from(["user_id", "request_id", "embedding_version", "schema_version", "sources"]))] = (
                draw(HOSTILE)
            )
        elif edit == "source" and source:
            source["source"] = draw(st.one_of(HOSTILE, st.sampled_from(manifest.source_names)))
        elif edit == "move_item" and len(sources) > 1 and items:  # the same id in two sources
            other = draw(st.sampled_from([s for s in sources if s is not source]))
            if isinstance(other.get("items"), list) and other["items"] and isinstance(other["items"][0], dict):
                other["items"][0]["item_id"] = items[0].get("item_id")
        elif edit == "extra":
            data["surprise"] = draw(HOSTILE)
    return data


def test_hostile_slates_are_refused_naming_the_field(fuzz_reranker):
    manifest = fuzz_reranker.manifest

    @settings(
        max_examples=SLATE_CASES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(hostile_slates(manifest))
    def case(data):
        COUNTS["slate"][0] += 1
        before = snapshot(fuzz_reranker)
        try:
            result = fuzz_reranker.rerank(CandidateSlate.model_validate(data))
        except ValueError as exc:
            assert names_a_field(exc, "slate"), exc
            assert_intact(fuzz_reranker, before)
            COUNTS["slate"][2] += 1
            return
        assert all(math.isfinite(item.score) for item in result.items)
        ids = [(item.source, item.item_id) for item in result.items]
        assert len(ids) == len(set(ids)) and len({i for _, i in ids}) == len(ids)
        COUNTS["slate"][1] += 1

    case()
    print(f"\nslates: {COUNTS['slate'][0]} cases, {COUNTS['slate'][1]} reranked, {COUNTS['slate'][2]} refused")
    assert COUNTS["slate"][0] >= SLATE_CASES - 50 and COUNTS["slate"][2] > COUNTS["slate"][0] // 2


@st.composite
def hostile_events(draw, manifest):
    s = draw(st.integers(0, len(manifest.sources) - 1))
    data = {
        "item_id": f"e{draw(st.integers(0, 30))}",
        "source": manifest.source_names[s],
        "action": "click",
        "ts": 1.0 + draw(st.integers(0, 1000)),
    }
    if draw(st.booleans()):
        data["vector"] = [0.1] * manifest.vector_dims[s]
    for _ in range(draw(st.integers(0, 2))):
        field = draw(
            st.sampled_from(["item_id", "source", "action", "ts", "vector", "vector_value", "schema_version", "extra"])
        )
        if field == "vector_value" and isinstance(data.get("vector"), list):
            data["vector"][draw(st.integers(0, len(data["vector"]) - 1))] = draw(HOSTILE)
        elif field == "vector":
            data["vector"] = draw(st.one_of(HOSTILE, st.lists(st.floats(-10, 10), max_size=40)))
        elif field == "extra":
            data["who"] = draw(HOSTILE)
        else:
            data[field] = draw(HOSTILE)
    return data


def test_hostile_events_are_refused_naming_the_field(fuzz_reranker):
    manifest = fuzz_reranker.manifest

    @settings(max_examples=EVENT_CASES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(hostile_events(manifest))
    def case(data):
        COUNTS["event"][0] += 1
        before = snapshot(fuzz_reranker)
        try:
            fuzz_reranker.record(BehaviorEvent.model_validate(data))
        except ValueError as exc:
            assert names_a_field(exc, "event"), exc
            assert_intact(fuzz_reranker, before)
            COUNTS["event"][2] += 1
            return
        COUNTS["event"][1] += 1

    case()
    print(f"\nevents: {COUNTS['event'][0]} cases, {COUNTS['event'][1]} recorded, {COUNTS['event'][2]} refused")
    assert COUNTS["event"][0] >= EVENT_CASES - 50 and COUNTS["event"][1] > 0 and COUNTS["event"][2] > 0


def test_vectors_refuse_strings_and_booleans_and_ids_are_capped(fuzz_reranker):
    manifest = fuzz_reranker.manifest
    data = json.loads(make_slate(manifest).model_dump_json())
    for bad in ("0.5", True):
        data["sources"][0]["items"][0]["vector"][0] = bad
        with pytest.raises(ValidationError, match=r"sources\.0\.items\.0\.vector\.0"):
            CandidateSlate.model_validate(data)
    with pytest.raises(ValidationError, match="item_id"):
        BehaviorEvent(item_id="x" * 10_000_000, source=manifest.source_names[0], action="click", ts=1.0)
    with pytest.raises(ValidationError, match="vector.0"):
        BehaviorEvent.model_validate({"item_id": "a", "source": "s", "action": "click", "ts": 1, "vector": ["1"]})


def test_the_same_item_in_two_sources_is_refused(fuzz_reranker):
    slate = make_slate(fuzz_reranker.manifest, seed=3)
    slate.sources[1].items[0].item_id = slate.sources[0].items[0].item_id
    with pytest.raises(ValueError, match=r"slate.sources\[1\].items: item id .* is also a candidate of source"):
        fuzz_reranker.rerank(slate)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_folders_limits_and_clicks_without_a_vector(device_bundle, tmp_path, capsys):
    root = str(tmp_path / "home")
    assert run_cli(capsys, "trust", "--allow-unsigned", "--root", root)[0] == 0  # an unsigned test bundle
    assert run_cli(capsys, "install", str(device_bundle), "--root", root)[0] == 0
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code, _, err = run_cli(capsys, "history", "--root", root, "--db", str(folder))
    assert code == 2 and "is a folder; pass a history store file" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "record", "--root", root, "--events", str(folder))
    assert code == 2 and "is a folder; pass a events file" in err
    with pytest.raises(SystemExit):
        cli.main(["history", "--root", root, "--limit", "-1"])
    assert "expected an integer >= 1" in capsys.readouterr().err

    source = read_manifest(device_bundle).source_names[0]
    code, out, _ = run_cli(capsys, "record", "--root", root, "--item", "never-shown", "--source", source, "--json")
    reply = json.loads(out)
    assert code == 0 and reply["not_in_history"]["items"] == [{"source": source, "item_id": "never-shown"}]
    assert "count as history only once" in reply["not_in_history"]["why"]
    with sqlite3.connect(tmp_path / "home" / "history.db") as conn:
        assert conn.execute("SELECT item_id FROM behaviors").fetchall() == [("never-shown",)]
