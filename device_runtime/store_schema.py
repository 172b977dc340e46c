"""The history store's SQLite schema, as migrations applied in order by `HistoryStore` on open.

    from device_runtime.store_schema import MIGRATIONS
    MIGRATIONS[v:]  # what a file at schema version v still needs (each takes a sqlite_utils.Database)

Tables (version 3):
- `items` (source, item_id) -> float32 vector blob, dim, embedding_version, updated_at; `seq`, the
  item's stamp: the source's cache sequence number given when it was first cached, and again when it is
  cached after R/2 newer items; `refs`, how many stored behaviours refer to the item (kept by triggers;
  `items_free` indexes the unreferenced ones by age);
- `behaviors` (autoincrement id, ts, item_id, source, action);
- `exposures` (id, ts, item_id, source, request_id);
- `tallies` (source, kind) -> rows, total, kept in the writing transaction: behaviours by triggers,
  exposures and unreferenced items by the store's writes and prunes, one statement per source and
  write (`TALLY_ADD_SQL`, `HistoryStore._put_items`, `HistoryStore._prune`). kind `click`,
  `impression`, `exposure`: rows stored now, total ever written; kind `item`: rows = unreferenced
  cached items, total = the last cache sequence number handed out;
- `meta` (key, value): schema version, current embedding version, vector width per source and version.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils


def _v1_initial_schema(db: sqlite_utils.Database) -> None:
    for sql in (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value)",
        """CREATE TABLE items (source TEXT NOT NULL, item_id TEXT NOT NULL, vector BLOB NOT NULL,
           dim INTEGER NOT NULL, embedding_version TEXT NOT NULL, updated_at REAL NOT NULL,
           PRIMARY KEY (source, item_id)) WITHOUT ROWID""",
        """CREATE TABLE behaviors (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,
           item_id TEXT NOT NULL, source TEXT NOT NULL,
           action TEXT NOT NULL CHECK (action IN ('impression', 'click')))""",
        "CREATE TABLE exposures (id INTEGER PRIMARY KEY, ts REAL NOT NULL, item_id TEXT NOT NULL,"
        " source TEXT NOT NULL, request_id TEXT NOT NULL DEFAULT '')",
    ):
        db.execute(sql)
    db.table("behaviors").create_index(  # covers the last-clicks read: no table lookups
        ["source", "action", sqlite_utils.db.DescIndex("ts"), sqlite_utils.db.DescIndex("id"), "item_id"],
        index_name="behaviors_last",
    )
    db.table("exposures").create_index(["source"], index_name="exposures_source")


_COUNT = """INSERT INTO tallies (source, kind, rows, total) VALUES ({}, {}, {}, {})
  ON CONFLICT (source, kind) DO UPDATE SET rows = rows + excluded.rows, total = total + excluded.total;"""


def _trigger(name: str, event: str, body: str, when: str = "") -> str:
    return f"CREATE TRIGGER {name} AFTER {event} {when} BEGIN {body} END"


_V2_TRIGGERS = (
    _trigger(
        "behaviors_added",
        "INSERT ON behaviors",
        _COUNT.format("NEW.source", "NEW.action", 1, 1)
        + " UPDATE items SET refs = refs + 1 WHERE source = NEW.source AND item_id = NEW.item_id;",
    ),
    _trigger(
        "behaviors_removed",
        "DELETE ON behaviors",
        _COUNT.format("OLD.source", "OLD.action", -1, 0)
        + " UPDATE items SET refs = refs - 1 WHERE source = OLD.source AND item_id = OLD.item_id;",
    ),
    _trigger("exposures_added", "INSERT ON exposures", _COUNT.format("NEW.source", "'exposure'", 1, 1)),
    _trigger("exposures_removed", "DELETE ON exposures", _COUNT.format("OLD.source", "'exposure'", -1, 0)),
    _trigger("items_added", "INSERT ON items", _COUNT.format("NEW.source", "'item'", 1, 0), "WHEN NEW.refs = 0"),
    _trigger("items_removed", "DELETE ON items", _COUNT.format("OLD.source", "'item'", -1, 0), "WHEN OLD.refs = 0"),
    _trigger(
        "items_referenced",
        "UPDATE OF refs ON items",
        _COUNT.format("NEW.source", "'item'", "(NEW.refs = 0) - (OLD.refs = 0)", 0),
        "WHEN (OLD.refs = 0) <> (NEW.refs = 0)",
    ),
)
"""Keep `tallies` and `items.refs` in step with every insert and delete, in the same transaction."""


def _v2_tallies(db: sqlite_utils.Database) -> None:
    """Tallies and reference counts kept by triggers, so exposure counts cost O(sources) and pruning
    deletes only what a write pushed over the bound; the v1 folded exposure counts move into tallies."""
    conn = db.conn
    for sql in (
        """CREATE TABLE tallies (source TEXT NOT NULL,
           kind TEXT NOT NULL CHECK (kind IN ('click', 'impression', 'exposure', 'item')),
           rows INTEGER NOT NULL, total INTEGER NOT NULL, PRIMARY KEY (source, kind)) WITHOUT ROWID""",
        "ALTER TABLE items ADD COLUMN seq INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE items ADD COLUMN refs INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX behaviors_item ON behaviors (source, item_id)",
        """UPDATE items SET refs = (SELECT count(*) FROM behaviors AS b
           WHERE b.source = items.source AND b.item_id = items.item_id)""",
        "CREATE INDEX items_free ON items (source, seq) WHERE refs = 0",
        """INSERT INTO tallies (source, kind, rows, total)
           SELECT source, action, count(*), count(*) FROM behaviors GROUP BY source, action""",
    ):
        conn.execute(sql)
    order = conn.execute("SELECT source, item_id FROM items ORDER BY source, updated_at, item_id").fetchall()
    seq: dict[str, int] = {}
    for source, item_id in order:  # oldest first, 1, 2, ... per source
        seq[source] = seq.get(source, 0) + 1
        conn.execute("UPDATE items SET seq = ? WHERE source = ? AND item_id = ?", (seq[source], source, item_id))
    conn.executemany(
        "INSERT INTO tallies (source, kind, rows, total) VALUES (?, 'item', ?, ?)",
        [(s, free, seq[s]) for s, free in conn.execute("SELECT source, sum(refs = 0) FROM items GROUP BY source")],
    )
    shown = dict(conn.execute("SELECT source, count(*) FROM exposures GROUP BY source").fetchall())
    folded = {
        key[len("exposures_folded:") :]: int(value)
        for key, value in conn.execute("SELECT key, value FROM meta WHERE substr(key, 1, 17) = 'exposures_folded:'")
    }
    conn.executemany(
        "INSERT INTO tallies (source, kind, rows, total) VALUES (?, 'exposure', ?, ?)",
        [(s, shown.get(s, 0), shown.get(s, 0) + folded.get(s, 0)) for s in sorted(shown.keys() | folded.keys())],
    )
    conn.execute("DELETE FROM meta WHERE substr(key, 1, 17) = 'exposures_folded:'")
    for trigger in _V2_TRIGGERS:  # one by one: executescript would COMMIT the migration's transaction
        conn.execute(trigger)


TALLY_ADD_SQL = "UPDATE tallies SET rows = rows + ?1, total = total + ?2 WHERE source = ?3 AND kind = ?4"
"""Add (rows, total) to the tally of (source, kind) that exists: one statement per source and kind of a
write, in its transaction, instead of a trigger per row (an update is a third of an upsert's cost)."""
TALLY_NEW_SQL = _COUNT.format("?3", "?4", "?1", "?2")
"""`TALLY_ADD_SQL` for a tally that may not exist yet (an upsert)."""


def _v3_counted_per_write(db: sqlite_utils.Database) -> None:
    """The per-row insert and delete triggers of exposures and items give way to one tally write per
    source and write, done by the store: they were about a third of the cost of writing a page's
    exposures and a large part of caching (and pruning) its new item vectors."""
    for trigger in ("exposures_added", "exposures_removed", "items_added", "items_removed"):
        db.conn.execute(f"DROP TRIGGER {trigger}")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1_initial_schema,
    _v2_tallies,
    _v3_counted_per_write,
]
"""Schema migrations in order; a file at schema version v gets MIGRATIONS[v:] applied on open."""
