"""List decoding around a fixed-shape network's outputs, in numpy (no torch): SVR's beam search,
NAR4Rec's contrastive decoding and HRL's slot-by-slot policy calls.

    probs = [1 / (1 + np.exp(-scores[0, s, :count_s])) for s, count_s in enumerate(counts)]
    order = beam_search(probs, K=5, beam_width=4, target_shares=[.5, .5], diversity=1.0)
    # [(source index, item index), ...]: every real candidate once, the top-K decided by the search

    order = contrastive_decode(probs [N, S], similarity [N, N], valid [N], alpha=0.2)   # flat indices
    order = slot_decode(run, request, K=5)       # run(inputs) -> scores [1, m, n], e.g. cloud.export.open_runner

    # a bundle's decoder (manifest.decoder) on the outputs of one assembled request, as the Reranker runs it:
    order = decode_request("beam_search", {"beam_width": 4, "diversity": 1.0}, backend.run_all(request), request,
                           K=5, target_shares=[.5, .5], run=backend.run)     # [(source, item), ...]

The reward of a top-K prefix y_1..y_k (SVR maximises a list reward on the estimated scores; its exact
reward is not given in the paper, this one is our choice): R = sum_j p(y_j) / log2(j + 1)  (expected clicks,
DCG-discounted)  -  diversity * JS(target_shares, source shares of the prefix) * k / K. The JS term is
not additive over slots, which is what makes a beam wider than 1 differ from sorting. Beams extend by
every unused candidate, keep the `beam_width` best prefixes (ties: lower source, then lower item, then
earlier beam); the rest of the list follows by probability, as in merge.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from shared_schema.manifest import DECODERS

Network = Callable[[dict[str, np.ndarray]], np.ndarray]
"""One call of the network: named input arrays -> its first output (scores [1, m, n])."""


def beam_search(
    probs: Sequence[np.ndarray],
    K: int,
    beam_width: int = 4,
    target_shares: Sequence[float] | None = None,
    diversity: float = 0.0,
) -> list[tuple[int, int]]:
    """Every real candidate once as (source, item): the best top-K prefix found, then the rest by probability."""
    arrays = [_probs(p, s) for s, p in enumerate(probs)]
    m = len(arrays)
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 0:
        raise ValueError(f"K: expected an int >= 0, got {K!r}")
    if isinstance(beam_width, bool) or not isinstance(beam_width, (int, np.integer)) or beam_width < 1:
        raise ValueError(f"beam_width: expected an int >= 1, got {beam_width!r}")
    if not np.isfinite(diversity) or diversity < 0:
        raise ValueError(f"diversity: expected a finite number >= 0, got {diversity!r}")
    target = _shares(target_shares, m)

    src = (
        np.concatenate([np.full(a.size, s, dtype=np.int64) for s, a in enumerate(arrays)])
        if m
        else np.zeros(0, np.int64)
    )
    idx = np.concatenate([np.arange(a.size) for a in arrays]) if m else np.zeros(0, np.int64)
    val = np.concatenate(arrays) if m else np.zeros(0)
    k = min(int(K), val.size)
    onehot = np.eye(m)[src]  # [N, m]
    beams: list[tuple[float, list[int]]] = [(0.0, [])]
    for step in range(k):
        gain = val / np.log2(step + 2.0)
        parts = []
        for b, (total, prefix) in enumerate(beams):
            free = np.ones(val.size, dtype=bool)
            free[prefix] = False
            cand = np.flatnonzero(free)
            shares = (onehot[prefix].sum(axis=0) + onehot[cand]) / (step + 1.0)  # [c, m] after adding each
            base = total + gain[cand]
            value = base - diversity * _js_rows(target, shares) * (step + 1.0) / k
            parts.append((value, base, np.full(cand.size, b), cand))
        value, base, beam, cand = (np.concatenate(column) for column in zip(*parts))
        keep = np.lexsort((beam, idx[cand], src[cand], -value))[:beam_width]
        beams = [(float(base[i]), beams[beam[i]][1] + [int(cand[i])]) for i in keep]
    best = beams[0][1]
    chosen = np.zeros(val.size, dtype=bool)
    chosen[best] = True
    rest = [i for i in np.lexsort((idx, src, -val)) if not chosen[i]]
    return [(int(src[i]), int(idx[i])) for i in [*best, *rest]]


def contrastive_decode(probs: np.ndarray, similarity: np.ndarray, valid: np.ndarray, alpha: float = 0.2) -> list[int]:
    """NAR4Rec's decoding (Eq. 16-17): for slot j = 0..S-1 pick the unpicked valid candidate maximising
    (1 - alpha) * probs[i, j] - alpha * max over picked k of similarity[i, k] (no penalty at slot 0; ties to
    the lower index); then the other valid candidates by their slot marginal sum_j probs[i, j]. Returns
    indices into the N rows; every valid candidate exactly once, no padded one."""
    p = np.asarray(probs, dtype=np.float64)
    sim = np.asarray(similarity, dtype=np.float64)
    keep = np.asarray(valid, dtype=bool)
    if p.ndim != 2 or sim.shape != (p.shape[0], p.shape[0]) or keep.shape != (p.shape[0],):
        raise ValueError(
            f"contrastive_decode: expected probs [N, S], similarity [N, N], valid [N]; got "
            f"{p.shape}, {sim.shape}, {keep.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}")
    open_ = keep.copy()
    penalty = np.zeros(p.shape[0])
    picked: list[int] = []
    for j in range(min(p.shape[1], int(keep.sum()))):
        value = np.where(open_, (1.0 - alpha) * p[:, j] - alpha * penalty, -np.inf)
        best = int(np.argmax(value))
        picked.append(best)
        open_[best] = False
        penalty = sim[:, best] if len(picked) == 1 else np.maximum(penalty, sim[:, best])
    rest = np.flatnonzero(open_)
    rest = rest[np.lexsort((rest, -p[rest].sum(axis=1)))]
    return picked + [int(i) for i in rest]


def slot_decode(run: Network, request: dict[str, np.ndarray], K: int) -> list[tuple[int, int]]:
    """HRL's decoding: per slot, call the policy network on the request with the placed candidates'
    `cand_mask_{s}` entries zeroed, place the best real unplaced (source, item) (ties: lower source, then
    lower item); after min(K, #real) slots the rest follow by the last call's scores."""
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 0:
        raise ValueError(f"K: expected an int >= 0, got {K!r}")
    m = sum(1 for name in request if name.startswith("cand_mask_"))
    masks = [np.asarray(request[f"cand_mask_{s}"], dtype=np.float32).copy() for s in range(m)]
    order: list[tuple[int, int]] = []
    scores: np.ndarray | None = None
    for _ in range(min(int(K), int(sum(mask.sum() for mask in masks)))):
        scores = np.asarray(run({**request, **{f"cand_mask_{s}": masks[s] for s in range(m)}}))[0]
        value = np.where(np.stack([mask[0] for mask in masks]) > 0, scores, -np.inf)
        s, i = np.unravel_index(int(np.argmax(value)), value.shape)
        order.append((int(s), int(i)))
        masks[s][0, i] = 0.0
    if scores is None and any(mask.sum() for mask in masks):
        scores = np.asarray(run(request))[0]
    if scores is None:  # no real candidate at all
        return order
    rest = [(s, i) for s in range(m) for i in np.flatnonzero(masks[s][0] > 0)]
    rest.sort(key=lambda si: (-scores[si], si))
    return order + [(int(s), int(i)) for s, i in rest]


def decode_request(
    decoder: str,
    options: Mapping[str, float | int],
    outputs: Sequence[np.ndarray],
    request: Mapping[str, np.ndarray],
    K: int,
    target_shares: Sequence[float],
    run: Network | None = None,
) -> list[tuple[int, int]]:
    """The list a bundle decoder (shared_schema.manifest.DECODERS, all options given) builds for one assembled
    request from the network's `outputs` on it (the manifest's outputs, `scores` first): every real candidate
    once as (source, item), the top-K by the decoder, the rest by score. `REQUEST_DECODERS` maps each
    decoder name to its function.

    beam_search: `beam_search` over sigmoid(scores); slot_policy: `slot_decode` with `run` calling the
    network (its call on the request itself reuses `outputs`); contrastive: `contrastive_decode` over the
    `matching` output and the cosine similarities of the unit-norm `encodings` (flat s*n + j rows).
    """
    if decoder not in REQUEST_DECODERS:
        raise ValueError(
            f"decoder {decoder!r}: decode_request runs {sorted(REQUEST_DECODERS)} "
            "(merge.py builds the list of a `merge` bundle)"
        )
    scores = np.asarray(outputs[0])[0]
    real = [np.flatnonzero(np.asarray(request[f"cand_mask_{s}"])[0] > 0) for s in range(scores.shape[0])]
    return REQUEST_DECODERS[decoder](options, outputs, request, K, target_shares, run, scores, real)


def _beam_search_request(
    options: Mapping[str, float | int],
    outputs: Sequence[np.ndarray],
    request: Mapping[str, np.ndarray],
    K: int,
    target_shares: Sequence[float],
    run: Network | None,
    scores: np.ndarray,
    real: list[np.ndarray],
) -> list[tuple[int, int]]:
    probs = [1.0 / (1.0 + np.exp(-scores[s, items].astype(np.float64))) for s, items in enumerate(real)]
    order = beam_search(probs, K, int(options["beam_width"]), target_shares, float(options["diversity"]))
    return [(s, int(real[s][i])) for s, i in order]


def _slot_policy_request(
    options: Mapping[str, float | int],
    outputs: Sequence[np.ndarray],
    request: Mapping[str, np.ndarray],
    K: int,
    target_shares: Sequence[float],
    run: Network | None,
    scores: np.ndarray,
    real: list[np.ndarray],
) -> list[tuple[int, int]]:
    if run is None:
        raise ValueError("slot_policy: give `run`, the network call for the request with placed candidates masked")
    masks = [name for name in request if name.startswith("cand_mask_")]

    def policy(inputs: dict[str, np.ndarray]) -> np.ndarray:
        same = all(np.array_equal(inputs[name], request[name]) for name in masks)
        return outputs[0] if same else run(inputs)

    return slot_decode(policy, dict(request), K)


def _contrastive_request(
    options: Mapping[str, float | int],
    outputs: Sequence[np.ndarray],
    request: Mapping[str, np.ndarray],
    K: int,
    target_shares: Sequence[float],
    run: Network | None,
    scores: np.ndarray,
    real: list[np.ndarray],
) -> list[tuple[int, int]]:
    matching, unit = np.asarray(outputs[1])[0], np.asarray(outputs[2])[0]
    valid = np.zeros(scores.shape, dtype=bool)
    for s, items in enumerate(real):
        valid[s, items] = True
    n = scores.shape[1]
    flat = contrastive_decode(matching, unit @ unit.T, valid.reshape(-1), float(options["alpha"]))
    return [(i // n, i % n) for i in flat]


REQUEST_DECODERS = {
    "beam_search": _beam_search_request,
    "slot_policy": _slot_policy_request,
    "contrastive": _contrastive_request,
}
"""The device's list decoders by manifest name: every decoder of shared_schema.manifest.DECODERS but
`merge`, which merge.py runs."""
if set(REQUEST_DECODERS) != set(DECODERS) - {"merge"}:
    raise ImportError(
        f"device_runtime.decoding implements {sorted(REQUEST_DECODERS)}, the schema declares "
        f"{sorted(DECODERS)}: register every decoder in both"
    )


def list_reward(
    probs: Sequence[np.ndarray],
    order: Sequence[tuple[int, int]],
    K: int,
    target_shares: Sequence[float] | None = None,
    diversity: float = 0.0,
) -> float:
    """The reward `beam_search` maximises, of the first K entries of `order`."""
    arrays = [_probs(p, s) for s, p in enumerate(probs)]
    top = list(order)[:K]
    target = _shares(target_shares, len(arrays))
    counts = np.bincount([s for s, _ in top], minlength=len(arrays)).astype(np.float64)
    gain = sum(arrays[s][i] / np.log2(j + 2.0) for j, (s, i) in enumerate(top))
    if not top:
        return 0.0
    return float(
        gain
        - diversity
        * _js_rows(target, counts[None] / len(top))[0]
        * len(top)
        / max(min(K, sum(a.size for a in arrays)), 1)
    )


def _js_rows(p: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (natural log) of distribution p [m] and each row of rows [r, m]."""
    mid = (p + rows) / 2.0
    js: np.ndarray = 0.5 * (_kl_rows(np.broadcast_to(p, rows.shape), mid) + _kl_rows(rows, mid))
    return js


def _kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    safe = np.where(p > 0, p, 1.0)
    kl: np.ndarray = np.sum(np.where(p > 0, p * np.log(safe / np.where(p > 0, q, 1.0)), 0.0), axis=-1)
    return kl


def _probs(p: npt.ArrayLike, s: int) -> np.ndarray:
    a = np.asarray(p, dtype=np.float64)
    if a.ndim != 1 or not np.isfinite(a).all():
        raise ValueError(
            f"probs[{s}]: expected a 1-D array of finite probabilities (real candidates only), got shape {a.shape}"
        )
    return a


def _shares(shares: Sequence[float] | None, m: int) -> np.ndarray:
    if shares is None:
        return np.full(m, 1.0 / max(m, 1))
    w = np.asarray(shares, dtype=np.float64)
    if w.shape != (m,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"target_shares: expected {m} finite non-negative numbers with a positive sum, got {shares!r}")
    normalised: np.ndarray = w / w.sum()
    return normalised
