"""Every simulated user's clicks, and the history a model sees of them at a time, after an upload delay.

    log = ClickLog(users=3, sources=3, user=np.array([0, 2]), ts=np.array([5.0, 7.0]),
                   item=np.array([11, 42]), source=np.array([0, 1]))
    view = log.view(read_at=np.array([10.0, 10.0, 10.0]), delay=0.0, t=20)
    view.items[u, s]     # global item rows, newest first, -1 = padding (like HistoryStore.last_clicks)
    view.newest_ts[u]    # time of the newest visible click (NaN if none): staleness = read_at - newest_ts

A click at time ts is visible at `read_at` iff ts + delay < read_at (the device: delay 0; the cloud:
the behaviour upload delay). Ties in time go to the later recorded click, as in the device store.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HistoryView:
    items: np.ndarray  # int64 [U, m, t]
    newest_ts: np.ndarray  # f64 [U]
    unseen: np.ndarray  # int64 [U] clicks already made but not yet visible (in flight to the cloud)


class ClickLog:
    """Clicks per user in recording order (arrays grow as clicks are added)."""

    def __init__(
        self, users: int, sources: int, user: np.ndarray, ts: np.ndarray, item: np.ndarray, source: np.ndarray
    ):
        self.m = sources
        self.count = np.zeros(users, np.int64)
        self.ts = np.zeros((users, 8))
        self.item = np.full((users, 8), -1, np.int64)
        self.source = np.full((users, 8), -1, np.int64)
        self.add(user, ts, item, source)

    def add(self, user: np.ndarray, ts: np.ndarray, item: np.ndarray, source: np.ndarray) -> None:
        """Record clicks (appended per user in the given order)."""
        user = np.asarray(user, np.int64)
        if not len(user):
            return
        order = np.argsort(user, kind="stable")
        user = user[order]
        first = np.searchsorted(user, user, side="left")
        slot = self.count[user] + np.arange(len(user)) - first
        self._grow(int(slot.max()) + 1)
        self.ts[user, slot] = np.asarray(ts, np.float64)[order]
        self.item[user, slot] = np.asarray(item)[order]
        self.source[user, slot] = np.asarray(source)[order]
        np.add.at(self.count, user, 1)

    def view(self, read_at: np.ndarray, delay: float, t: int) -> HistoryView:
        """Per user the newest t visible clicks per source at `read_at` [U] seconds."""
        width = int(self.count.max(initial=0))
        ts, item, source = self.ts[:, :width], self.item[:, :width], self.source[:, :width]
        index = np.broadcast_to(np.arange(width), ts.shape)
        made = index < self.count[:, None]
        read_at = np.asarray(read_at, np.float64)[:, None]
        visible = made & (ts + delay < read_at)
        items = np.full((len(self.count), self.m, t), -1, np.int64)
        for s in range(self.m):
            key = np.where(visible & (source == s), ts, -np.inf)
            order = np.lexsort((-index, -key), axis=-1)[:, :t]
            ok = np.take_along_axis(key, order, axis=1) > -np.inf
            items[:, s, : order.shape[1]] = np.where(ok, np.take_along_axis(item, order, axis=1), -1)
        newest = np.where(visible, ts, -np.inf).max(axis=1, initial=-np.inf)
        return HistoryView(
            items=items,
            newest_ts=np.where(np.isfinite(newest), newest, np.nan),
            unseen=(made & (ts < read_at)).sum(axis=1) - visible.sum(axis=1),
        )

    def _grow(self, width: int) -> None:
        if width <= self.ts.shape[1]:
            return
        extra = max(width, 2 * self.ts.shape[1]) - self.ts.shape[1]
        self.ts = np.pad(self.ts, ((0, 0), (0, extra)))
        self.item = np.pad(self.item, ((0, 0), (0, extra)), constant_values=-1)
        self.source = np.pad(self.source, ((0, 0), (0, extra)), constant_values=-1)
