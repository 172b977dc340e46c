"""HistoryStore on real SQLite files: history reads, embedding versions, validation, retention, migrations."""

from __future__ import annotations

import math
import re
import sqlite3
import time

import numpy as np
import pytest

from device_runtime import store as store_mod
from device_runtime.store import LAST_CLICKS_SQL, HistoryStore
from shared_schema.messages import BehaviorEvent

SOURCES = ["video", "article", "ad"]


def click(item_id, source="video", ts=0.0, action="click", vector=None):
    return BehaviorEvent(item_id=item_id, source=source, action=action, ts=ts, vector=vector)


def vec(seed, dim=4):
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


@pytest.fixture
def store(tmp_path):
    with HistoryStore(tmp_path / "history.db", sources=SOURCES) as s:
        yield s


def snapshot(s: HistoryStore):
    """Every row of every table, to show that a failed call changed nothing."""
    return {
        t: s.db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
        for t in ("items", "behaviors", "exposures", "meta")
    }


def test_pragmas_wal_synchronous_busy_timeout(store, tmp_path):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
    with HistoryStore(tmp_path / "full.db", synchronous="full", busy_timeout_ms=250) as full:
        assert full.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert full.db.execute("PRAGMA busy_timeout").fetchone()[0] == 250
    with pytest.raises(ValueError, match="synchronous"):
        HistoryStore(tmp_path / "off.db", synchronous="OFF")


def test_last_clicks_newest_first_per_source_only_clicks_at_most_t(store):
    store.cache_items("video", [(f"v{i}", vec(i)) for i in range(6)], "e1")
    store.cache_items("article", [("a0", vec(10, dim=3))], "e1")
    store.record_many(
        [
            click("v0", ts=1),
            click("v1", ts=3),
            click("v2", ts=2),
            click("v3", ts=3),
            click("v4", ts=5, action="impression"),
            click("a0", source="article", ts=4),
        ]
    )
    hist = store.last_clicks(["video", "article", "ad"], t=3)
    # ts DESC, then id DESC for equal ts (v3 was recorded after v1); impressions are not history
    assert [i for i, _ in hist[0]] == ["v3", "v1", "v2"]
    assert [i for i, _ in hist[1]] == ["a0"] and hist[2] == []
    assert hist[0][0][1].dtype == np.float32
    np.testing.assert_array_equal(hist[0][0][1], vec(3))  # exact float32 round trip
    assert [len(h) for h in store.last_clicks(["ad", "video"], t=20)] == [0, 4]
    assert store.last_clicks(["video"], t=0) == [[]]


def test_repeated_clicks_stay_in_the_sequence(store):
    store.cache_items("video", [("v0", vec(0))], "e1")
    store.record_many([click("v0", ts=1), click("v0", ts=2)])
    assert [i for i, _ in store.last_clicks(["video"], 20)[0]] == ["v0", "v0"]


def test_record_returns_ids_and_caches_the_events_vector(store):
    store.set_embedding_version("e1")
    first = store.record(click("v9", ts=1, vector=[1.0, 2.0, 3.0]))
    second = store.record(click("v9", ts=2, action="impression"))
    assert second == first + 1
    ((item_id, v),) = store.last_clicks(["video"], 5)[0]
    assert item_id == "v9" and v.tolist() == [1.0, 2.0, 3.0]


def test_clicks_without_a_current_vector_are_skipped_until_refreshed(store):
    store.cache_items("video", [("v0", vec(0)), ("v1", vec(1))], "e1")
    store.record_many([click("v0", ts=1), click("v1", ts=2), click("v2", ts=3)])  # v2 has no vector
    assert [i for i, _ in store.last_clicks(["video"], 20)[0]] == ["v1", "v0"]
    store.cache_items("video", [("v1", vec(11, dim=8))], "e2")  # new version: only v1 is current
    assert store.embedding_version == "e2"
    assert [i for i, _ in store.last_clicks(["video"], 20)[0]] == ["v1"]
    assert store.stale_items() == [("video", "v0")]
    assert store.stale_items("e1") == [("video", "v1")]
    store.cache_items("video", [("v0", vec(10, dim=8)), ("v2", vec(12, dim=8))], "e2")  # refreshed from the cloud
    assert [i for i, _ in store.last_clicks(["video"], 20)[0]] == ["v2", "v1", "v0"]
    assert store.stale_items() == []


def test_embedding_version_and_dims_persist_across_reopen(tmp_path):
    path = tmp_path / "h.db"
    with HistoryStore(path) as s:
        s.cache_items("video", [("v0", vec(0))], "e1")
        s.record(click("v0", ts=1))
    with HistoryStore(path) as s:
        assert s.embedding_version == "e1"
        assert [i for i, _ in s.last_clicks(["video"], 1)[0]] == ["v0"]
        with pytest.raises(ValueError, match=r"items\[0\].vector.*4"):
            s.cache_items("video", [("v1", vec(1, dim=5))], "e1")


BAD_EVENTS = [
    (click("v1", vector=[1.0, 2.0]), r"event\.vector: vector has 2 values but source 'video' uses 4"),
    (click("v1", vector=[1.0, math.nan, 0.0, 0.0]), r"event\.vector: holds NaN"),
    (click("v1", vector=[1e39, 0.0, 0.0, 0.0]), r"event\.vector: holds NaN or infinite"),
    (click("v1", source="music"), r"event\.source: unknown source 'music'"),
    (
        BehaviorEvent.model_construct(item_id="v1", source="video", action="like", ts=1.0, vector=None),
        r"event\.action: unknown action 'like'",
    ),
    (BehaviorEvent.model_construct(item_id="", source="video", action="click", ts=1.0, vector=None), r"event\.item_id"),
    (click("v1", ts=math.inf), r"event\.ts"),
    ({"item_id": "v1"}, r"event: expected a BehaviorEvent"),
]


@pytest.mark.parametrize(("event", "message"), BAD_EVENTS)
def test_bad_event_is_refused_and_nothing_changes(store, event, message):
    store.cache_items("video", [("v0", vec(0))], "e1")
    store.record(click("v0", ts=1))
    before = snapshot(store)
    with pytest.raises(ValueError, match=message):
        store.record(event)
    assert snapshot(store) == before


def test_record_many_is_all_or_nothing(store):
    store.cache_items("video", [("v0", vec(0))], "e1")
    before = snapshot(store)
    with pytest.raises(ValueError, match=r"events\[2\]\.vector: vector has 3 values"):
        store.record_many([click("v0", ts=1), click("v1", ts=2, vector=vec(1)), click("v2", ts=3, vector=vec(2, 3))])
    assert snapshot(store) == before
    with pytest.raises(ValueError, match=r"events\[1\]\.source"):
        store.record_many([click("v0", ts=1), click("v1", source="nope")])
    with pytest.raises(ValueError, match=r"events\[0\]\.vector: vector has 2 values"):
        store.record_many([click("v1", vector=[1.0, 2.0])])
    assert snapshot(store) == before


def test_cache_items_is_all_or_nothing_and_checks_dims_within_a_batch(store):
    store.cache_items("video", [("v0", vec(0))], "e1")
    before = snapshot(store)
    with pytest.raises(ValueError, match=r"items\[1\]\.vector: vector has 2 values"):
        store.cache_items("article", [("a0", [1.0, 2.0, 3.0]), ("a1", [1.0, 2.0])], "e1")
    with pytest.raises(ValueError, match=r"items\[0\]\.vector: expected a non-empty 1-D"):
        store.cache_items("article", [("a0", [[1.0]])], "e1")
    with pytest.raises(ValueError, match=r"items\[0\]\.item_id"):
        store.cache_items("article", [("", [1.0])], "e1")
    with pytest.raises(ValueError, match=r"embedding_version"):
        store.cache_items("article", [("a0", [1.0])], "")
    with pytest.raises(ValueError, match=r"source: unknown source 'music'"):
        store.cache_items("music", [("a0", [1.0])], "e1")
    assert snapshot(store) == before


def test_vector_before_any_embedding_version_is_refused(store):
    with pytest.raises(ValueError, match=r"event\.vector: the store has no embedding version yet"):
        store.record(click("v0", vector=[1.0]))
    assert store.stats()["rows"]["behaviors"] == 0


def test_fixed_dims_are_enforced_from_the_first_vector(tmp_path):
    with HistoryStore(tmp_path / "h.db", dims={"video": 3}) as s:
        with pytest.raises(ValueError, match=r"items\[0\]\.vector: vector has 4 values but source 'video' uses 3"):
            s.cache_items("video", [("v0", vec(0))], "e1")
        assert s.cache_items("video", [("v0", vec(0, dim=3))], "e1") == 1


def test_last_clicks_query_uses_the_index_not_a_scan(store):
    plan = [row[3] for row in store.db.execute("EXPLAIN QUERY PLAN " + LAST_CLICKS_SQL, ("video", 20))]
    # behaviours read newest-first from the covering index (stopping after t rows), then one primary-key
    # lookup per click: no scan, no sort. (Older SQLite writes "SEARCH TABLE behaviors AS b ...".)
    assert re.fullmatch(
        r"SEARCH (TABLE behaviors AS )?b USING COVERING INDEX behaviors_last \(source=\? AND action=\?\)", plan[0]
    ), plan
    assert re.fullmatch(r"SEARCH (TABLE items AS )?i USING PRIMARY KEY \(source=\? AND item_id=\?\)", plan[1]), plan
    assert not any("SCAN" in p or "TEMP B-TREE" in p for p in plan), plan


def test_fixed_dims_and_stored_dims_must_agree(tmp_path):
    path = tmp_path / "h.db"
    with HistoryStore(path) as s:
        s.cache_items("video", [("v0", vec(0))], "e1")
    with HistoryStore(path, dims={"video": 8}) as s:
        with pytest.raises(ValueError, match=r"items\[0\]\.vector: vector has 8 values but source 'video' uses 4"):
            s.cache_items("video", [("v1", vec(1, dim=8))], "e1")
        s.cache_items("video", [("v1", vec(1, dim=8))], "e2")  # a new embedding version may change widths
        assert s.last_clicks(["video"], 5) == [[]]


def test_last_clicks_is_fast_with_10000_behaviours(tmp_path):
    with HistoryStore(tmp_path / "h.db", retention_per_source=10_000, sources=SOURCES) as s:
        for j, source in enumerate(SOURCES):
            s.cache_items(source, [(f"{source}{i}", vec(i, dim=16 + j)) for i in range(500)], "e1")
        rng = np.random.default_rng(0)
        events = []
        for i in range(10_000):
            source = SOURCES[i % 3]
            action = "click" if rng.random() < 0.3 else "impression"
            events.append(click(f"{source}{rng.integers(500)}", source=source, ts=float(i), action=action))
        s.record_many(events)
        timings = []
        for _ in range(60):
            start = time.perf_counter()
            hist = s.last_clicks(SOURCES, 20)
            timings.append(time.perf_counter() - start)
        assert [len(h) for h in hist] == [20, 20, 20]
        assert np.median(timings) < 1e-3, f"median {np.median(timings) * 1e3:.3f} ms"


def test_unknown_source_in_reads(store):
    with pytest.raises(ValueError, match=r"sources\[1\]: unknown source 'x'"):
        store.last_clicks(["video", "x"], 20)
    with pytest.raises(ValueError, match=r"sources\[0\]"):
        store.exposure_counts(["x"])
    with pytest.raises(ValueError, match=r"^t: "):
        store.last_clicks(["video"], -1)


def test_stats(store):
    store.cache_items("video", [("v0", vec(0))], "e1")
    store.record_many([click("v0", ts=1), click("v0", ts=2, action="impression")])
    store.record_exposures([("v0", "video")], ts=2)
    stats = store.stats()
    assert stats["schema_version"] == len(store_mod.MIGRATIONS) and stats["embedding_version"] == "e1"
    assert stats["rows"]["behaviors"] == 2 and stats["rows"]["items"] == 1 and stats["rows"]["exposures"] == 1
    assert stats["behaviors"] == {"video": {"click": 1, "impression": 1}}
    assert stats["journal_mode"] == "wal" and stats["file_bytes"] > 0


def test_context_manager_closes(tmp_path):
    with HistoryStore(tmp_path / "h.db") as s:
        pass
    with pytest.raises(sqlite3.ProgrammingError):
        s.db.execute("SELECT 1")


# -- files and migrations ------------------------------------------------------------------------
def test_opening_a_v0_file_migrates_it(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE app_settings (k TEXT)")  # an existing SQLite file without our schema
    conn.commit()
    conn.close()
    with HistoryStore(path) as s:
        assert s.schema_version == len(store_mod.MIGRATIONS)
        assert {"items", "behaviors", "exposures", "meta", "app_settings"} <= set(s.db.table_names())


def test_new_migrations_are_applied_once_in_order_keeping_data(tmp_path, monkeypatch):
    path = tmp_path / "h.db"
    with HistoryStore(path) as s:
        s.record(click("v0", ts=1))
    calls = []

    def v2_add_dwell_time(db):
        calls.append("v2")
        db["behaviors"].add_column("dwell_s", float)

    def v3_backfill(db):
        calls.append("v3")
        db.execute("UPDATE behaviors SET dwell_s = 0")

    current = len(store_mod.MIGRATIONS)
    monkeypatch.setattr(store_mod, "MIGRATIONS", [*store_mod.MIGRATIONS, v2_add_dwell_time, v3_backfill])
    for _ in range(2):
        with HistoryStore(path) as s:
            assert s.schema_version == current + 2
            assert s.db.execute("SELECT item_id, dwell_s FROM behaviors").fetchall() == [("v0", 0.0)]
    assert calls == ["v2", "v3"]


def test_a_failing_migration_leaves_the_file_at_its_old_version(tmp_path, monkeypatch):
    path = tmp_path / "h.db"
    with HistoryStore(path) as s:
        s.record(click("v0", ts=1))

    def v2_ok(db):
        db["behaviors"].add_column("dwell_s", float)

    def v3_broken(db):
        db.execute("ALTER TABLE no_such_table ADD COLUMN x")

    current = len(store_mod.MIGRATIONS)
    monkeypatch.setattr(store_mod, "MIGRATIONS", [*store_mod.MIGRATIONS, v2_ok, v3_broken])
    with pytest.raises(
        ValueError, match=rf"migration {current + 2} \(v3_broken\) failed.*left at schema version {current}"
    ):
        HistoryStore(path)
    monkeypatch.undo()
    with HistoryStore(path) as s:
        assert s.schema_version == current
        assert "dwell_s" not in s.db["behaviors"].columns_dict
        assert s.stats()["rows"]["behaviors"] == 1


def test_a_file_from_a_newer_runtime_is_refused(tmp_path):
    path = tmp_path / "h.db"
    with HistoryStore(path) as s:
        s.db.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    with pytest.raises(ValueError, match=r"schema version 99 is newer than this runtime's"):
        HistoryStore(path)


def test_bad_paths(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match=r"junk\.db: not a usable SQLite database"):
        HistoryStore(junk)
    with pytest.raises(FileNotFoundError, match=r"folder .*missing does not exist"):
        HistoryStore(tmp_path / "missing" / "h.db")
    with pytest.raises(ValueError, match=r"retention_per_source"):
        HistoryStore(tmp_path / "h.db", retention_per_source=0)
    with pytest.raises(ValueError, match=r"prune_every must be an int >= 1"):
        HistoryStore(tmp_path / "h.db", prune_every=0)


def test_read_memos_see_another_connections_writes(tmp_path):
    """Two stores on one file (two processes of the app): what one writes, the other reads next,
    though it had just read the same clicks and items into its memos."""
    reader = HistoryStore(tmp_path / "h.db", sources=["video"])
    writer = HistoryStore(tmp_path / "h.db", sources=["video"])
    try:
        reader.cache_items("video", [("v1", vec(1)), ("v2", vec(2))], "e1")
        reader.record(click("v1", ts=1.0))
        assert [i for i, _ in reader.last_clicks(["video"], 5)[0]] == ["v1"]
        writer.record(click("v2", ts=2.0))
        assert [i for i, _ in reader.last_clicks(["video"], 5)[0]] == ["v2", "v1"]
        writer.cache_items("video", [("v2", vec(7))], "e1")  # the item's vector changed elsewhere
        assert np.allclose(reader.last_clicks(["video"], 5)[0][0][1], vec(7))
        with writer._write() as conn:  # an item deleted behind the reader's back
            conn.execute("DELETE FROM items WHERE item_id = 'v1'")
        reader.cache_items("video", [("v1", vec(1))], "e1")  # not skipped on the memo's word: re-cached
        assert [i for i, _ in reader.last_clicks(["video"], 5)[0]] == ["v2", "v1"]
    finally:
        reader.close()
        writer.close()


def test_read_memos_follow_this_stores_own_writes(store):
    store.cache_items("video", [("v1", vec(1)), ("v2", vec(2))], "e1")
    store.record(click("v1", ts=1.0))
    before = store.last_clicks(["video", "article"], 5)
    store.cache_items("video", [("v1", vec(1)), ("v2", vec(2))], "e1")  # nothing new: read into the memo only
    store.record_exposures([("v2", "video")], ts=2.0)  # exposures alone keep the memos
    assert store.memos.clicks and store.memos.known
    assert [[i for i, _ in s] for s in store.last_clicks(["video", "article"], 5)] == [
        [i for i, _ in s] for s in before
    ]
    assert store.memos.known[("video", "v2")][3] == 0
    store.record(click("v2", ts=3.0))  # a click without a vector: the item memo stays, the clicks go
    assert store.memos.known[("video", "v2")][3] == 1 and not store.memos.clicks  # one reference more
    assert [i for i, _ in store.last_clicks(["video"], 5)[0]] == ["v2", "v1"]
    store.record(click("v1", ts=3.5, action="impression"))  # an impression leaves the last clicks
    assert store.memos.known and store.memos.clicks
    store.set_embedding_version("e2")  # old vectors stop counting at once
    assert store.last_clicks(["video"], 5) == [[]]
    store.cache_items("video", [("v2", vec(3))], "e2")
    assert [i for i, _ in store.last_clicks(["video"], 5)[0]] == ["v2"]
    returned = store.last_clicks(["video"], 5)
    returned[0].clear()  # a caller changing the returned lists does not change the memo
    assert len(store.last_clicks(["video"], 5)[0]) == 1


def test_caching_items_keeps_the_memos_it_leaves_true(store):
    """A page's new item vectors update the item memo; the last clicks stay memoised unless a cached
    item has behaviours (its vector may change a click's, or bring a click into the history)."""
    store.cache_items("video", [("v1", vec(1))], "e1")
    store.record(click("v1", ts=1.0))
    store.record(click("v9", ts=2.0))  # clicked before its vector arrives: not history yet
    assert [i for i, _ in store.last_clicks(["video"], 5)[0]] == ["v1"]
    store.cache_items("video", [("n1", vec(2)), ("n2", vec(3))], "e1")  # items nobody clicked
    assert store.memos.clicks and store.memos.known[("video", "n2")][0] == vec(3).tobytes()
    assert store.cache_items("video", [("n2", vec(3))], "e1") == 1
    assert store.db.execute("SELECT count(*) FROM items").fetchone() == (3,)
    store.cache_items("video", [("n3", vec(4)), ("v9", vec(5))], "e1")  # v9's vector arrives
    clicks = store.last_clicks(["video"], 5)[0]
    assert [i for i, _ in clicks] == ["v9", "v1"] and np.array_equal(clicks[0][1], vec(5))
    store.cache_items("video", [("v1", vec(6))], "e1")  # a clicked item's vector changes
    assert np.array_equal(store.last_clicks(["video"], 5)[0][1][1], vec(6))
    with HistoryStore(store.path, sources=SOURCES) as fresh:  # what the file says
        assert [(i, v.tobytes()) for i, v in fresh.last_clicks(["video"], 5)[0]] == [
            (i, v.tobytes()) for i, v in store.last_clicks(["video"], 5)[0]
        ]


@pytest.mark.parametrize("shape", [(3, 5), (1, 1), (4, 0), (0, 3)])
def test_row_bytes_are_each_rows_float32_bytes(shape):
    vectors = np.arange(math.prod(shape), dtype=np.float32).reshape(shape)
    assert store_mod.row_bytes(vectors) == [row.tobytes() for row in vectors]
    assert store_mod.row_bytes(vectors[:, ::-1]) == [row.tobytes() for row in vectors[:, ::-1]]  # not contiguous
