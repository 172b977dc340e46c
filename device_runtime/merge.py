"""Merge per-source scores into one ordered list under a target exposure share per source (numpy).

    order = merge([np.array([.9, .1]), np.array([.5])], target_shares=[.5, .5], K=2, mode="quota")
    # [(0, 0), (1, 0), (0, 1)]: (source index, item index within that source), best first

The first min(K, #candidates) entries are the exposed slots, chosen by `mode`; the rest follow by score.
Ties in score go to the lower source index, then the lower item index, so within a source the order is
always by score.

- `score`: pure model order, as in the DIR paper.
- `quota`: slot counts per source from the target shares by the largest-remainder method
  (`quota_slots`). A source that offers fewer items than its count gives up the missing slots; they go to
  the sources with spare items by largest remainder of those sources' shares, again and again until the
  slots are placed or no source with a positive share has items left; any slots still free go to the best
  remaining items by score. Each source fills its slots with its best items.
- `controller`: like `quota`, but the shares of this page follow the user's exposure deficit. With c_s
  items of source s shown so far (`shown_counts`, e.g. `HistoryStore.exposure_counts`), C = sum(c) and
  k = the page's slot count, source s is owed d_s = k*w_s + gain*(w_s*C - c_s) slots; the page's slots
  are allocated as in `quota` with shares max(d_s, 0) (a debt within 1e-9 of 0 is 0). gain=0 is `quota`;
  gain=1 pays the whole debt at once when the sources have the items; in between the error shrinks by a
  factor (1-gain) per page.
  Record the exposed (top-k) items with `HistoryStore.record_exposures` so the next page sees them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MODES = ("score", "quota", "controller")
_TIE = 1e-9  # remainders closer than this count as equal (tie-break by share, then source index)


def largest_remainder(slots: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to `slots`, each floor or ceil of slots*w/sum(w); zero weights get 0."""
    w = np.asarray(weights, dtype=np.float64).tolist()
    return np.array(_largest_remainder(int(slots), w), dtype=np.int64)


def allocate(slots: int, weights: np.ndarray, available: np.ndarray) -> np.ndarray:
    """Largest-remainder slot counts bounded by `available`, redistributing what a source cannot fill.

    The counts may sum to less than min(slots, sum(available)) when only zero-weight sources have items
    left; `merge` gives those slots to the best remaining items by score.
    """
    w = np.asarray(weights, dtype=np.float64).tolist()
    return np.array(_allocate(int(slots), w, np.asarray(available, dtype=np.int64).tolist()), dtype=np.int64)


def quota_slots(K: int, target_shares: Sequence[float], available: Sequence[int] | None = None) -> np.ndarray:
    """Per-source slot counts of the `quota` mode (unbounded when `available` is None)."""
    w = _shares(target_shares, len(target_shares))
    if available is None:
        return largest_remainder(K, w)
    return allocate(K, w, np.asarray(available))


def controller_shares(
    slots: int, target_shares: Sequence[float], shown_counts: Sequence[float], gain: float
) -> np.ndarray:
    """Shares for the next page: the positive part of each source's deficit (see module docstring)."""
    w = _shares(target_shares, len(target_shares))
    c = np.asarray(shown_counts, dtype=np.float64)
    return np.array(_deficits(slots, w.tolist(), c.tolist(), gain))


def merge(
    scores: Sequence[np.ndarray],
    target_shares: Sequence[float],
    K: int,
    mode: str = "score",
    shown_counts: Sequence[float] | None = None,
    gain: float = 0.5,
) -> list[tuple[int, int]]:
    """Every real candidate once, as (source index, item index): top-K by `mode`, the rest by score."""
    m = len(scores)
    arrays = [np.asarray(s, dtype=np.float64) for s in scores]
    w = _shares(target_shares, m)
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 0:
        raise ValueError(f"K: expected an int >= 0, got {K!r}")
    if mode not in MODES:
        raise ValueError(f"mode: unknown merge mode {mode!r}; use one of {list(MODES)}")
    if not np.isfinite(gain) or gain < 0:
        raise ValueError(f"gain: expected a finite number >= 0, got {gain!r}")

    if any(a.ndim != 1 for a in arrays):
        _check_scores(arrays)
    if not all(np.isfinite(a).all() for a in arrays):
        _check_scores(arrays)
    shown = None
    if mode == "controller":
        shown = [0.0] * m if shown_counts is None else _counts(shown_counts, m).tolist()
    return merge_lists([a.tolist() for a in arrays], w.tolist(), int(K), mode, shown, gain)


def merge_lists(
    scores: list[list[float]],
    shares: list[float],
    K: int,
    mode: str,
    shown: Sequence[float] | None = None,
    gain: float = 0.5,
) -> list[tuple[int, int]]:
    """`merge` on checked plain lists (finite scores, normalised shares, K >= 0, a known mode, shown
    counts for `controller`), in plain Python: at a page's size (tens of items) numpy's per-call cost
    is more than the work."""
    ranked_all = sorted((-v, s, i) for s, values in enumerate(scores) for i, v in enumerate(values))
    order = [(s, i) for _, s, i in ranked_all]  # best first; ties: lower source, then lower item index
    k = min(K, len(order))
    if mode == "score":
        return order
    if mode == "controller":
        shares = _deficits(k, shares, shown if shown is not None else [0.0] * len(scores), gain)
    counts = _allocate(k, shares, [len(values) for values in scores])
    taken = [0] * len(scores)
    chosen: list[tuple[int, int]] = []
    rest: list[tuple[int, int]] = []
    for pair in order:  # each source's best items up to its count
        if taken[pair[0]] < counts[pair[0]]:
            taken[pair[0]] += 1
            chosen.append(pair)
        else:
            rest.append(pair)
    free = k - len(chosen)  # slots only zero-share sources could fill: best remaining by score
    if free > 0:
        picked = set(chosen) | set(rest[:free])
        chosen = [pair for pair in order if pair in picked]
        rest = [pair for pair in rest if pair not in picked]
    return chosen + rest


def _largest_remainder(slots: int, w: list[float]) -> list[int]:
    total = sum(w)
    if slots <= 0 or total <= 0:
        return [0] * len(w)
    quota = [slots * x / total for x in w]
    counts = [math.floor(q + _TIE) for q in quota]
    rem = [round((q - c) / _TIE) * _TIE for q, c in zip(quota, counts)]
    order = sorted((s for s in range(len(w)) if w[s] > 0), key=lambda s: (-rem[s], -w[s], s))
    for s in order[: slots - sum(counts)]:
        counts[s] += 1
    return counts


def _allocate(slots: int, w: list[float], available: list[int]) -> list[int]:
    """The quota of every source (`_largest_remainder` over all shares), bounded by its items; the slots
    short sources give up go to the sources with items left, by largest remainder of their shares."""
    total = min(slots, sum(available))
    counts = [min(c, a) for c, a in zip(_largest_remainder(slots, w), available)]
    while sum(counts) < total:
        open_w = [x if x > 0 and c < a else 0.0 for x, c, a in zip(w, counts, available)]
        if not any(open_w):
            break
        extra = _largest_remainder(total - sum(counts), open_w)
        counts = [min(c + e, a) for c, e, a in zip(counts, extra, available)]
    return counts


def _deficits(slots: int, w: list[float], shown: Sequence[float], gain: float) -> list[float]:
    """Each source's owed slots, 0 where not positive beyond rounding (a debt of exactly 0 in exact
    arithmetic can come out as 1e-15)."""
    seen = sum(shown)
    owed = [slots * x + gain * (x * seen - c) for x, c in zip(w, shown)]
    return [d if d > _TIE else 0.0 for d in owed]


def _check_scores(arrays: list[np.ndarray]) -> None:
    """Raise for the first score array that is not 1-D or holds a non-finite value."""
    for i, a in enumerate(arrays):
        if a.ndim != 1:
            raise ValueError(f"scores[{i}]: expected a 1-D array of the source's real candidates, got shape {a.shape}")
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise ValueError(f"scores[{i}][{bad[0]}] is {a[bad[0]]}; pass finite scores of real candidates only")


def _shares(value: Sequence[float], m: int) -> np.ndarray:
    w = np.asarray(value, dtype=np.float64)
    if w.shape != (m,):
        raise ValueError(f"target_shares: expected {m} shares (one per source), got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"target_shares: expected finite shares >= 0 with a positive sum, got {w.tolist()}")
    normalised: np.ndarray = w / w.sum()
    return normalised


def _counts(value: Sequence[float], m: int) -> np.ndarray:
    c = np.asarray(value, dtype=np.float64)
    if c.shape != (m,) or not np.isfinite(c).all() or (c < 0).any():
        raise ValueError(f"shown_counts: expected {m} finite counts >= 0 (one per source), got {c.tolist()}")
    return c
