"""What a `HistoryStore` last read from its file, kept in memory until the file changes.

    memos = ReadMemos()
    memos.check(conn)                    # drop everything if another connection committed since
    memos.known[("video", "v1")]         # (vector bytes, embedding version, cache sequence number, refs)
    memos.forget_after({"exposure"}, set())  # after this store's own write: drop only what it made stale

`PRAGMA data_version` changes when another connection commits; this store's own writes say what they
changed. Memos: the item cache (per item, and each source's last cache sequence number), the current
embedding version, the last clicks per (sources, t) (also as one array per source), and the tallies
(rows and total per source and kind, which give the exposure counts and tell whether a write must prune).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import numpy as np

UNREAD = object()
"""The embedding-version memo before its read."""
NOT_CLICKS = {"exposure", "impression"}
"""Kinds of rows whose writes leave the last clicks as they were."""
ITEM_KINDS = {"item", "click", "impression"}
"""Kinds of rows whose pruning drops the item memo: items, and behaviours (their items' reference counts)."""
KNOWN_AT_MOST = 100_000
"""Items remembered by the item memo before it starts over."""


class ReadMemos:
    """The read memos of one store connection (see the module docstring)."""

    def __init__(self) -> None:
        self.data_version: int | None = None  # PRAGMA data_version when the memos were last valid
        self.known: dict[tuple[str, str], tuple[bytes, str, int, int]] = {}
        self.item_seq: dict[str, int] | None = None
        self.version: str | None | object = UNREAD
        self.clicks: dict[tuple[tuple[str, ...], int], list[list[tuple[str, np.ndarray]]]] = {}
        self.click_arrays: dict[tuple[tuple[str, ...], int], list[np.ndarray]] = {}  # the clicks' vectors stacked
        self.tallies: dict[tuple[str, str], list[int]] | None = None  # (source, kind) -> [rows, total]

    def check(self, conn: sqlite3.Connection) -> None:
        """Drop every memo if another connection committed since they were made."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self.data_version or len(self.known) > KNOWN_AT_MOST:
            self.forget()
            self.data_version = version

    def forget(self, items: bool = True, clicks: bool = True) -> None:
        if items:
            self.known.clear()
            self.item_seq, self.version = None, UNREAD
        if clicks:
            self.clicks.clear()
            self.click_arrays.clear()
        self.tallies = None

    def forget_after(
        self, added: set[str], pruned: set[str], vectors_written: bool = False, referred: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Drop what a write made stale, given the kinds of rows it added and pruned: the item memo when
        vectors were written, items pruned or behaviours pruned (which items they referred to is not
        known); the last clicks unless only exposures or impressions changed. The added behaviours'
        (source, item_id) pairs, `referred`, count as references of the remembered items."""
        items = vectors_written or bool(pruned & ITEM_KINDS)
        self.forget(items=items, clicks=vectors_written or bool((added | pruned) - NOT_CLICKS))
        if not items:
            for key in referred:
                hit = self.known.get(key)
                if hit is not None:
                    self.known[key] = (*hit[:3], hit[3] + 1)

    def items_cached(
        self,
        batches: list[tuple[str, list[tuple[str, bytes, str]]]],
        stamps: dict[tuple[str, str], int | None],
        version: str,
        exact: int,
        refs: dict[tuple[str, str], int],
    ) -> None:
        """After this store cached `batches` under the current `version` (each (source, item_id) now with
        cache sequence number stamps[...], None if not known, and referred to by refs[...] stored
        behaviours): remember the rows of batches up to `exact` long (all of them were written; a longer
        batch may have skipped unchanged rows, which are forgotten instead), the last vector of an item
        given twice. The last clicks are dropped only when a cached item has stored behaviours: its new
        vector may change a click's vector or bring a click into the history."""
        known = self.known
        for source, rows in batches:
            whole = len(rows) <= exact
            for item_id, blob, _ in rows:
                key = (source, item_id)
                stamp = stamps[key]
                if whole and stamp is not None:
                    known[key] = (blob, version, stamp, refs[key])
                else:
                    known.pop(key, None)
        if any(refs.values()):
            self.clicks.clear()
            self.click_arrays.clear()

    def read_item_seq(self, conn: sqlite3.Connection) -> dict[str, int]:
        """Each source's last cache sequence number (its `item` tally's total)."""
        if self.item_seq is None:
            self.item_seq = dict(conn.execute("SELECT source, total FROM tallies WHERE kind = 'item'").fetchall())
        return self.item_seq

    def read_tallies(self, conn: sqlite3.Connection) -> dict[tuple[str, str], list[int]]:
        if self.tallies is None:
            self.tallies = {
                (s, k): [rows, total]
                for s, k, rows, total in conn.execute("SELECT source, kind, rows, total FROM tallies")
            }
        return self.tallies
