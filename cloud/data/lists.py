"""Build reranking lists (per-source candidates, padded to n) from validated logs.

    lists = build_lists(logs, seed=0)      # Lists sorted by (timestamp, first events.csv row)
    lists.cand_item[l, s, j]              # item index within source s, -1 = padding

`logged`: every list_id is one list shown at the earliest timestamp of its rows; per source the
candidates are ordered by logged position (rows without a position after those with one, ties by
file row); a source with more than n items in one list keeps its first n by position.

`sampled` (DIR appendix A.1): every click becomes a list at the click's timestamp: the clicked item
plus `negatives` items drawn uniformly (with replacement, then rejected and redrawn) from all items of
all sources, rejecting the positive, repeats within the list, and items the user clicked at or before
that time. After 20 redraw rounds a still-rejected draw is dropped (its slot stays padding). When one
source gets more than n items, negatives of that source are dropped at random (the positive is kept).
Within a source the candidates are shuffled so the positive's slot carries no signal. Every random
number is a hash of (seed, the click's events line, slot, round), so a list's draws do not depend on
which other events are prepared with it: the sharded paths give the same lists as the in-memory one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cloud.data.logs import Events, Logs

REDRAW_ROUNDS = 20


@dataclass(frozen=True)
class Lists:
    """Lists in time order: user, timestamp and [L, m, n] candidate arrays."""

    user: np.ndarray  # int64 [L]
    ts: np.ndarray  # float64 [L]
    cand_item: np.ndarray  # int64 [L, m, n], -1 = padding
    label: np.ndarray  # float32 [L, m, n]
    click_prob: np.ndarray  # float32 [L, m, n], NaN = unknown
    position: np.ndarray  # int64 [L, m, n], -1 = unknown
    line: np.ndarray  # int64 [L] events line of the list's first row (the tie-break of the time order)
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ts)


def build_lists(logs: Logs, seed: int = 0) -> Lists:
    """Lists of the spec's list_mode (`seed` only matters for `sampled`)."""
    spec = logs.spec
    if spec.list_mode == "logged":
        return logged_lists(logs.events, spec.m, spec.n)
    counts = [len(logs.items[name]) for name in spec.source_names]
    return sampled_lists(logs.events, counts, spec.n, spec.negatives, seed, logs.events_path)


def logged_lists(events: Events, m: int, n: int) -> Lists:
    """One list per list_id; impressions grouped by source, ordered by position, first n kept."""
    rows = np.flatnonzero(events.list_id >= 0)
    lid = events.list_id[rows]
    by_time = rows[np.lexsort((rows, events.ts[rows], lid))]
    first = by_time[np.r_[True, np.diff(events.list_id[by_time]) != 0]]  # earliest row of each list
    first = first[np.lexsort((first, events.ts[first]))]  # lists in time order
    rank = np.empty(len(events.list_names), np.int64)
    rank[events.list_id[first]] = np.arange(len(first))

    pos = events.position[rows]
    pos_key = np.where(pos < 0, np.iinfo(np.int64).max, pos)
    order = rows[np.lexsort((rows, pos_key, events.source[rows], rank[lid]))]
    list_of, src = rank[events.list_id[order]], events.source[order]
    slot = rank_in_groups(list_of * m + src)
    keep = slot < n
    out = _empty(len(first), m, n)
    at = (list_of[keep], src[keep], slot[keep])
    kept = order[keep]
    out["cand_item"][at] = events.item[kept]
    out["label"][at] = events.label[kept]
    out["click_prob"][at] = events.click_prob[kept]
    out["position"][at] = events.position[kept]
    return Lists(
        user=events.user[first],
        ts=events.ts[first],
        **out,
        line=events.line[first],
        stats={"impressions": int(len(rows)), "impressions_over_n_dropped": int((~keep).sum())},
    )


def sampled_lists(
    events: Events, item_counts: list[int], n: int, negatives: int, seed: int, events_path: Path | str = "events.csv"
) -> Lists:
    """One list per click: the positive plus uniformly drawn unclicked negatives, grouped by source."""
    m = len(item_counts)
    offsets = np.r_[0, np.cumsum(item_counts)]
    total = int(offsets[-1])
    item_source = np.repeat(np.arange(m), item_counts)
    gitem = offsets[events.source] + events.item
    clicks = np.flatnonzero(events.label == 1)
    clicks = clicks[np.lexsort((clicks, events.ts[clicks]))]
    if len(clicks) == 0:
        raise ValueError(no_clicks_message(events_path))
    user, ts, line = events.user[clicks], events.ts[clicks], events.line[clicks]
    cols = np.arange(1, negatives + 1)

    first_key, first_ts = _first_clicks(events.user[clicks], gitem[clicks], ts, total)
    drawn = np.column_stack([gitem[clicks], _draw(seed, line[:, None], cols[None], 0, total)])

    def rejected() -> np.ndarray:
        key = user[:, None] * total + drawn
        at = np.minimum(np.searchsorted(first_key, key), len(first_key) - 1)
        clicked = (first_key[at] == key) & (first_ts[at] <= ts[:, None])
        bad = clicked | _repeats(drawn)
        bad[:, 0] = False
        return bad

    bad = rejected()
    for round_ in range(1, REDRAW_ROUNDS + 1):
        if not bad.any():
            break
        at, col = np.nonzero(bad)
        drawn[at, col] = _draw(seed, line[at], col, round_, total)
        bad = rejected()
    drawn[bad] = -1

    list_of, col = np.nonzero(drawn >= 0)
    g = drawn[list_of, col]
    noise = (keyed_random(seed, line[list_of], col, REDRAW_ROUNDS + 1) >> np.uint64(11)) / float(1 << 53)
    src, is_neg = item_source[g], col > 0
    order = np.lexsort((noise, is_neg, src, list_of))  # positive first, then negatives at random
    keep = order[rank_in_groups(list_of[order] * m + src[order]) < n]
    keep = keep[np.lexsort((noise[keep], src[keep], list_of[keep]))]  # shuffle slots within a source
    slot = rank_in_groups(list_of[keep] * m + src[keep])
    out = _empty(len(clicks), m, n)
    cells = (list_of[keep], src[keep], slot)
    out["cand_item"][cells] = g[keep] - offsets[src[keep]]
    out["label"][cells] = ~is_neg[keep]
    out["click_prob"][cells] = np.where(is_neg[keep], np.nan, events.click_prob[clicks][list_of[keep]])
    return Lists(
        user=user,
        ts=ts,
        **out,
        line=line,
        stats={
            "negatives_dropped_after_redraws": int(bad.sum()),
            "negatives_over_n_dropped": int(len(g) - len(keep)),
        },
    )


def no_clicks_message(events_path: Path | str) -> str:
    """The error for list_mode "sampled" without any click (shared by every prepare path)."""
    return f'{events_path}: no clicks (label 1); list_mode = "sampled" makes one list per click'


def keyed_random(seed: int, line: np.ndarray, slot: np.ndarray, round_: int) -> np.ndarray:
    """uint64 random numbers, a hash (splitmix64 steps) of seed, events line, slot and round."""
    state = _splitmix(np.asarray(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ np.uint64(0x5851F42D4C957F2D)))
    for key in (np.asarray(line), np.asarray(slot), round_):
        state = _splitmix(state ^ np.asarray(key).astype(np.uint64))
    return state


def _draw(seed: int, line: np.ndarray, slot: np.ndarray, round_: int, total: int) -> np.ndarray:
    """Item draws in 0..total-1 (int64)."""
    return (keyed_random(seed, line, slot, round_) % np.uint64(total)).astype(np.int64)


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = np.asarray(x, np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def rank_in_groups(keys: np.ndarray) -> np.ndarray:
    """0, 1, 2... within each run of equal consecutive keys: [4, 4, 7, 9, 9, 9] -> [0, 1, 0, 0, 1, 2]."""
    if len(keys) == 0:
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return np.arange(len(keys)) - np.repeat(starts, np.diff(np.r_[starts, len(keys)]))


def _first_clicks(user: np.ndarray, gitem: np.ndarray, ts: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted keys user*total+item of every clicked (user, item) with the time of its first click."""
    key = user * total + gitem
    order = np.lexsort((ts, key))
    first = order[np.r_[True, key[order][1:] != key[order][:-1]]]
    return key[first], ts[first]


def _repeats(drawn: np.ndarray) -> np.ndarray:
    """True where a row's value already appeared in an earlier column of that row."""
    order = np.argsort(drawn, axis=1, kind="stable")
    ranked = np.take_along_axis(drawn, order, axis=1)
    repeat_sorted = np.zeros(drawn.shape, bool)
    repeat_sorted[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
    out = np.empty_like(repeat_sorted)
    np.put_along_axis(out, order, repeat_sorted, axis=1)
    return out


def _empty(count: int, m: int, n: int) -> dict[str, np.ndarray]:
    shape = (count, m, n)
    return {
        "cand_item": np.full(shape, -1, np.int64),
        "label": np.zeros(shape, np.float32),
        "click_prob": np.full(shape, np.nan, np.float32),
        "position": np.full(shape, -1, np.int64),
    }
