"""Reranking metrics over multi-source lists, pure numpy: the metrics of the DIR paper (Xi et al., KDD'23).

Every function takes arrays shaped [L, m, n] (lists x sources x candidates per source); the source of a
slot is its m index, and `mask` (0/1) marks the real candidates. Usage::

    from cloud.evaluation.metrics import evaluate_lists
    evaluate_lists(scores, labels, mask, target_shares=[0.5, 0.4, 0.1], k=5)
    # {'auc': .., 'ndcg@5': .., 'map@5': .., 'map_minpos@5': .., 'utility@5': .., 'js@5': .., 'lists': L}

Conventions (the same for every metric):
- Ranking: real candidates by score, highest first. Equal scores keep slot order over the flattened m*n
  axis (source 0's slots first, then source 1's, ...; within a source by slot index).
- Padded slots (mask 0) never count and never take a top-K place, whatever their score or label (NaN is
  fine there, e.g. true click probabilities used as oracle scores). If a list has fewer than K real
  candidates, its top-K is all of them.
- A hit is a label > 0. NDCG's gain is 2^label - 1, so graded labels also work there.
- Lists without positives score 0 in NDCG and MAP and stay in the mean (as in the DIR/MIR code);
  `skip_no_positive=True` leaves them out of the mean instead (nan if no list is left).
- AUC is global over all real candidates of all lists; tied scores of a positive/negative pair give
  half credit. It is nan when only one class is present.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np

MAP_NORMALIZERS = ("hits", "min_pos_k")


@dataclass(frozen=True)
class _Ranked:
    """The top-K of every list: flat slot indices [L, kk], where they are real, and their labels."""

    order: np.ndarray  # int64 [L, kk], index into the flattened m*n axis
    valid: np.ndarray  # bool [L, kk], False past the list's real candidates
    top_labels: np.ndarray  # float64 [L, kk], 0 where not valid
    labels: np.ndarray  # float64 [L, m*n], 0 at padding
    n: int
    m: int


def _as_lists(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 3:
        raise ValueError(
            f"{name}: expected an array [lists, sources, candidates] (3 dimensions), got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"{name}: shape {arr.shape} is empty; give at least one list, source and slot")
    return arr


def _first_bad(name: str, bad: np.ndarray, what: str, fix: str) -> None:
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}: {what} at (list, source, slot) {where}; {fix}")


def _check_k(k) -> int:
    if isinstance(k, bool):
        raise ValueError(f"k: must be a positive integer, got {k!r}")
    try:
        k = operator.index(k)
    except TypeError:
        raise ValueError(f"k: must be a positive integer, got {k!r}") from None
    if k < 1:
        raise ValueError(f"k: must be a positive integer, got {k}")
    return k


def _inputs(scores, mask, labels=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validated float64 scores and labels (0 at padding) and a bool mask, all [L, m, n]."""
    scores = _as_lists("scores", scores)
    mask_f = _as_lists("mask", mask)
    if mask_f.shape != scores.shape:
        raise ValueError(f"mask: shape {mask_f.shape} does not match scores {scores.shape}")
    _first_bad(
        "mask",
        (mask_f != 0) & (mask_f != 1),
        "values must be 0 or 1, found another value",
        "use 1 for real candidates and 0 for padding",
    )
    real = mask_f == 1
    _first_bad(
        "scores", np.isnan(scores) & real, "NaN score of a real candidate", "give every candidate with mask 1 a score"
    )
    scores = np.where(real, scores, 0.0)
    if labels is None:
        return scores, real, None
    labels = _as_lists("labels", labels)
    if labels.shape != scores.shape:
        raise ValueError(f"labels: shape {labels.shape} does not match scores {scores.shape}")
    _first_bad(
        "labels",
        ~(np.isfinite(labels) & (labels >= 0)) & real,
        "negative or non-finite label of a real candidate",
        "labels must be 0/1 (or graded >= 0)",
    )
    return scores, real, np.where(real, labels, 0.0)


def _rank(scores, mask, k, labels=None) -> _Ranked:
    scores, real, labels = _inputs(scores, mask, labels)
    k = _check_k(k)
    num_lists, m, n = scores.shape
    flat_scores = scores.reshape(num_lists, m * n)
    flat_real = real.reshape(num_lists, m * n)
    # lexsort is stable; last key is primary: real before padded, then score descending, then slot order.
    order = np.lexsort((-flat_scores, ~flat_real), axis=-1)[:, : min(k, m * n)]
    valid = np.take_along_axis(flat_real, order, axis=1)
    flat_labels = np.zeros_like(flat_scores) if labels is None else labels.reshape(num_lists, m * n)
    top_labels = np.take_along_axis(flat_labels, order, axis=1) * valid
    return _Ranked(order, valid, top_labels, flat_labels, n, m)


def _mean(per_list: np.ndarray, keep: np.ndarray | None) -> float:
    if keep is not None:
        per_list = per_list[keep]
    return float(per_list.mean()) if per_list.size else math.nan


def _has_positive(r: _Ranked) -> np.ndarray:
    return np.asarray((r.labels > 0).any(axis=1))


def _ndcg(r: _Ranked, skip_no_positive: bool) -> float:
    kk = r.order.shape[1]
    discount = 1.0 / np.log2(np.arange(kk) + 2.0)
    dcg = ((2.0**r.top_labels - 1.0) * discount).sum(axis=1)
    ideal = -np.sort(-r.labels, axis=1)[:, :kk]  # padding holds label 0, so it never helps the ideal
    idcg = ((2.0**ideal - 1.0) * discount).sum(axis=1)
    per_list = np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)
    return _mean(per_list, _has_positive(r) if skip_no_positive else None)


def _map(r: _Ranked, normalize: str, skip_no_positive: bool) -> float:
    if normalize not in MAP_NORMALIZERS:
        raise ValueError(f"normalize: must be one of {MAP_NORMALIZERS}, got {normalize!r}")
    hits = r.top_labels > 0
    ranks = np.arange(1, hits.shape[1] + 1)
    precision_sum = (np.cumsum(hits, axis=1) / ranks * hits).sum(axis=1)
    if normalize == "hits":
        denominator = hits.sum(axis=1)
    else:  # min(#positives, K); #positives <= m*n, so K capped at m*n gives the same minimum
        denominator = np.minimum((r.labels > 0).sum(axis=1), hits.shape[1])
    per_list = np.divide(precision_sum, denominator, out=np.zeros_like(precision_sum), where=denominator > 0)
    return _mean(per_list, _has_positive(r) if skip_no_positive else None)


def _utility(r: _Ranked) -> float:
    return float(r.top_labels.sum(axis=1).mean())


def _shares(r: _Ranked) -> np.ndarray:
    sources = r.order[r.valid] // r.n
    if sources.size == 0:
        raise ValueError("mask: no real candidate in any list, so there is no exposure to share")
    return np.bincount(sources, minlength=r.m) / sources.size


def _distribution(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}: expected a 1-D distribution, got shape {arr.shape}")
    if not (np.isfinite(arr).all() and (arr >= 0).all() and math.isclose(arr.sum(), 1.0, abs_tol=1e-6)):
        raise ValueError(f"{name}: must be finite, >= 0 and sum to 1, got {arr.tolist()}")
    return arr


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    nz = p > 0  # 0 * log 0 = 0; q >= p/2 > 0 wherever p > 0
    return float((p[nz] * np.log(p[nz] / q[nz])).sum())


def js_divergence(p, q) -> float:
    """Jensen-Shannon divergence in nats (0..ln 2): `js_divergence([1, 0], [0.5, 0.5])` -> 0.75*ln(4/3)."""
    p, q = _distribution("p", p), _distribution("q", q)
    if p.shape != q.shape:
        raise ValueError(f"q: has {q.size} entries but p has {p.size}; compare distributions of one size")
    mid = (p + q) / 2.0
    return max(0.0, 0.5 * _kl(p, mid) + 0.5 * _kl(q, mid))


def topk_order(scores, mask, k) -> tuple[np.ndarray, np.ndarray]:
    """Top-K (source_idx, slot_idx), each int64 [L, min(k, m*n)]; -1 past a list's real candidates.

    `src, slot = topk_order(scores, mask, 5)`; `scores[l, src[l, r], slot[l, r]]` is rank r of list l.
    """
    r = _rank(scores, mask, k)
    source = np.where(r.valid, r.order // r.n, -1)
    slot = np.where(r.valid, r.order % r.n, -1)
    return source, slot


def auc(scores, labels, mask) -> float:
    """Global ROC AUC over the real candidates of all lists (ties: half credit); nan if one class only."""
    scores, real, labels = _inputs(scores, mask, labels)
    values, positive = scores[real], labels[real] > 0
    num_pos = int(positive.sum())
    num_neg = positive.size - num_pos
    if num_pos == 0 or num_neg == 0:
        return math.nan
    _, group = np.unique(values, return_inverse=True)  # group ids ascend with the score
    pos_per_group = np.bincount(group, weights=positive)
    neg_per_group = np.bincount(group, weights=~positive)
    neg_below = np.cumsum(neg_per_group) - neg_per_group
    wins = (pos_per_group * (neg_below + 0.5 * neg_per_group)).sum()
    return float(wins / (num_pos * num_neg))


def ndcg_at_k(scores, labels, mask, k, skip_no_positive=False) -> float:
    """Mean NDCG@K (gain 2^label-1, discount 1/log2(rank+1), ideal from the list's own labels)."""
    return _ndcg(_rank(scores, mask, k, labels), skip_no_positive)


def map_at_k(scores, labels, mask, k, normalize="hits", skip_no_positive=False) -> float:
    """Mean AP@K: sum of precision@rank over hits in the top-K, divided by the hits in the top-K
    (normalize="hits", DIR/MIR code) or by min(#positives, K) (normalize="min_pos_k"); 0 when nothing
    to divide by."""
    return _map(_rank(scores, mask, k, labels), normalize, skip_no_positive)


def utility_at_k(scores, labels, mask, k) -> float:
    """Mean over lists of the summed labels (clicks) in the top-K."""
    return _utility(_rank(scores, mask, k, labels))


def exposure_shares(scores, mask, k) -> np.ndarray:
    """Share of each source among all top-K places of all lists, float64 [m] summing to 1."""
    return _shares(_rank(scores, mask, k))


def _check_target(target_shares, m: int) -> np.ndarray:
    target = _distribution("target_shares", target_shares)
    if target.size != m:
        raise ValueError(
            f"target_shares: has {target.size} entries but scores have {m} sources; give one share per source"
        )
    return target


def js_at_k(scores, mask, target_shares, k) -> float:
    """JS divergence (nats) between the cumulative top-K source shares and `target_shares`."""
    r = _rank(scores, mask, k)
    return js_divergence(_shares(r), _check_target(target_shares, r.m))


def evaluate_lists(scores, labels, mask, target_shares, k=5, skip_no_positive=False) -> dict[str, float]:
    """All metrics at once (one sort): keys auc, ndcg@k, map@k, map_minpos@k, utility@k, js@k, lists."""
    r = _rank(scores, mask, k, labels)
    target = _check_target(target_shares, r.m)
    return {
        "auc": auc(scores, labels, mask),
        f"ndcg@{k}": _ndcg(r, skip_no_positive),
        f"map@{k}": _map(r, "hits", skip_no_positive),
        f"map_minpos@{k}": _map(r, "min_pos_k", skip_no_positive),
        f"utility@{k}": _utility(r),
        f"js@{k}": js_divergence(_shares(r), target),
        "lists": int(r.order.shape[0]),
    }
