"""HistoryStore retention on real SQLite files: bounds after every write, what is kept, tallies kept by
triggers, the item memo, pruning cost independent of the stored rows, unchanged vectors not rewritten, v1 files."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from device_runtime.store import PRUNE_SQL, HistoryStore
from shared_schema.messages import BehaviorEvent

SOURCES = ["video", "article", "ad"]


def click(item_id, source="video", ts=0.0, action="click", vector=None):
    return BehaviorEvent(item_id=item_id, source=source, action=action, ts=ts, vector=vector)


def vec(seed, dim=4):
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


def item_ids(s: HistoryStore, source: str = "video") -> set[str]:
    return {i for (i,) in s.db.execute("SELECT item_id FROM items WHERE source = ?", (source,))}


def check_tallies(s: HistoryStore) -> None:
    """Tallies and reference counts equal what a full count finds."""
    conn = s.db.conn
    tallies = {(src, kind): rows for src, kind, rows in conn.execute("SELECT source, kind, rows FROM tallies")}
    counted = {
        (src, a): n for src, a, n in conn.execute("SELECT source, action, count(*) FROM behaviors GROUP BY 1, 2")
    }
    counted |= {(src, "exposure"): n for src, n in conn.execute("SELECT source, count(*) FROM exposures GROUP BY 1")}
    counted |= {
        (src, "item"): n
        for src, n in conn.execute(
            "SELECT source, count(*) FROM items AS i WHERE NOT EXISTS"
            " (SELECT 1 FROM behaviors AS b WHERE b.source = i.source AND b.item_id = i.item_id) GROUP BY 1"
        )
    }
    assert {k: v for k, v in tallies.items() if v} == counted
    bad_refs = conn.execute(
        "SELECT count(*) FROM items AS i WHERE refs"
        " <> (SELECT count(*) FROM behaviors AS b WHERE b.source = i.source AND b.item_id = i.item_id)"
    ).fetchone()
    assert bad_refs == (0,)


def test_retention_keeps_the_newest_behaviours_and_their_items(tmp_path):
    with HistoryStore(tmp_path / "h.db", retention_per_source=10, prune_every=1, sources=SOURCES) as s:
        s.set_embedding_version("e1")
        s.record_many([click(f"v{i}", ts=i, vector=vec(i)) for i in range(40)])
        s.record_many([click(f"v{i}", ts=i, action="impression") for i in range(3)])
        s.record_many([click("a0", source="article", ts=i) for i in range(4)])
        assert s.stats()["behaviors"] == {
            "video": {"click": 10, "impression": 3},
            "article": {"click": 4, "impression": 0},
        }
        assert [i for i, _ in s.last_clicks(["video"], 20)[0]] == [f"v{i}" for i in range(39, 29, -1)]
        # the 10 clicked items (v30..v39) plus the 10 newest unreferenced ones
        assert item_ids(s) == {f"v{i}" for i in range(20, 40)}
        s.record(click("v5", ts=0.5))  # older than every kept click: pruned at once
        assert [i for i, _ in s.last_clicks(["video"], 1)[0]] == ["v39"]
        check_tallies(s)


@pytest.mark.parametrize("every", [1, 4])
def test_bounds_hold_after_every_write(tmp_path, every):
    keep, bound = 7, 7 + every - 1
    with HistoryStore(tmp_path / "h.db", retention_per_source=keep, prune_every=every) as s:
        for i in range(60):
            s.cache_items("video", [(f"c{i}-{j}", vec(j)) for j in range(3)], "e1")
            s.record(click(f"v{i}", ts=i, vector=vec(i)))
            s.record(click(f"c{i}-0", ts=i, action="impression"))
            s.record_exposures([(f"c{i}-1", "video"), (f"c{i}-2", "video")], ts=i)
            stats = s.stats()
            assert stats["behaviors"]["video"]["click"] <= bound
            assert stats["behaviors"]["video"]["impression"] <= bound
            assert stats["exposure_rows"]["video"] <= bound
            assert stats["items"]["video"] <= bound + 2 * bound  # unreferenced + one per kept behaviour
        assert stats["behaviors"]["video"]["click"] >= keep  # pruned down to the retention, not below
        assert [i for i, _ in s.last_clicks(["video"], keep)[0]] == [f"v{i}" for i in range(59, 59 - keep, -1)]
        assert s.exposure_counts(["video"]).tolist() == [120]
        check_tallies(s)


def test_an_item_a_kept_behaviour_refers_to_is_never_pruned(tmp_path):
    with HistoryStore(tmp_path / "h.db", retention_per_source=3, prune_every=1) as s:
        s.cache_items("video", [("old", vec(0))], "e1")
        s.record(click("old", ts=1))
        for page in range(10):  # many newer items push "old" far out of the newest 3
            s.cache_items("video", [(f"p{page}-{j}", vec(j)) for j in range(3)], "e1")
        assert "old" in item_ids(s) and len(item_ids(s)) == 1 + 3
        assert [i for i, _ in s.last_clicks(["video"], 5)[0]] == ["old"]
        s.record_many([click(f"n{i}", ts=10 + i) for i in range(3)])  # "old"'s click is pruned
        assert "old" not in item_ids(s)
        check_tallies(s)


@pytest.mark.parametrize("new_vector", [False, True])
def test_an_item_shown_again_is_restamped_and_kept(tmp_path, new_vector):
    with HistoryStore(tmp_path / "h.db", retention_per_source=10, prune_every=1) as s:
        for page in range(30):  # "hit" is on every page, between 4 new items
            hit = vec(100 + page if new_vector else 0)
            s.cache_items("video", [("hit", hit), *((f"p{page}-{j}", vec(j)) for j in range(4))], "e1")
            assert "hit" in item_ids(s)
        assert len(item_ids(s)) == 10
        check_tallies(s)
        check_item_memo(s)


def test_a_new_vector_keeps_a_recent_items_number_and_restamps_an_aged_one(tmp_path):
    with HistoryStore(tmp_path / "h.db", retention_per_source=10, prune_every=1) as s:

        def number(item_id):
            return s.db.execute("SELECT seq FROM items WHERE item_id = ?", (item_id,)).fetchone()[0]

        s.cache_items("video", [("x", vec(0))], "e1")
        first = number("x")
        s.cache_items("video", [("x", vec(1))], "e1")  # a new vector, cached just now: the number stays
        assert number("x") == first
        (blob,) = s.db.execute("SELECT vector FROM items WHERE item_id = 'x'").fetchone()
        np.testing.assert_array_equal(np.frombuffer(blob, np.float32), vec(1))
        check_item_memo(s)
        s.cache_items("video", [(f"p{j}", vec(j)) for j in range(5)], "e1")  # half the retention after it
        s.cache_items("video", [("x", vec(2))], "e1")  # aged: re-stamped as the newest item
        assert number("x") > max(number(f"p{j}") for j in range(5))
        check_item_memo(s)
        check_tallies(s)


def test_caching_an_unchanged_vector_writes_nothing(tmp_path):
    with HistoryStore(tmp_path / "h.db", retention_per_source=2000) as s:
        video, article = np.stack([vec(i) for i in range(10)]), np.stack([vec(i, 3) for i in range(10)])
        page = {"video": ([f"v{i}" for i in range(10)], video), "article": ([f"a{i}" for i in range(10)], article)}
        assert s.cache_sources(page, "e1") == 20
        changes = s.db.conn.total_changes
        assert s.cache_sources(page, "e1") == 20
        assert s.db.conn.total_changes == changes  # no row (not even a tally) rewritten
        video[2] = vec(99)  # a changed vector (a dense feature moved) is rewritten
        s.cache_sources(page, "e1")
        assert s.db.conn.total_changes > changes
        (blob,) = s.db.execute("SELECT vector FROM items WHERE item_id = 'v2'").fetchone()
        np.testing.assert_array_equal(np.frombuffer(blob, np.float32), vec(99))
        many = [(f"m{i}", vec(i)) for i in range(600)]  # longer than one check query: the upsert skips them
        s.cache_items("video", many, "e1")
        changes = s.db.conn.total_changes
        s.cache_items("video", many, "e1")
        assert s.db.conn.total_changes == changes
        s.cache_sources({"video": (["v0"], video[:1])}, "e2")  # a new embedding version too
        assert s.stale_items() == sorted(
            [("article", f"a{i}") for i in range(10)]
            + [("video", f"v{i}") for i in range(1, 10)]
            + [("video", f"m{i}") for i in range(600)]
        )


def test_an_unchanged_vector_the_memo_knows_as_recent_is_not_rewritten(tmp_path):
    with HistoryStore(tmp_path / "h.db", retention_per_source=2000) as s:
        many = [(f"m{i}", vec(i)) for i in range(600)]
        s.cache_items("video", many[:300], "e1")  # short batches: the item memo knows them all
        s.cache_items("video", many[300:], "e1")

        def written_at(item_id):
            return s.db.execute("SELECT updated_at FROM items WHERE item_id = ?", (item_id,)).fetchone()[0]

        before = written_at("m1")
        changes = s.db.conn.total_changes
        s.cache_items("video", many, "e1")  # longer than one check query: handed to the write whole
        assert s.db.conn.total_changes == changes
        s.record(click("m1", vector=vec(1)))  # a click carrying the vector already cached
        assert written_at("m1") == before
        many[1] = ("m1", vec(77))  # a changed vector is still rewritten, the last one given wins
        s.cache_items("video", many + [("m1", vec(78))], "e1")
        (blob,) = s.db.execute("SELECT vector FROM items WHERE item_id = 'm1'").fetchone()
        np.testing.assert_array_equal(np.frombuffer(blob, np.float32), vec(78))
        check_item_memo(s)
        check_tallies(s)


BAD_PAGES = [
    (
        {"article": (["a0", "a1"], np.ones((2, 4)))},
        r"items\['article'\]\.vectors\[0\]: vector has 4 values but source 'article' uses 3",
    ),
    (
        {"article": (["a0", "a1"], [[1.0, 2.0, 3.0], [1.0, math.inf, 0.0]])},
        r"items\['article'\]\.vectors\[1\]: holds NaN or infinite",
    ),
    ({"article": (["a0"], [1.0, 2.0, 3.0])}, r"items\['article'\]\.vectors: expected an \[items, width\] matrix"),
    ({"article": (["a0", "a1"], np.ones((1, 3)))}, r"items\['article'\]: 2 item ids but 1 vectors"),
    ({"article": (["a0", ""], np.ones((2, 3)))}, r"items\['article'\]\.item_ids\[1\]"),
    ({"music": (["m0"], np.ones((1, 3)))}, r"items\['music'\]: unknown source 'music'"),
]


@pytest.mark.parametrize(("page", "message"), BAD_PAGES)
def test_a_bad_page_is_refused_naming_the_field_and_nothing_changes(tmp_path, page, message):
    with HistoryStore(tmp_path / "h.db", sources=SOURCES) as s:
        s.cache_sources({"article": (["a9"], np.ones((1, 3)))}, "e1")
        before = s.db.execute("SELECT * FROM items").fetchall()
        with pytest.raises(ValueError, match=message):
            s.cache_sources({"video": (["v0"], np.ones((1, 4))), **page}, "e1")
        assert s.db.execute("SELECT * FROM items").fetchall() == before


def test_exposure_counts_survive_pruning(tmp_path):
    with HistoryStore(tmp_path / "h.db", retention_per_source=5, prune_every=1, sources=SOURCES) as s:
        for page in range(10):
            s.record_exposures(
                [(f"v{page}a", "video"), (f"v{page}b", "video"), (f"a{page}", "article")],
                ts=page,
                request_id=f"r{page}",
            )
        assert s.exposure_counts(["ad", "article", "video"]).tolist() == [0, 10, 20]
        assert s.stats()["exposure_rows"] == {"video": 5, "article": 5}
        with pytest.raises(ValueError, match=r"items\[1\]\.source: unknown source 'x'"):
            s.record_exposures([("v", "video"), ("y", "x")], ts=1)
        with pytest.raises(ValueError, match=r"^ts"):
            s.record_exposures([("v", "video")], ts=math.nan)
        assert s.exposure_counts(["video"]).tolist() == [20]


def check_item_memo(s: HistoryStore) -> None:
    """Every item the store remembers is as the file has it (vector, version, sequence number, refs), and
    so are the remembered tallies."""
    for (source, item_id), hit in s.memos.known.items():
        row = s.db.execute(
            "SELECT vector, embedding_version, seq, refs FROM items WHERE source = ? AND item_id = ?", (source, item_id)
        ).fetchone()
        assert row == hit, (source, item_id)
    if s.memos.tallies is not None:
        stored = s.db.execute("SELECT source, kind, rows, total FROM tallies").fetchall()
        assert s.memos.tallies == {(src, kind): [rows, total] for src, kind, rows, total in stored}


def test_tallies_match_full_counts_after_random_writes(tmp_path):
    rng = np.random.default_rng(0)
    with HistoryStore(tmp_path / "h.db", retention_per_source=6, prune_every=3) as s:
        s.set_embedding_version("e1")
        for step in range(150):
            source, item = str(rng.choice(["video", "article"])), f"i{rng.integers(12)}"
            dim = 4 if source == "video" else 3
            op = rng.integers(6)
            if op == 0:  # ids may repeat within the batch
                s.cache_items(source, [(f"i{j}", vec(j + step % 2, dim)) for j in rng.integers(12, size=3)], "e1")
            elif op == 1:
                s.record(click(item, source, ts=float(rng.integers(50)), vector=vec(step, dim) if step % 3 else None))
            elif op == 2:
                s.record(click(item, source, ts=float(step), action="impression"))
            elif op == 3:
                s.record_exposures([(item, source)], ts=step)
            elif op == 4:  # two events of one item with vectors in one write
                s.record_many([click(item, source, ts=float(step), vector=vec(step + k, dim)) for k in range(2)])
            else:  # a batch longer than one IN (...) list: 600 items, some cached, some clicked
                ids = [f"i{j}" for j in range(12)] + [f"b{step}_{j}" for j in range(588)]
                s.cache_sources({source: (ids, np.stack([vec(step + j % 5, dim) for j in range(600)]))}, "e1")
            check_tallies(s)
            check_item_memo(s)


def test_prune_statements_walk_indexes(tmp_path):
    with HistoryStore(tmp_path / "h.db") as s:
        for kind, sql in PRUNE_SQL.items():
            plan = [row[3] for row in s.db.execute("EXPLAIN QUERY PLAN " + sql, {"source": "video", "excess": 5})]
            assert not any("SCAN" in p or "TEMP B-TREE" in p for p in plan), (kind, plan)
            assert any(
                re.search(r"USING (COVERING )?INDEX (behaviors_last|exposures_source|items_free)", p) for p in plan
            ), (kind, plan)


def _steps(s: HistoryStore, call) -> int:
    """SQLite virtual machine steps (in 10s) one call takes: a cost measure that load does not change."""
    steps = [0]

    def count():
        steps[0] += 1

    s.db.conn.set_progress_handler(count, 10)
    try:
        call()
    finally:
        s.db.conn.set_progress_handler(None, 10)
    return steps[0]


def _write_steps_at_the_bound(path, keep: int) -> dict[str, int]:
    with HistoryStore(path, retention_per_source=keep, prune_every=1) as s:
        s.set_embedding_version("e1")
        s.record_many([click(f"v{i}", ts=i, vector=vec(i)) for i in range(keep + 1)])
        s.cache_items("video", [(f"free{i}", vec(i)) for i in range(keep)], "e1")
        s.record_exposures([(f"v{i}", "video") for i in range(keep + 1)], ts=0)
        steps = {
            "record": _steps(s, lambda: s.record(click("new", ts=1e9, vector=vec(1)))),
            "cache": _steps(s, lambda: s.cache_items("video", [(f"x{i}", vec(i)) for i in range(30)], "e1")),
            "exposures": _steps(s, lambda: s.record_exposures([(f"x{i}", "video") for i in range(5)], ts=1)),
        }
        stats = s.stats()  # every write pruned: the store is at its bound
        assert stats["behaviors"]["video"]["click"] == keep and stats["exposure_rows"]["video"] == keep
        assert stats["items"]["video"] == 2 * keep
        check_tallies(s)
    return steps


def test_pruning_cost_does_not_grow_with_stored_rows(tmp_path):
    small = _write_steps_at_the_bound(tmp_path / "small.db", 200)
    large = _write_steps_at_the_bound(tmp_path / "large.db", 2000)  # 10x the rows, about the same work
    for call in small:
        assert large[call] < 1.5 * small[call] + 10, (call, small, large)


def test_a_v1_file_migrates_keeping_history_and_exposure_counts(tmp_path):
    import sqlite_utils

    from device_runtime.store_schema import MIGRATIONS

    path = tmp_path / "v1.db"
    db = sqlite_utils.Database(path)
    MIGRATIONS[0](db)  # a file written by the v1 runtime: pruned exposures folded into meta
    db.conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [
            ("schema_version", 1),
            ("embedding_version", "e1"),
            ("dim:e1:video", 4),
            ("exposures_folded:video", 40),
            ("exposures_folded:ad", 7),
        ],
    )
    db.conn.executemany(  # updated_at order: i0 oldest ... i5 newest
        "INSERT INTO items (source, item_id, vector, dim, embedding_version, updated_at) VALUES (?, ?, ?, 4, 'e1', ?)",
        [("video", f"i{i}", vec(i).tobytes(), 100.0 - i if i < 3 else 100.0 + i) for i in range(6)],
    )
    db.conn.executemany(
        "INSERT INTO behaviors (ts, item_id, source, action) VALUES (?, ?, 'video', ?)",
        [(1.0, "i0", "click"), (2.0, "i0", "click"), (3.0, "i4", "impression")],
    )
    db.conn.executemany(
        "INSERT INTO exposures (ts, item_id, source) VALUES (0, ?, ?)",
        [("i1", "video"), ("i2", "video"), ("a1", "article")],
    )
    db.conn.commit()
    db.close()

    with HistoryStore(path, retention_per_source=3, prune_every=1) as s:
        assert s.schema_version == len(MIGRATIONS) == 3
        assert s.exposure_counts(["video", "article", "ad"]).tolist() == [42, 1, 7]
        assert s.db.execute("SELECT count(*) FROM meta WHERE key LIKE 'exposures%'").fetchone() == (0,)
        assert [i for i, _ in s.last_clicks(["video"], 5)[0]] == ["i0", "i0"]
        check_tallies(s)
        # unreferenced by age: i2, i1 (older), i3, i5; i0 and i4 are referenced
        s.cache_items("video", [("new", vec(9))], "e1")  # 5 unreferenced > 3: the 2 oldest go
        assert item_ids(s) == {"i0", "i4", "i3", "i5", "new"}
        s.record_exposures([("new", "video")], ts=1)
        assert s.exposure_counts(["video"]).tolist() == [43]
        check_tallies(s)


# -- WAL checkpoints ------------------------------------------------------------------------------
def test_checkpoints_run_in_a_background_thread_and_bound_the_wal(tmp_path):
    import threading
    import time

    from device_runtime.checkpointer import BACKSTOP_PAGES

    path = tmp_path / "h.db"
    with HistoryStore(path, checkpoint_every=10) as s:
        assert s.db.execute("PRAGMA wal_autocheckpoint").fetchone() == (BACKSTOP_PAGES,)
        for i in range(1000):  # bursts of writes with pauses, as on a device
            s.record_exposures([(f"v{i}", "video")], ts=i)
            if i % 20 == 19:
                time.sleep(0.05)
        assert s.checkpointer.checkpoints >= 10 and s.checkpointer.error is None
        # the log restarts after a pause: without the checkpoints these commits grow the WAL far past this bound
        assert (tmp_path / "h.db-wal").stat().st_size < 2_000_000
        assert s.exposure_counts(["video"]).tolist() == [1000]
    assert not [t for t in threading.enumerate() if t.name.startswith("checkpoint h.db")]
    with HistoryStore(path, checkpoint_every=None) as s:
        assert s.db.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)  # SQLite's own
    with pytest.raises(ValueError, match="checkpoint_every must be an int >= 1"):
        HistoryStore(path, checkpoint_every=0)
