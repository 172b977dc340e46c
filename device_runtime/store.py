"""The device's SQLite history store: behaviours, cached item vectors and exposures (sqlite-utils).

    with HistoryStore("history.db", sources=["video", "article"]) as store:
        store.cache_items("video", [("v1", vector)], embedding_version="e7")
        store.record(BehaviorEvent(item_id="v1", source="video", action="click", ts=time.time()))
        history = store.last_clicks(["video", "article"], t=20)  # [[("v1", f32 array)], []]
        shown = store.exposure_counts(["video", "article"])      # array([0, 0])

Tables (see `device_runtime.store_schema`): `items` (source, item_id) -> float32 vector blob and its
embedding version; `behaviors` (autoincrement id, ts, item_id, source, action); `exposures` (ts,
item_id, source, request_id); `tallies` (per source: rows stored and ever written, kept in each writing transaction);
`meta` (key, value): schema version, current embedding version, known vector dims.

Durability: WAL with `synchronous=NORMAL`. A transaction is in the WAL file once `COMMIT` returns, so a
behaviour whose `record` returned survives a kill of the process (SIGKILL, app killed by the OS); only an
OS crash or power cut can lose the last few commits (never corrupt the file). Pass `synchronous="FULL"`
to survive those too, at one fsync per write. Concurrency: one `HistoryStore` per thread or process,
any number of them on one file; writes take the lock up front (`BEGIN IMMEDIATE`) and every connection
waits up to `busy_timeout_ms`, so callers do not see `database is locked`. WAL checkpoints (copying the
log back into the file, with its fsyncs) run in a background thread every `checkpoint_every` commits
(`device_runtime.checkpointer`), not inside a write unless writes come without a pause for thousands
of pages; `checkpoint_every=None` leaves them to SQLite (inside the write that fills 1000 pages).

Retention, per source: the newest `retention_per_source` (R) clicks and as many impressions (ordered
by ts, then id), the newest R exposure rows (all exposures ever recorded stay counted), and every item
a kept behaviour refers to plus the R most recently cached other items. A write that takes one of
these to R + `prune_every` rows deletes that kind's oldest rows down to R (tallies say how many,
indexes find them): after every write each holds fewer than R + `prune_every` rows (default 1: at most
R), and pruning costs O(rows written), not O(rows stored). A larger `prune_every` prunes in batches
(less work per row, a longer write now and then); a smaller R than the file was kept at is applied,
once, by the next write. Caching items already cached with the same vector and version writes
nothing (one read per source, no write transaction). "Most recently cached" goes by each item's stamp
(its cache sequence number): an item is stamped when first cached and re-stamped when cached again
(same vector or not) once R/2 items have been cached after it, so an item still being shown is not
pruned; a new vector for a recently stamped item keeps its stamp (its index entry is not rewritten).

Read memos (`device_runtime.store_memos`): what this store last read of the item cache, the last clicks
and the tallies is kept in memory and reused until the file changes. A page whose items were all seen
before then costs no read of the items, and `last_clicks` without a new click (or after new vectors
of items without behaviours) costs no join.

A reranked page writes once: `page()` opens one write transaction, lazily, for the page's new item
vectors and its exposures, and commits it before the rerank returns, so a crash loses at most the
exposures of a page whose rerank had not returned. Values reach the store checked by
`device_runtime.validation`; the public methods check theirs there, the page writer trusts its caller.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import sqlite_utils

from device_runtime.checkpointer import BACKSTOP_PAGES, Checkpointer
from device_runtime.store_memos import UNREAD, ReadMemos
from device_runtime.store_schema import MIGRATIONS, TALLY_ADD_SQL, TALLY_NEW_SQL
from device_runtime.validation import (
    ACTIONS,
    VECTOR_DTYPE,
    CheckedEvent,
    check_event,
    finite_seconds,
    matrix,
    text,
    vector,
)
from device_runtime.validation import source as checked_source
from shared_schema.messages import BehaviorEvent

LAST_CLICKS_SQL = """SELECT b.item_id, i.vector
  FROM behaviors AS b CROSS JOIN items AS i ON i.source = b.source AND i.item_id = b.item_id
  WHERE b.source = ? AND b.action = 'click'
    AND i.embedding_version = (SELECT value FROM meta WHERE key = 'embedding_version')
  ORDER BY b.ts DESC, b.id DESC LIMIT ?"""
"""Newest clicks of one source with current vectors; parameters (source, t). CROSS JOIN keeps
`behaviors` (read in index order, stopping after t rows) as the outer loop."""

PRUNE_SQL = {
    **{
        action: f"""DELETE FROM behaviors WHERE id IN (SELECT id FROM behaviors
         WHERE source = :source AND action = '{action}' ORDER BY ts, id LIMIT :excess)"""
        for action in ACTIONS
    },
    "exposure": """DELETE FROM exposures WHERE id IN (SELECT id FROM exposures WHERE source = :source
      ORDER BY id LIMIT :excess)""",
    "item": """DELETE FROM items WHERE source = :source AND item_id IN (SELECT item_id FROM items
      WHERE source = :source AND refs = 0 ORDER BY seq LIMIT :excess)""",
}
"""Per tally kind, delete a source's `excess` oldest rows (items: unreferenced ones) by an index walk."""

_PRUNED = "UPDATE tallies SET rows = rows - ? WHERE source = ? AND kind = ?"
_OVER_BOUND = "SELECT source, kind, rows - :keep FROM tallies WHERE rows >= :keep + :every"
_SET_META = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
_UPSERT_ITEM = """INSERT INTO items (source, item_id, vector, dim, embedding_version, updated_at, seq, refs)
  VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?9)
  ON CONFLICT (source, item_id) DO UPDATE SET vector = excluded.vector, dim = excluded.dim,
    embedding_version = excluded.embedding_version, updated_at = excluded.updated_at,
    seq = CASE WHEN items.seq <= ?8 THEN excluded.seq ELSE items.seq END
  WHERE items.vector IS NOT excluded.vector OR items.embedding_version IS NOT excluded.embedding_version
    OR items.seq <= ?8"""
"""Insert an item (?9: how many stored behaviours refer to it), or rewrite it when its vector or version
changed or its sequence number is <= ?8 (aged); only an aged item takes the new sequence number ?7."""
_REWRITE_ITEM = """UPDATE items SET vector = ?3, dim = ?4, embedding_version = ?5, updated_at = ?6
  WHERE source = ?1 AND item_id = ?2 AND (vector IS NOT ?3 OR embedding_version IS NOT ?5)"""
"""A new vector or version for an item known to be cached and not aged (an unchanged one is not
rewritten): it keeps its sequence number, so its `items_free` entry is not rewritten (a third of the
write's cost)."""
_CACHED_SQL = "SELECT item_id, vector, embedding_version, seq, refs FROM items WHERE source = ? AND item_id IN ({})"
_CHECK_AT_MOST = 500
"""`cache_items` batches up to this long are first checked against the cache with one query."""
_EXISTING_SQL = "SELECT item_id, refs FROM items WHERE source = ? AND item_id IN ({})"
_BEHAVIOURS_SQL = "SELECT item_id, count(*) FROM behaviors WHERE source = ? AND item_id IN ({}) GROUP BY item_id"


ItemRow = tuple[str, bytes, str]
"""A checked item vector to cache: (item_id, its float32 values as bytes (`row_bytes`), the field to name
in errors)."""
_ITEM_BYTES = VECTOR_DTYPE.itemsize


def row_bytes(vectors: np.ndarray) -> list[bytes]:
    """Each row of a float32 [k, d] array as bytes (one copy of the array, then slices)."""
    blob, step = vectors.tobytes(), vectors.shape[1] * _ITEM_BYTES
    if not step:
        return [b""] * vectors.shape[0]
    return [blob[i : i + step] for i in range(0, len(blob), step)]


class HistoryStore:
    """Behaviour history, item vector cache and exposure log of one device user in one SQLite file.

    `sources`: if given, every source name is checked against it. `dims`: fixed vector width per
    source; otherwise the first vector cached for a source under an embedding version fixes its width.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        retention_per_source: int = 1000,
        *,
        sources: Sequence[str] | None = None,
        dims: dict[str, int] | None = None,
        prune_every: int = 1,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 10_000,
        checkpoint_every: int | None = 50,
    ) -> None:
        for name, value in (("retention_per_source", retention_per_source), ("prune_every", prune_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be NORMAL, FULL or EXTRA, got {synchronous!r}")
        self.path = Path(path)
        self.retention, self.prune_every = retention_per_source, prune_every
        self.sources = tuple(sources) if sources is not None else None
        self._dims = dict(dims or {})
        for s in self._dims:
            self._check_source(s, "dims")
        self._widths: dict[str, int] = {}  # committed `dim:<version>:<source>` meta values (never change)
        self.memos = ReadMemos()
        self._page: sqlite3.Connection | None = None  # the open page transaction, if any
        self.db = _open(self.path, synchronous.upper(), busy_timeout_ms, autocheckpoint=checkpoint_every is None)
        self.checkpointer = (
            None if checkpoint_every is None else Checkpointer(self.path, checkpoint_every, busy_timeout_ms)
        )
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.close()
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
        """A write transaction that takes the write lock first (no deadlock between two writers), with
        the read memos checked under the lock. The caller drops the memos its write made stale
        (`_forget`, `ReadMemos.forget_after`); a rolled-back write drops them all."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            self.memos.check(conn)
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # some errors (disk full...) have already rolled back
                conn.execute("ROLLBACK")
            self._forget()
            raise
        if self.checkpointer is not None:
            self.checkpointer.committed()

    def _forget(self, items: bool = True, clicks: bool = True) -> None:
        self.memos.forget(items, clicks)

    def _version_memo(self) -> str | None:
        """The current embedding version, read once into its memo."""
        if self.memos.version is UNREAD:
            self.memos.version = _meta_text(self.db.conn, "embedding_version")
        return self.memos.version  # type: ignore[return-value]  # read above: str or None

    # -- validation ------------------------------------------------------------------------------
    def _check_source(self, source: object, field: str) -> str:
        return checked_source(source, field, self.sources)

    def _check_widths(self, conn: sqlite3.Connection, source: str, version: str, rows: list[ItemRow]) -> None:
        """All vectors of a source under a version share one width: `dims`, else the stored one (in
        `meta`), else the first vector's, which is then stored."""
        key = f"dim:{version}:{source}"
        stored = self._widths.get(key)
        if stored is None:
            stored = _meta_int(conn, key)
            if stored is not None:
                self._widths[key] = stored
        width = len(rows[0][1]) // _ITEM_BYTES if stored is None else stored
        for known in (self._dims.get(source), width):
            if known is None:
                continue
            for _, blob, field in rows:
                if len(blob) != known * _ITEM_BYTES:
                    raise ValueError(
                        f"{field}: vector has {len(blob) // _ITEM_BYTES} values but source {source!r} uses "
                        f"{known} (embedding version {version!r}); send vectors of the bundle's width"
                    )
        if stored is None:
            conn.execute(_SET_META, (key, width))

    # -- writes ----------------------------------------------------------------------------------
    def record(self, event: BehaviorEvent) -> int:
        """Store one behaviour (and its item vector, if the event carries one); returns its id."""
        return self._record([check_event(event, "event", self.sources, self._dims)])[0]

    def record_many(self, events: Sequence[BehaviorEvent]) -> list[int]:
        """Store behaviours in one transaction (all or none); returns their ids in order."""
        return self._record([check_event(e, f"events[{i}]", self.sources, self._dims) for i, e in enumerate(events)])

    def _record(self, checked: list[CheckedEvent]) -> list[int]:
        vectors: dict[str, list[ItemRow]] = {}
        for event in checked:
            if event.vector is not None:
                vectors.setdefault(event.source, []).append(
                    (event.item_id, event.vector.tobytes(), f"{event.field}.vector")
                )
        with self._write() as conn:
            version = _meta_text(conn, "embedding_version")
            if vectors:
                if version is None:
                    field = next(f"{e.field}.vector" for e in checked if e.vector is not None)
                    raise ValueError(
                        f"{field}: the store has no embedding version yet; call "
                        "cache_items(...) or set_embedding_version(...) first"
                    )
                self._put_items(conn, list(vectors.items()), version)
            ids = [
                _row_id(
                    conn.execute(
                        "INSERT INTO behaviors (ts, item_id, source, action) VALUES (?, ?, ?, ?)",
                        (event.ts, event.item_id, event.source, event.action),
                    )
                )
                for event in checked
            ]
            pruned = self._prune(conn)
        self.memos.forget_after(
            {event.action for event in checked},
            pruned,
            vectors_written=bool(vectors),
            referred=[(event.source, event.item_id) for event in checked],
        )
        return ids

    def cache_items(self, source: str, items: Sequence[tuple[str, object]], embedding_version: str) -> int:
        """Cache item vectors of one source; `embedding_version` becomes the store's current one.
        Returns how many were given (an item already cached with the same vector is not rewritten)."""
        self._check_source(source, "source")
        text(embedding_version, "embedding_version")
        rows = [
            (text(item_id, f"items[{i}].item_id"), vector(vec, f"items[{i}].vector").tobytes(), f"items[{i}].vector")
            for i, (item_id, vec) in enumerate(items)
        ]
        return self._cache([(source, rows)], embedding_version)

    def cache_sources(self, items: Mapping[str, tuple[Sequence[str], object]], embedding_version: str) -> int:
        """`cache_items` for a slate page, {source: (item ids, float32 [k, d] vectors)}, in one transaction."""
        text(embedding_version, "embedding_version")
        batches = []
        for source, (ids, vectors) in items.items():
            where = f"items[{source!r}]"
            self._check_source(source, where)
            rows = matrix(vectors, f"{where}.vectors")
            if rows.shape[0] != len(ids):
                raise ValueError(f"{where}: {len(ids)} item ids but {rows.shape[0]} vectors; send one vector per id")
            batches.append(
                (
                    source,
                    [
                        (text(item_id, f"{where}.item_ids[{i}]"), blob, f"{where}.vectors[{i}]")
                        for i, (item_id, blob) in enumerate(zip(ids, row_bytes(rows)))
                    ],
                )
            )
        return self._cache(batches, embedding_version)

    def _cache(self, batches: list[tuple[str, list[ItemRow]]], version: str) -> int:
        with self.page() as page:
            page.cache(batches, version)
        return sum(len(rows) for _, rows in batches)

    @contextmanager
    def page(self, writes: bool = False) -> Iterator[PageWrite]:
        """The writes and reads of one reranked page on checked values, in at most one write transaction
        (opened by the first write, or at once when the page `writes` for sure; committed when the block
        ends, rolled back if it raises)."""
        page = PageWrite(self)
        try:
            if writes:
                page._begin()  # checks the memos under the write lock: one check for the whole page
            else:
                self.memos.check(self.db.conn)
            yield page
        except BaseException:
            page.abort()
            raise
        page.commit()

    def _not_cached(self, batches: list[tuple[str, list[ItemRow]]], version: str) -> list[tuple[str, list[ItemRow]]]:
        """The rows `_put_items` would write (new, changed, other version, due for a re-stamp), found
        from the item memo plus one read per source for the items not in it; batches too long for one
        query are kept whole. The caller has checked the memos."""
        conn, memos = self.db.conn, self.memos
        last_seq, known, todo = memos.read_item_seq(conn), memos.known, []
        for source, rows in batches:
            if len(rows) > _CHECK_AT_MOST:
                todo.append((source, rows))
                continue
            ids = [item_id for item_id, _, _ in rows if (source, item_id) not in known]
            if ids:
                for item_id, *hit in conn.execute(_CACHED_SQL.format(", ".join("?" * len(ids))), (source, *ids)):
                    known[(source, item_id)] = tuple(hit)
            aged = last_seq.get(source, 0) - self.retention // 2
            stale = []
            for row in rows:
                hit = known.get((source, row[0]))
                if hit is None or hit[2] <= aged or hit[1] != version or hit[0] != row[1]:
                    stale.append(row)
            if stale:
                todo.append((source, stale))
        return todo

    def set_embedding_version(self, embedding_version: str) -> None:
        """Make `embedding_version` current: only vectors cached under it count as history."""
        text(embedding_version, "embedding_version")
        with self._write() as conn:
            conn.execute(_SET_META, ("embedding_version", embedding_version))
        self._forget()

    def _put_items(
        self, conn: sqlite3.Connection, batches: list[tuple[str, list[ItemRow]]], version: str
    ) -> tuple[dict[tuple[str, str], int | None], dict[tuple[str, str], int]]:
        """Upsert, per source, (item_id, vector, field) rows; returns each (source, item_id)'s cache
        sequence number after the write (None where the item memo did not know it) and how many stored
        behaviours refer to it.

        A new item gets the source's next sequence number (row i of the batch, from 1, is offered the
        last one + i). An item cached before keeps its number unless half the retention has been cached
        since it got it: then it is re-stamped as newly cached (also when its vector is the same), so an
        item the user still sees is never the oldest (first pruned) one. The caller holds the write lock
        and has checked the memos under it: the sequence numbers and item tallies come from, and go to,
        their memos, and the item memo tells which items exist, their numbers and how many behaviours
        refer to them."""
        last_seq, known, added = self.memos.read_item_seq(conn), self.memos.known, []
        now = time.time()
        stamps: dict[tuple[str, str], int | None] = {}
        item_refs: dict[tuple[str, str], int] = {}
        for source, rows in batches:
            if not rows:
                continue
            self._check_widths(conn, source, version, rows)
            last = last_seq.get(source, 0)
            aged = last - self.retention // 2
            ids = list(dict.fromkeys(item_id for item_id, _, _ in rows))
            existing = {item_id: hit[3] for item_id in ids if (hit := known.get((source, item_id))) is not None}
            unknown = [item_id for item_id in ids if item_id not in existing]
            existing.update(row for chunk in _chunks(unknown) for row in _select_in(conn, _EXISTING_SQL, source, chunk))
            new = [item_id for item_id in ids if item_id not in existing]
            refs = dict(row for chunk in _chunks(new) for row in _select_in(conn, _BEHAVIOURS_SQL, source, chunk))
            unreferenced = len(new) - len(refs)
            item_refs.update(((source, item_id), refs.get(item_id, 0)) for item_id in new)
            item_refs.update(((source, item_id), count) for item_id, count in existing.items())
            rewrite, upsert = [], []
            for i, (item_id, blob, _) in enumerate(rows, start=1):
                key = (source, item_id)
                hit = known.get(key)
                values = (source, item_id, blob, len(blob) // _ITEM_BYTES, version, now)
                if hit is not None and hit[2] > aged:
                    rewrite.append(values)
                    stamps.setdefault(key, hit[2])
                else:  # new or aged: stamped last + i; cached but not in the memo: its stamp is not known
                    upsert.append((*values, last + i, aged, refs.get(item_id, 0)))
                    stamps.setdefault(key, last + i if hit is not None or item_id not in existing else None)
            if rewrite:
                conn.executemany(_REWRITE_ITEM, rewrite)
            upserted = conn.executemany(_UPSERT_ITEM, upsert).rowcount if upsert else 0
            if upserted or unreferenced:  # numbers were handed out only if an upsert wrote
                added.append((source, unreferenced, len(rows) if upserted else 0))
                last_seq[source] = last + added[-1][2]
        # the item tallies: newly cached unreferenced items, and the cache sequence numbers handed out
        add_to_tallies(conn, self.memos.read_tallies(conn), "item", added)
        return stamps, item_refs

    def record_exposures(self, items: Sequence[tuple[str, str]], ts: float, request_id: str = "") -> int:
        """Log the items shown to the user, as (item_id, source) pairs; returns how many."""
        ts = finite_seconds(ts, "ts")
        if request_id:
            text(request_id, "request_id")
        elif not isinstance(request_id, str):
            raise ValueError(f"request_id: expected a string, got {request_id!r}")
        rows = [
            (text(item_id, f"items[{i}].item_id"), self._check_source(source, f"items[{i}].source"))
            for i, (item_id, source) in enumerate(items)
        ]
        with self.page() as page:
            page.expose(rows, ts, request_id)
        return len(rows)

    def _prune(self, conn: sqlite3.Connection) -> set[str]:
        """Delete, oldest first, down to the retention the rows of every kind that reached
        R + prune_every rows: O(rows written) amortized. Tallies (a few rows per source) say how many.
        Returns the kinds pruned."""
        pruned: set[str] = set()
        for _ in range(2):  # a second look for items that pruned behaviours left unreferenced
            over = conn.execute(_OVER_BOUND, {"keep": self.retention, "every": self.prune_every}).fetchall()
            for source, kind, excess in over:
                deleted = conn.execute(PRUNE_SQL[kind], {"source": source, "excess": excess}).rowcount
                if kind in ("exposure", "item"):  # counted here; behaviours by their trigger
                    conn.execute(_PRUNED, (deleted, source, kind))
                pruned.add(kind)
            if not over:
                break
        return pruned

    # -- reads -----------------------------------------------------------------------------------
    @property
    def embedding_version(self) -> str | None:
        return _meta_text(self.db.conn, "embedding_version")

    def last_clicks(self, sources: Sequence[str], t: int) -> list[list[tuple[str, np.ndarray]]]:
        """Per source, the newest-first (item_id, float32 vector) of at most `t` clicked items whose
        vectors are cached under the current embedding version (others are skipped, not padded).
        The vectors are read-only views."""
        for i, s in enumerate(sources):
            self._check_source(s, f"sources[{i}]")
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"t: expected an int >= 0, got {t!r}")
        self.memos.check(self.db.conn)
        return self._last_clicks(tuple(sources), t)

    def _last_clicks(self, sources: tuple[str, ...], t: int) -> list[list[tuple[str, np.ndarray]]]:
        key = (sources, t)
        if key not in self.memos.clicks:
            conn = self.db.conn
            if conn.in_transaction:  # inside a page's write: its snapshot
                rows = [conn.execute(LAST_CLICKS_SQL, (s, t)).fetchall() for s in sources]
            else:
                conn.execute("BEGIN")  # one snapshot for all sources
                try:
                    rows = [conn.execute(LAST_CLICKS_SQL, (s, t)).fetchall() for s in sources]
                finally:
                    conn.execute("COMMIT")
            self.memos.clicks[key] = [_split(source_rows) for source_rows in rows]
        return [list(source_clicks) for source_clicks in self.memos.clicks[key]]

    def exposure_counts(self, sources: Sequence[str]) -> np.ndarray:
        """Items shown to this user so far, per source (int64), including pruned exposure rows."""
        for i, s in enumerate(sources):
            self._check_source(s, f"sources[{i}]")
        self.memos.check(self.db.conn)
        return np.array(self._shown(sources), dtype=np.int64)

    def _shown(self, sources: Sequence[str]) -> list[int]:
        tallies = self.memos.read_tallies(self.db.conn)
        return [tallies[(s, "exposure")][1] if (s, "exposure") in tallies else 0 for s in sources]

    def without_vector(self, items: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The (source, item_id) pairs, of `items`, with no vector cached under the current embedding version
        (their clicks do not count as history until one is), in the order given, each once."""
        conn = self.db.conn
        missing = []
        for source, item_id in dict.fromkeys(items):
            row = conn.execute(
                "SELECT 1 FROM items WHERE source = ? AND item_id = ? AND embedding_version = "
                "(SELECT value FROM meta WHERE key = 'embedding_version')",
                (source, item_id),
            ).fetchone()
            if row is None:
                missing.append((source, item_id))
        return missing

    def stale_items(self, embedding_version: str | None = None) -> list[tuple[str, str]]:
        """(source, item_id) of cached items whose vector is not of `embedding_version` (default: current)."""
        version = embedding_version if embedding_version is not None else self.embedding_version
        rows = self.db.conn.execute(
            "SELECT source, item_id FROM items WHERE embedding_version IS NOT ? ORDER BY source, item_id",
            (version,),
        )
        return [tuple(r) for r in rows]

    def stats(self) -> dict[str, object]:
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


class PageWrite:
    """One page's store work on checked values (`HistoryStore.page`): its new item vectors and its
    exposures go into one write transaction, opened by the first write and committed by `commit`."""

    def __init__(self, store: HistoryStore):
        self.store = store
        self._conn: sqlite3.Connection | None = None
        self._items_written = False

    def _begin(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = self.store.db.conn
            conn.execute("BEGIN IMMEDIATE")
            self.store.memos.check(conn)  # another connection may have committed before the lock
            self._conn = conn
        return self._conn

    def cache(self, batches: list[tuple[str, list[ItemRow]]], version: str) -> None:
        """Cache checked (item_id, float32 vector, field) rows per source under `version`, which becomes
        the current embedding version; items cached before with the same vector are not rewritten."""
        store = self.store
        todo = store._not_cached(batches, version)
        if not todo and store._version_memo() == version:
            return
        conn = self._begin()  # its check under the lock drops the version memo if another connection committed
        new_version = store._version_memo() != version
        if new_version:
            conn.execute(_SET_META, ("embedding_version", version))
        stamps, refs = store._put_items(conn, todo, version)
        if new_version:
            store._forget()
        else:  # the page's history read (same connection) sees the new vectors
            store.memos.items_cached(todo, stamps, version, exact=_CHECK_AT_MOST, refs=refs)
        self._items_written = True

    def last_clicks(self, sources: tuple[str, ...], t: int) -> list[list[tuple[str, np.ndarray]]]:
        """`HistoryStore.last_clicks` of checked sources, inside the page's snapshot."""
        return self.store._last_clicks(sources, t)

    def click_vectors(self, sources: tuple[str, ...], t: int, dims: Sequence[int]) -> list[np.ndarray]:
        """Per source, the vectors of `last_clicks` as one read-only float32 [h, d] array (d from `dims`)."""
        memo = self.store.memos.click_arrays
        key = (sources, t)
        if key not in memo:
            memo[key] = [
                np.stack([v for _, v in clicks]) if clicks else np.zeros((0, d), VECTOR_DTYPE)
                for clicks, d in zip(self.store._last_clicks(sources, t), dims)
            ]
        return memo[key]

    def exposure_counts(self, sources: Sequence[str]) -> list[int]:
        """`HistoryStore.exposure_counts` of checked sources, as a list."""
        return self.store._shown(sources)

    def expose(self, items: Sequence[tuple[str, str]], ts: float, request_id: str = "") -> None:
        """Log checked (item_id, source) pairs as shown at `ts`."""
        conn = self._begin()
        tallies = self.store.memos.read_tallies(conn)  # before the write, which adds to it as to the file
        conn.executemany(
            "INSERT INTO exposures (ts, item_id, source, request_id) VALUES (?, ?, ?, ?)",
            [(ts, item_id, source, request_id) for item_id, source in items],
        )
        added: dict[str, int] = {}
        for _, source in items:
            added[source] = added.get(source, 0) + 1
        add_to_tallies(conn, tallies, "exposure", [(source, count, count) for source, count in added.items()])

    def commit(self) -> None:
        """Prune what the page's writes took past the retention bound and commit (nothing when the page
        wrote nothing)."""
        conn, store = self._conn, self.store
        if conn is None:
            return
        try:
            pruned: set[str] = set()
            if self._over_bound(conn):
                pruned = store._prune(conn)
            conn.execute("COMMIT")
        except BaseException:
            self.abort()
            raise
        self._conn = None
        if store.checkpointer is not None:
            store.checkpointer.committed()
        if pruned:
            store.memos.forget_after({"exposure"}, pruned)

    def abort(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and conn.in_transaction:
            conn.execute("ROLLBACK")
        self.store._forget()

    def _over_bound(self, conn: sqlite3.Connection) -> bool:
        """Whether some tally reaches R + prune_every rows with this page's writes (from the memo)."""
        store = self.store
        bound = store.retention + store.prune_every
        return any(rows >= bound for rows, _ in store.memos.read_tallies(conn).values())


def add_to_tallies(
    conn: sqlite3.Connection, tallies: dict[tuple[str, str], list[int]], kind: str, deltas: list[tuple[str, int, int]]
) -> None:
    """Add (source, rows, total) deltas to the `kind` tallies in the file and in their memo `tallies` (read
    under the write lock; a rolled-back write forgets it): an update for the tallies the memo holds, an
    upsert for the others."""
    have = [(rows, total, source, kind) for source, rows, total in deltas if (source, kind) in tallies]
    if have:
        conn.executemany(TALLY_ADD_SQL, have)
    if len(have) < len(deltas):
        conn.executemany(
            TALLY_NEW_SQL,
            [(rows, total, source, kind) for source, rows, total in deltas if (source, kind) not in tallies],
        )
    for source, rows, total in deltas:
        counts = tallies.setdefault((source, kind), [0, 0])
        counts[0] += rows
        counts[1] += total


def _chunks(values: list[str]) -> Iterator[list[str]]:
    """`values` in pieces short enough for one `IN (...)` list."""
    for start in range(0, len(values), _CHECK_AT_MOST):
        yield values[start : start + _CHECK_AT_MOST]


def _select_in(conn: sqlite3.Connection, sql: str, source: str, ids: list[str]) -> sqlite3.Cursor:
    """Run `sql` (parameters: source, then the ids of its `IN ({})`) for these ids."""
    return conn.execute(sql.format(", ".join("?" * len(ids))), (source, *ids))


def _split(rows: list[tuple[str, bytes]]) -> list[tuple[str, np.ndarray]]:
    """(item_id, vector) pairs; the vectors are views of one array (a source's vectors share a width)."""
    if not rows:
        return []
    vectors = np.frombuffer(b"".join(blob for _, blob in rows), dtype=VECTOR_DTYPE).reshape(len(rows), -1)
    return [(item_id, v) for (item_id, _), v in zip(rows, vectors)]


def _meta(conn: sqlite3.Connection, key: str) -> str | int | float | bytes | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def _meta_text(conn: sqlite3.Connection, key: str) -> str | None:
    value = _meta(conn, key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"store meta {key!r} is {value!r}, not text: the store file is damaged")
    return value


def _meta_int(conn: sqlite3.Connection, key: str) -> int | None:
    value = _meta(conn, key)
    if value is not None and not isinstance(value, int):
        raise ValueError(f"store meta {key!r} is {value!r}, not an integer: the store file is damaged")
    return value


def _row_id(cursor: sqlite3.Cursor) -> int:
    """The rowid of the row an INSERT just wrote."""
    if cursor.lastrowid is None:
        raise RuntimeError("sqlite3 gave no rowid for an INSERT")
    return cursor.lastrowid


def _schema_version(conn: sqlite3.Connection) -> int:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
        return 0
    return int(_meta(conn, "schema_version") or 0)


def _open(path: Path, synchronous: str, busy_timeout_ms: int, autocheckpoint: bool) -> sqlite_utils.Database:
    """Connect in autocommit mode (transactions are explicit), WAL, with a busy timeout; without
    `autocheckpoint`, a commit checkpoints only past `BACKSTOP_PAGES` (a `Checkpointer` does it)."""
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; pass a history store file, e.g. {path / 'history.db'}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: folder {path.parent} does not exist; create it or choose another path")
    db = sqlite_utils.Database(path, execute_plugins=False)
    db.conn.isolation_level = None
    try:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        db.enable_wal()
        db.execute(f"PRAGMA synchronous = {synchronous}")
        if not autocheckpoint:
            db.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
    except sqlite3.DatabaseError as exc:
        db.close()
        raise ValueError(f"{path}: not a usable SQLite database ({exc}); pass a history store or a new file") from exc
    return db
