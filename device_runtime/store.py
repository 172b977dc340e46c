"""The device's SQLite history store: behaviours, cached item vectors and exposures (sqlite-utils).

    with HistoryStore("history.db", sources=["video", "article"]) as store:
        store.cache_items("video", [("v1", vector)], embedding_version="e7")
        store.record(BehaviorEvent(item_id="v1", source="video", action="click", ts=time.time()))
        history = store.last_clicks(["video", "article"], t=20)  # [[("v1", f32 array)], []]
        shown = store.exposure_counts(["video", "article"])      # array([0, 0])

Tables: `items` (source, item_id) -> float32 vector blob + embedding version; `behaviors` (autoincrement
id, ts, item_id, source, action); `exposures` (ts, item_id, source, request_id); `meta` (key, value):
schema version, current embedding version, known vector dims, exposure counts folded away by pruning.

Durability: WAL with `synchronous=NORMAL`. A transaction is in the WAL file once `COMMIT` returns, so a
behaviour whose `record` returned survives a kill of the process (SIGKILL, app killed by the OS); only an
OS crash or power cut can lose the last few commits (never corrupt the file). Pass `synchronous="FULL"`
to survive those too, at one fsync per write. Concurrency: one `HistoryStore` per thread or process,
any number of them on one file; writes take the lock up front (`BEGIN IMMEDIATE`) and every connection
waits up to `busy_timeout_ms`, so callers do not see `database is locked`.

Retention: per source, the newest `retention_per_source` clicks and as many impressions (ordered by
ts, then id), the newest `retention_per_source` exposures (the pruned ones stay counted), and the
newest `retention_per_source` cached items plus every item a kept behaviour refers to. Pruning runs
inside a write transaction every `prune_every` written rows (default: a tenth of the retention; a prune
costs about 1 ms per source at 1000 kept rows), so a table may exceed the bound by that many rows.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import sqlite_utils

from shared_schema.messages import BehaviorEvent

ACTIONS = ("impression", "click")
VECTOR_DTYPE = np.dtype("<f4")
"""Vectors are stored as little-endian float32 blobs."""


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
    db["behaviors"].create_index(  # covers the last-clicks read: no table lookups
        ["source", "action", sqlite_utils.db.DescIndex("ts"), sqlite_utils.db.DescIndex("id"), "item_id"],
        index_name="behaviors_last",
    )
    db["exposures"].create_index(["source"], index_name="exposures_source")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1_initial_schema]
"""Schema migrations in order; a file at schema version v gets MIGRATIONS[v:] applied on open."""


LAST_CLICKS_SQL = """SELECT b.item_id, i.vector
  FROM behaviors AS b CROSS JOIN items AS i ON i.source = b.source AND i.item_id = b.item_id
  WHERE b.source = ? AND b.action = 'click'
    AND i.embedding_version = (SELECT value FROM meta WHERE key = 'embedding_version')
  ORDER BY b.ts DESC, b.id DESC LIMIT ?"""
"""Newest clicks of one source with current vectors; parameters (source, t). CROSS JOIN keeps
`behaviors` (read in index order, stopping after t rows) as the outer loop."""


_PRUNE_BEHAVIORS = """DELETE FROM behaviors WHERE source = :s AND action = :a AND (ts, id) <
  (SELECT ts, id FROM behaviors WHERE source = :s AND action = :a ORDER BY ts DESC, id DESC
   LIMIT 1 OFFSET :keep - 1)"""
_PRUNE_ITEMS = """DELETE FROM items WHERE source = :s
  AND item_id NOT IN (SELECT item_id FROM behaviors WHERE source = :s)
  AND item_id NOT IN (SELECT item_id FROM items WHERE source = :s ORDER BY updated_at DESC LIMIT :keep)"""
_EXPOSURE_CUTOFF = "SELECT id FROM exposures WHERE source = ? ORDER BY id DESC LIMIT 1 OFFSET ? - 1"
_ADD_TO_META = """INSERT INTO meta (key, value) VALUES (?, ?)
  ON CONFLICT (key) DO UPDATE SET value = value + excluded.value"""
_SET_META = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
_UPSERT_ITEM = """INSERT INTO items (source, item_id, vector, dim, embedding_version, updated_at)
  VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source, item_id) DO UPDATE SET vector = excluded.vector,
  dim = excluded.dim, embedding_version = excluded.embedding_version, updated_at = excluded.updated_at"""


def _vector(value: object, field: str) -> np.ndarray:
    """`value` as a finite, non-empty 1-D little-endian float32 array, else ValueError naming `field`."""
    try:
        vec = np.asarray(value, dtype=VECTOR_DTYPE)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field}: not a vector of floats ({exc})") from None
    if vec.ndim != 1 or vec.size == 0:
        raise ValueError(f"{field}: expected a non-empty 1-D vector, got shape {vec.shape}")
    if not np.isfinite(vec).all():
        raise ValueError(f"{field}: holds NaN or infinite values (or values beyond float32); send finite floats")
    return vec


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field}: expected a non-empty string, got {value!r}")
    return value


def _finite(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{field}: expected a finite number of seconds, got {value!r}")
    return float(value)


class HistoryStore:
    """Behaviour history, item vector cache and exposure log of one device user in one SQLite file.

    `sources`: if given, every source name is checked against it. `dims`: fixed vector width per
    source; otherwise the first vector cached for a source under an embedding version fixes its width.
    """

    def __init__(
        self,
        path: str | Path,
        retention_per_source: int = 1000,
        *,
        sources: Sequence[str] | None = None,
        dims: dict[str, int] | None = None,
        prune_every: int | None = None,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 10_000,
    ) -> None:
        if retention_per_source < 1:
            raise ValueError(f"retention_per_source must be >= 1, got {retention_per_source}")
        prune_every = max(1, retention_per_source // 10) if prune_every is None else prune_every
        if prune_every < 1:
            raise ValueError(f"prune_every must be >= 1, got {prune_every}")
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be NORMAL, FULL or EXTRA, got {synchronous!r}")
        self.path = Path(path)
        self.retention = retention_per_source
        self.prune_every = prune_every
        self.sources = tuple(sources) if sources is not None else None
        self._dims = dict(dims or {})
        for s in self._dims:
            self._check_source(s, "dims")
        self._writes = 0
        self._touched: set[str] = set()
        self.db = _open(self.path, synchronous.upper(), busy_timeout_ms)
        try:
            self._migrate()
        except BaseException:
            self.db.close()
            raise

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return _schema_version(self.db.conn)

    def _migrate(self) -> None:
        if _schema_version(self.db.conn) == len(MIGRATIONS):
            return
        with self._write() as conn:  # re-read under the write lock: another process may have migrated
            start = _schema_version(conn)
            if start > len(MIGRATIONS):
                raise ValueError(
                    f"{self.path}: store schema version {start} is newer than this runtime's "
                    f"{len(MIGRATIONS)}; upgrade device_runtime or open another file"
                )
            for version in range(start, len(MIGRATIONS)):
                fn = MIGRATIONS[version]
                try:
                    fn(self.db)
                except sqlite3.Error as exc:
                    raise ValueError(
                        f"{self.path}: migration {version + 1} ({fn.__name__}) failed: {exc}; the file "
                        f"was left at schema version {start}. Is it a history store?"
                    ) from exc
                conn.execute(_SET_META, ("schema_version", version + 1))

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock first (no deadlock between two writers)."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # some errors (disk full...) have already rolled back
                conn.execute("ROLLBACK")
            raise

    # -- validation ------------------------------------------------------------------------------
    def _check_source(self, source: object, field: str) -> str:
        _text(source, field)
        if self.sources is not None and source not in self.sources:
            raise ValueError(f"{field}: unknown source {source!r}; this store's sources are {list(self.sources)}")
        return source  # type: ignore[return-value]

    def _check_dim(self, conn: sqlite3.Connection, source: str, version: str, dim: int, field: str) -> None:
        """The first vector of a source under a version fixes its width (in `meta`); `dims` too."""
        key = f"dim:{version}:{source}"
        stored = _meta(conn, key)
        for known in (self._dims.get(source), stored):
            if known is not None and dim != known:
                raise ValueError(
                    f"{field}: vector has {dim} values but source {source!r} uses {known} "
                    f"(embedding version {version!r}); send vectors of the bundle's width"
                )
        if stored is None:
            conn.execute(_SET_META, (key, dim))

    def _check_event(self, event: object, field: str) -> tuple[BehaviorEvent, np.ndarray | None, str]:
        if not isinstance(event, BehaviorEvent):
            raise ValueError(f"{field}: expected a BehaviorEvent, got {type(event).__name__}")
        _text(event.item_id, f"{field}.item_id")
        self._check_source(event.source, f"{field}.source")
        if event.action not in ACTIONS:
            raise ValueError(f"{field}.action: unknown action {event.action!r}; use one of {list(ACTIONS)}")
        _finite(event.ts, f"{field}.ts")
        vec = None if event.vector is None else _vector(event.vector, f"{field}.vector")
        return event, vec, field

    # -- writes ----------------------------------------------------------------------------------
    def record(self, event: BehaviorEvent) -> int:
        """Store one behaviour (and its item vector, if the event carries one); returns its id."""
        return self._record([self._check_event(event, "event")])[0]

    def record_many(self, events: Sequence[BehaviorEvent]) -> list[int]:
        """Store behaviours in one transaction (all or none); returns their ids in order."""
        return self._record([self._check_event(e, f"events[{i}]") for i, e in enumerate(events)])

    def _record(self, checked: list[tuple[BehaviorEvent, np.ndarray | None, str]]) -> list[int]:
        ids = []
        with self._write() as conn:
            version = _meta(conn, "embedding_version")
            for event, vec, field in checked:
                if vec is not None:
                    if version is None:
                        raise ValueError(
                            f"{field}.vector: the store has no embedding version yet; call "
                            "cache_items(...) or set_embedding_version(...) first"
                        )
                    self._put_items(conn, event.source, [(event.item_id, vec)], version, f"{field}.vector")
                cur = conn.execute(
                    "INSERT INTO behaviors (ts, item_id, source, action) VALUES (?, ?, ?, ?)",
                    (float(event.ts), event.item_id, event.source, event.action),
                )
                ids.append(cur.lastrowid)
            self._wrote(conn, {e.source for e, _, _ in checked}, len(checked))
        return ids

    def cache_items(self, source: str, items: Sequence[tuple[str, object]], embedding_version: str) -> int:
        """Upsert item vectors of one source; `embedding_version` becomes the store's current one."""
        self._check_source(source, "source")
        _text(embedding_version, "embedding_version")
        rows = [
            (_text(item_id, f"items[{i}].item_id"), _vector(vec, f"items[{i}].vector"))
            for i, (item_id, vec) in enumerate(items)
        ]
        with self._write() as conn:
            conn.execute(_SET_META, ("embedding_version", embedding_version))
            self._put_items(conn, source, rows, embedding_version, "items[{}].vector")
            self._wrote(conn, {source}, len(rows))
        return len(rows)

    def set_embedding_version(self, embedding_version: str) -> None:
        """Make `embedding_version` current: only vectors cached under it count as history."""
        _text(embedding_version, "embedding_version")
        with self._write() as conn:
            conn.execute(_SET_META, ("embedding_version", embedding_version))

    def _put_items(
        self, conn: sqlite3.Connection, source: str, rows: list[tuple[str, np.ndarray]], version: str, field: str
    ) -> None:
        now = time.time()
        for i, (_, vec) in enumerate(rows):
            self._check_dim(conn, source, version, vec.size, field.format(i))
        conn.executemany(
            _UPSERT_ITEM, [(source, item_id, vec.tobytes(), vec.size, version, now) for item_id, vec in rows]
        )

    def record_exposures(self, items: Sequence[tuple[str, str]], ts: float, request_id: str = "") -> int:
        """Log the items shown to the user, as (item_id, source) pairs; returns how many."""
        ts = _finite(ts, "ts")
        if not isinstance(request_id, str):
            raise ValueError(f"request_id: expected a string, got {request_id!r}")
        rows = [
            (ts, _text(item_id, f"items[{i}].item_id"), self._check_source(source, f"items[{i}].source"), request_id)
            for i, (item_id, source) in enumerate(items)
        ]
        with self._write() as conn:
            conn.executemany("INSERT INTO exposures (ts, item_id, source, request_id) VALUES (?, ?, ?, ?)", rows)
            self._wrote(conn, {r[2] for r in rows}, len(rows))
        return len(rows)

    def _wrote(self, conn: sqlite3.Connection, sources: set[str], rows: int) -> None:
        self._touched |= sources
        self._writes += rows
        if self._writes >= self.prune_every:
            for source in sorted(self._touched):
                self._prune(conn, source)
            self._writes, self._touched = 0, set()

    def _prune(self, conn: sqlite3.Connection, source: str) -> None:
        keep = self.retention
        for action in ACTIONS:
            conn.execute(_PRUNE_BEHAVIORS, {"s": source, "a": action, "keep": keep})
        conn.execute(_PRUNE_ITEMS, {"s": source, "keep": keep})
        cutoff = conn.execute(_EXPOSURE_CUTOFF, (source, keep)).fetchone()
        if cutoff is not None:
            gone = conn.execute("DELETE FROM exposures WHERE source = ? AND id < ?", (source, cutoff[0])).rowcount
            conn.execute(_ADD_TO_META, (f"exposures_folded:{source}", gone))

    # -- reads -----------------------------------------------------------------------------------
    @property
    def embedding_version(self) -> str | None:
        return _meta(self.db.conn, "embedding_version")

    def last_clicks(self, sources: Sequence[str], t: int) -> list[list[tuple[str, np.ndarray]]]:
        """Per source, the newest-first (item_id, float32 vector) of at most `t` clicked items whose
        vectors are cached under the current embedding version (others are skipped, not padded)."""
        for i, s in enumerate(sources):
            self._check_source(s, f"sources[{i}]")
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"t: expected an int >= 0, got {t!r}")
        conn = self.db.conn
        conn.execute("BEGIN")  # one snapshot for all sources
        try:
            rows = [conn.execute(LAST_CLICKS_SQL, (s, t)).fetchall() for s in sources]
        finally:
            conn.execute("COMMIT")
        return [_split(source_rows) for source_rows in rows]

    def exposure_counts(self, sources: Sequence[str]) -> np.ndarray:
        """Items shown to this user so far, per source (int64), including pruned exposure rows."""
        counts = np.zeros(len(sources), dtype=np.int64)
        for i, s in enumerate(sources):
            self._check_source(s, f"sources[{i}]")
            counts[i] = self.db.conn.execute(
                "SELECT (SELECT count(*) FROM exposures WHERE source = ?)"
                " + coalesce((SELECT value FROM meta WHERE key = ?), 0)",
                (s, f"exposures_folded:{s}"),
            ).fetchone()[0]
        return counts

    def stale_items(self, embedding_version: str | None = None) -> list[tuple[str, str]]:
        """(source, item_id) of cached items whose vector is not of `embedding_version` (default: current)."""
        version = embedding_version if embedding_version is not None else self.embedding_version
        rows = self.db.conn.execute(
            "SELECT source, item_id FROM items WHERE embedding_version IS NOT ? ORDER BY source, item_id",
            (version,),
        )
        return [tuple(r) for r in rows]

    def stats(self) -> dict:
        """Row counts per table and source, file size in bytes (db + WAL), schema and embedding versions."""
        conn = self.db.conn
        behaviors: dict[str, dict[str, int]] = {}
        for source, action, n in conn.execute("SELECT source, action, count(*) FROM behaviors GROUP BY 1, 2"):
            behaviors.setdefault(source, {a: 0 for a in ACTIONS})[action] = n
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return {
            "schema_version": self.schema_version,
            "embedding_version": self.embedding_version,
            "journal_mode": self.db.journal_mode,
            "file_bytes": size,
            "rows": {name: self.db[name].count for name in ("items", "behaviors", "exposures", "meta")},
            "behaviors": behaviors,
            "items": dict(conn.execute("SELECT source, count(*) FROM items GROUP BY 1").fetchall()),
            "exposure_rows": dict(conn.execute("SELECT source, count(*) FROM exposures GROUP BY 1").fetchall()),
        }


def _split(rows: list[tuple[str, bytes]]) -> list[tuple[str, np.ndarray]]:
    """(item_id, vector) pairs; the vectors are views of one array (a source's vectors share a width)."""
    if not rows:
        return []
    vectors = np.frombuffer(b"".join(blob for _, blob in rows), dtype=VECTOR_DTYPE).reshape(len(rows), -1)
    return [(item_id, v) for (item_id, _), v in zip(rows, vectors)]


def _meta(conn: sqlite3.Connection, key: str) -> object:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def _schema_version(conn: sqlite3.Connection) -> int:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
        return 0
    return int(_meta(conn, "schema_version") or 0)


def _open(path: Path, synchronous: str, busy_timeout_ms: int) -> sqlite_utils.Database:
    """Connect in autocommit mode (transactions are explicit), WAL, with a busy timeout."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: folder {path.parent} does not exist; create it or choose another path")
    db = sqlite_utils.Database(path, execute_plugins=False)
    db.conn.isolation_level = None
    try:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        db.enable_wal()
        db.execute(f"PRAGMA synchronous = {synchronous}")
    except sqlite3.DatabaseError as exc:
        db.close()
        raise ValueError(f"{path}: not a usable SQLite database ({exc}); pass a history store or a new file") from exc
    return db
