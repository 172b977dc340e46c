"""cloud.evaluation.metrics against hand-computed values and a slow per-list reference (hypothesis)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cloud.evaluation.metrics import (
    auc,
    evaluate_lists,
    exposure_shares,
    js_at_k,
    js_divergence,
    map_at_k,
    ndcg_at_k,
    topk_order,
    utility_at_k,
)

LOG2_3 = math.log2(3)  # discount of rank 2 is 1/log2(3) = 0.63093


def one_source(scores, labels, mask=None):
    """Lists of one source: rows of `scores` become [L, 1, n]."""
    s = np.asarray(scores, dtype=float)[:, None, :]
    y = np.asarray(labels, dtype=float)[:, None, :]
    mk = np.ones_like(s) if mask is None else np.asarray(mask, dtype=float)[:, None, :]
    return s, y, mk


# ---------------------------------------------------------------- AUC


def test_auc_tied_scores_get_half_credit():
    # pos {0.9, 0.5}, neg {0.5, 0.1}: pairs 0.9>0.5, 0.9>0.1, 0.5=0.5 (1/2), 0.5>0.1 -> 3.5 / 4
    s, y, mk = one_source([[0.9, 0.5, 0.5, 0.1]], [[1, 1, 0, 0]])
    assert auc(s, y, mk) == pytest.approx(0.875)
    # all scores equal: every pair is a tie -> 0.5
    s, y, mk = one_source([[0.3, 0.3, 0.3]], [[1, 0, 0]])
    assert auc(s, y, mk) == pytest.approx(0.5)


def test_auc_is_global_over_lists_not_a_mean_of_lists():
    # list 0: pos 3, neg 1; list 1: pos 2, neg 4 and 0 (third slot of list 0 padded).
    # pooled pos {3, 2} vs neg {1, 4, 0}: 3 beats 1,0; 2 beats 1,0; 4 beats both -> 4 / 6.
    # (A per-list mean would be (1 + 1/2) / 2 = 0.75.)
    s, y, mk = one_source([[3, 1, 0], [2, 4, 0]], [[1, 0, 0], [1, 0, 0]], [[1, 1, 0], [1, 1, 1]])
    assert auc(s, y, mk) == pytest.approx(4 / 6)


def test_auc_ignores_padded_slot_with_huge_score():
    # real: pos 0.9 vs neg 0.1 -> 1.0; the padded 1e9 (label 0) would halve it if it counted
    s, y, mk = one_source([[0.9, 0.1, 1e9]], [[1, 0, 0]], [[1, 1, 0]])
    assert auc(s, y, mk) == 1.0


def test_auc_one_class_is_nan():
    s, y, mk = one_source([[0.9, 0.1]], [[0, 0]])
    assert math.isnan(auc(s, y, mk))
    # the only positive is padding -> still one class
    s, y, mk = one_source([[0.9, 0.1]], [[0, 1]], [[1, 0]])
    assert math.isnan(auc(s, y, mk))


# ---------------------------------------------------------------- ordering


def test_topk_order_ties_keep_slot_order_and_skip_padding():
    s = np.full((1, 2, 2), 1.0)  # all tied
    mk = np.array([[[1, 0], [1, 1]]], dtype=float)
    src, slot = topk_order(s, mk, 4)
    # flat slot order: (0,0) (0,1)=padded (1,0) (1,1); only 3 real -> last place -1
    assert src.tolist() == [[0, 1, 1, -1]]
    assert slot.tolist() == [[0, 0, 1, -1]]


def test_topk_order_padded_huge_score_never_enters():
    s = np.array([[[5.0, 1e9], [3.0, 1.0]]])
    mk = np.array([[[1, 0], [1, 1]]], dtype=float)
    src, slot = topk_order(s, mk, 2)
    assert list(zip(src[0], slot[0])) == [(0, 0), (1, 0)]


def test_topk_order_k_larger_than_slots_is_capped():
    s, _, mk = one_source([[1, 2, 3]], [[0, 0, 0]])
    src, slot = topk_order(s, mk, 10)
    assert src.shape == (1, 3)  # min(k, m*n)
    assert slot.tolist() == [[2, 1, 0]]


def test_ndcg_ranking_tie_broken_by_slot_order():
    # tie -> slot 0 (label 0) ranks first, slot 1 (label 1) second: DCG = 1/log2(3), IDCG = 1
    s, y, mk = one_source([[1.0, 1.0]], [[0, 1]])
    assert ndcg_at_k(s, y, mk, 2) == pytest.approx(1 / LOG2_3)
    s, y, mk = one_source([[1.0, 1.0]], [[1, 0]])
    assert ndcg_at_k(s, y, mk, 2) == 1.0


# ---------------------------------------------------------------- NDCG / MAP values


def test_perfect_ordering_gives_one():
    # labels 1,1,0,0,1 scored 5,4,1,0,3: order = slots 0,1,4,2,3 -> all three positives first
    s, y, mk = one_source([[5, 4, 1, 0, 3]], [[1, 1, 0, 0, 1]])
    for k in (1, 2, 3, 5):
        assert ndcg_at_k(s, y, mk, k) == pytest.approx(1.0)
        assert map_at_k(s, y, mk, k, normalize="hits") == pytest.approx(1.0)
        assert map_at_k(s, y, mk, k, normalize="min_pos_k") == pytest.approx(1.0)


def test_reversed_ordering_values():
    # labels 1,1,0,0 scored 1,2,3,4 -> ranked labels 0,0,1,1
    s, y, mk = one_source([[1, 2, 3, 4]], [[1, 1, 0, 0]])
    # NDCG@4: DCG = 1/log2(4) + 1/log2(5) = 0.5 + 0.430677; IDCG = 1 + 1/log2(3) -> 0.570641
    assert ndcg_at_k(s, y, mk, 4) == pytest.approx((0.5 + 1 / math.log2(5)) / (1 + 1 / LOG2_3))
    # MAP@4: hits at ranks 3, 4: precisions 1/3, 2/4; 2 hits and min(2 pos, 4) = 2 -> 5/12 both
    assert map_at_k(s, y, mk, 4, normalize="hits") == pytest.approx(5 / 12)
    assert map_at_k(s, y, mk, 4, normalize="min_pos_k") == pytest.approx(5 / 12)
    # top-2 has no hit -> NDCG@2 = 0, MAP@2 = 0
    assert ndcg_at_k(s, y, mk, 2) == 0.0
    assert map_at_k(s, y, mk, 2) == 0.0


def test_map_conventions_differ_on_one_example():
    # same reversed list, K = 3: top-3 labels 0,0,1 -> one hit at rank 3 (precision 1/3)
    s, y, mk = one_source([[1, 2, 3, 4]], [[1, 1, 0, 0]])
    assert map_at_k(s, y, mk, 3, normalize="hits") == pytest.approx(1 / 3)  # / 1 hit
    assert map_at_k(s, y, mk, 3, normalize="min_pos_k") == pytest.approx(1 / 6)  # / min(2, 3)


def test_ndcg_graded_gain():
    # labels 2,1 scored 0,1 -> ranked 1,2: DCG = 1 + 3/log2(3); IDCG = 3 + 1/log2(3) -> 0.796705
    s, y, mk = one_source([[0, 1]], [[2, 1]])
    assert ndcg_at_k(s, y, mk, 2) == pytest.approx((1 + 3 / LOG2_3) / (3 + 1 / LOG2_3))


def test_lists_without_positives_count_zero_or_are_skipped():
    # list 0 perfect (1.0), list 1 has no positive (0.0)
    s, y, mk = one_source([[2, 1], [2, 1]], [[1, 0], [0, 0]])
    assert ndcg_at_k(s, y, mk, 2) == pytest.approx(0.5)
    assert ndcg_at_k(s, y, mk, 2, skip_no_positive=True) == pytest.approx(1.0)
    assert map_at_k(s, y, mk, 2) == pytest.approx(0.5)
    assert map_at_k(s, y, mk, 2, normalize="min_pos_k", skip_no_positive=True) == pytest.approx(1.0)
    # no list left to average
    assert math.isnan(ndcg_at_k(s[1:], y[1:], mk[1:], 2, skip_no_positive=True))


def test_padded_slot_never_counts_in_ndcg_map_utility():
    # source 0: real (score 5, label 0), padded (score 1e9, label 1 on purpose)
    # source 1: real (score 3, label 1), real (score 1, label 0)
    s = np.array([[[5.0, 1e9], [3.0, 1.0]]])
    y = np.array([[[0.0, 1.0], [1.0, 0.0]]])
    mk = np.array([[[1, 0], [1, 1]]], dtype=float)
    # ranked real labels 0,1,0; ideal from real labels only = 1,0,0
    assert ndcg_at_k(s, y, mk, 2) == pytest.approx(1 / LOG2_3)  # DCG 1/log2(3), IDCG 1
    assert map_at_k(s, y, mk, 2) == pytest.approx(1 / 2)  # hit at rank 2: 1/2, one hit
    assert utility_at_k(s, y, mk, 1) == 0.0
    assert utility_at_k(s, y, mk, 3) == 1.0


def test_k_larger_than_list():
    # 3 real candidates, k = 10: top-K is all 3, ranked labels 0,0,1
    s, y, mk = one_source([[1, 2, 3, 99]], [[1, 0, 0, 0]], [[1, 1, 1, 0]])
    assert ndcg_at_k(s, y, mk, 10) == pytest.approx(1 / math.log2(4))  # 0.5 / IDCG 1
    assert map_at_k(s, y, mk, 10) == pytest.approx(1 / 3)
    assert map_at_k(s, y, mk, 10, normalize="min_pos_k") == pytest.approx(1 / 3)  # min(1, 10) = 1
    assert utility_at_k(s, y, mk, 10) == 1.0


def test_utility_is_mean_clicks_in_top_k():
    # list 0: top-2 labels 1,1 -> 2 clicks; list 1: top-2 labels 0,0 (its click is 3rd) -> 0; mean 1
    s, y, mk = one_source([[3, 2, 1], [3, 2, 1]], [[1, 1, 0], [0, 0, 1]])
    assert utility_at_k(s, y, mk, 2) == pytest.approx(1.0)
    assert utility_at_k(s, y, mk, 3) == pytest.approx(1.5)  # (2 + 1) / 2


def test_oracle_probabilities_as_scores_with_nan_at_padding():
    # true click probabilities are NaN at padding; they are ignored there
    s = np.array([[[0.2, np.nan], [0.7, 0.1]]])
    y = np.array([[[0.0, 0.0], [1.0, 0.0]]])
    mk = np.array([[[1, 0], [1, 1]]], dtype=float)
    assert ndcg_at_k(s, y, mk, 2) == 1.0
    assert auc(s, y, mk) == 1.0


# ---------------------------------------------------------------- exposure / JS


def test_js_divergence_known_values():
    # p=(1,0), q=(.5,.5): mid=(.75,.25); KL(p|mid)=ln(4/3); KL(q|mid)=.5ln(2/3)+.5ln2=.5ln(4/3)
    # JS = .5*ln(4/3) + .5*.5*ln(4/3) = .75*ln(4/3) = 0.215762
    expected = 0.75 * math.log(4 / 3)
    assert js_divergence([1, 0], [0.5, 0.5]) == pytest.approx(expected)
    assert js_divergence([0.5, 0.5], [1, 0]) == pytest.approx(expected)  # symmetric
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(math.log(2))  # disjoint: ln 2
    assert js_divergence([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


def test_exposure_shares_count_only_occupied_top_k_places():
    s = np.array(
        [
            [[9.0, 100.0], [1.0, 2.0]],  # (0,1) padded: top-2 = (0,0), (1,1) -> sources 0, 1
            [[5.0, 4.0], [3.0, 2.0]],  # top-2 = (0,0), (0,1) -> sources 0, 0
            [[0.0, 0.0], [1.0, 0.0]],  # one real candidate -> one place, source 1
        ]
    )
    mk = np.array(
        [
            [[1, 0], [1, 1]],
            [[1, 1], [1, 1]],
            [[0, 0], [1, 0]],
        ],
        dtype=float,
    )
    # source 0: 3 places, source 1: 2 places, 5 places in all
    np.testing.assert_allclose(exposure_shares(s, mk, 2), [0.6, 0.4])
    assert js_at_k(s, mk, [0.6, 0.4], 2) == pytest.approx(0.0, abs=1e-12)


def test_js_at_k_zero_when_exposure_matches_target_and_known_value_otherwise():
    # K = 1: list 0 shows source 0 first, list 1 shows source 1 -> shares (.5, .5)
    s = np.array([[[2.0], [1.0]], [[1.0], [2.0]]])
    mk = np.ones_like(s)
    assert js_at_k(s, mk, [0.5, 0.5], 1) == 0.0
    # both lists show source 0 -> shares (1, 0) vs (.5, .5) -> .75*ln(4/3)
    s2 = np.array([[[2.0], [1.0]], [[2.0], [1.0]]])
    assert js_at_k(s2, mk, [0.5, 0.5], 1) == pytest.approx(0.75 * math.log(4 / 3))


# ---------------------------------------------------------------- evaluate_lists


def test_evaluate_lists_hand_computed():
    # m = 2 sources, n = 2 slots. K = 2.
    # list 0: scores s0=(4, 1), s1=(3, 2); labels s0=(1, 0), s1=(0, 1)
    #   ranked: (0,0) lab 1, (1,0) lab 0, (1,1) lab 1, (0,1) lab 0 -> top-2 labels 1,0, sources 0,1
    #   NDCG@2 = 1 / (1 + 1/log2 3); AP hits = 1/1 / 1 = 1; AP min_pos = 1 / min(2,2) = 0.5; clicks 1
    # list 1: scores s0=(1, 9 padded), s1=(2, 0); labels s0=(0, 0), s1=(0, 0) -> no positive
    #   top-2 = (1,0), (0,0) -> sources 1,0; NDCG 0, AP 0, clicks 0
    # exposure: source 0: 2, source 1: 2 -> (.5, .5); target (.5, .5) -> JS 0
    # AUC: pos {4, 2} vs neg {1, 3, 1, 2, 0}:
    #   4 beats all 5; 2 beats 1, 1, 0 and ties 2 -> 3.5; total 8.5 / 10
    s = np.array([[[4.0, 1.0], [3.0, 2.0]], [[1.0, 9.0], [2.0, 0.0]]])
    y = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    mk = np.array([[[1, 1], [1, 1]], [[1, 0], [1, 1]]], dtype=float)
    got = evaluate_lists(s, y, mk, [0.5, 0.5], k=2)
    assert set(got) == {"auc", "ndcg@2", "map@2", "map_minpos@2", "utility@2", "js@2", "lists"}
    assert got["auc"] == pytest.approx(0.85)
    assert got["ndcg@2"] == pytest.approx(0.5 / (1 + 1 / LOG2_3))
    assert got["map@2"] == pytest.approx(0.5)
    assert got["map_minpos@2"] == pytest.approx(0.25)
    assert got["utility@2"] == pytest.approx(0.5)
    assert got["js@2"] == 0.0
    assert got["lists"] == 2
    skipped = evaluate_lists(s, y, mk, [0.5, 0.5], k=2, skip_no_positive=True)
    assert skipped["ndcg@2"] == pytest.approx(1 / (1 + 1 / LOG2_3))
    assert skipped["map@2"] == pytest.approx(1.0)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s, y, mk: auc(s[0], y[0], mk[0]), "scores: expected an array"),
        (lambda s, y, mk: auc(s, y[:, :, :1], mk), "labels: shape"),
        (lambda s, y, mk: auc(s, y, mk * 0.5), "mask: values must be 0 or 1"),
        (lambda s, y, mk: auc(np.where(mk > 0, np.nan, s), y, mk), "scores: NaN score"),
        (lambda s, y, mk: ndcg_at_k(s, -y, mk, 2), "labels: negative"),
        (lambda s, y, mk: ndcg_at_k(s, y, mk, 0), "k: must be a positive integer"),
        (lambda s, y, mk: map_at_k(s, y, mk, 2, normalize="all"), "normalize: must be one of"),
        (lambda s, y, mk: js_at_k(s, mk, [1.0], 1), "target_shares: has 1 entries"),
        (lambda s, y, mk: js_at_k(s, mk, [0.5, 0.6], 1), "target_shares: must be finite"),
        (lambda s, y, mk: exposure_shares(s, mk * 0, 1), "mask: no real candidate"),
    ],
)
def test_bad_input_names_the_field(call, message):
    s = np.array([[[2.0, 1.0], [0.5, 0.2]]])
    y = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    mk = np.ones_like(s)
    with pytest.raises(ValueError, match=message):
        call(s, y, mk)


# ---------------------------------------------------------------- property test vs slow reference


def reference(scores, labels, mask, k):
    """Per-list loops: ndcg, map (hits), map (min_pos_k), utility means, exposure counts, AUC."""
    num_lists, m, n = scores.shape
    ndcg, ap_hits, ap_min, util = [], [], [], []
    counts = np.zeros(m)
    pooled = []
    for li in range(num_lists):
        items = [
            (scores[li, s, j], s * n + j, s, labels[li, s, j])
            for s in range(m)
            for j in range(n)
            if mask[li, s, j] == 1
        ]
        pooled += [(sc, lab) for sc, _, _, lab in items]
        ranked = sorted(items, key=lambda it: (-it[0], it[1]))[:k]
        dcg = sum((2**lab - 1) / math.log2(r + 2) for r, (_, _, _, lab) in enumerate(ranked))
        gold = sorted((lab for *_, lab in items), reverse=True)[:k]
        idcg = sum((2**lab - 1) / math.log2(r + 2) for r, lab in enumerate(gold))
        ndcg.append(dcg / idcg if idcg > 0 else 0.0)
        hits, prec = 0, 0.0
        for r, (_, _, s, lab) in enumerate(ranked):
            counts[s] += 1
            if lab > 0:
                hits += 1
                prec += hits / (r + 1)
        npos = sum(1 for *_, lab in items if lab > 0)
        ap_hits.append(prec / hits if hits else 0.0)
        ap_min.append(prec / min(npos, k) if npos else 0.0)
        util.append(sum(lab for *_, lab in ranked))
    pos = [sc for sc, lab in pooled if lab > 0]
    neg = [sc for sc, lab in pooled if lab == 0]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    the_auc = wins / (len(pos) * len(neg)) if pos and neg else math.nan
    return np.mean(ndcg), np.mean(ap_hits), np.mean(ap_min), np.mean(util), counts, the_auc


@st.composite
def list_batches(draw):
    shape = (draw(st.integers(1, 6)), draw(st.integers(1, 3)), draw(st.integers(1, 4)))
    scores = draw(arrays(np.float64, shape, elements=st.integers(0, 3).map(float)))  # many ties
    mask = draw(arrays(np.float64, shape, elements=st.sampled_from([0.0, 1.0])))
    labels = draw(arrays(np.float64, shape, elements=st.sampled_from([0.0, 1.0]))) * mask
    return scores, labels, mask, draw(st.integers(1, 8))


@settings(max_examples=150, deadline=None)
@given(list_batches())
def test_vectorised_matches_per_list_reference(batch):
    scores, labels, mask, k = batch
    ndcg, ap_hits, ap_min, util, counts, the_auc = reference(scores, labels, mask, k)
    assert ndcg_at_k(scores, labels, mask, k) == pytest.approx(ndcg)
    assert map_at_k(scores, labels, mask, k, normalize="hits") == pytest.approx(ap_hits)
    assert map_at_k(scores, labels, mask, k, normalize="min_pos_k") == pytest.approx(ap_min)
    assert utility_at_k(scores, labels, mask, k) == pytest.approx(util)
    if math.isnan(the_auc):
        assert math.isnan(auc(scores, labels, mask))
    else:
        assert auc(scores, labels, mask) == pytest.approx(the_auc)
    if counts.sum() > 0:
        np.testing.assert_allclose(exposure_shares(scores, mask, k), counts / counts.sum())
