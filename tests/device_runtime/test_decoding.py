"""device_runtime.decoding: SVR's beam search over a list reward (numpy, no torch)."""

import itertools
import subprocess
import sys

import numpy as np
import pytest

from device_runtime.decoding import beam_search, list_reward


def random_probs(seed: int, sizes=(4, 3, 2)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(size) for size in sizes]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("K", [0, 1, 3, 5, 20])
def test_every_candidate_exactly_once_and_top_k_from_the_search(seed, K):
    probs = random_probs(seed)
    order = beam_search(probs, K=K, beam_width=3, target_shares=[0.5, 0.3, 0.2], diversity=2.0)
    assert sorted(order) == sorted((s, i) for s, p in enumerate(probs) for i in range(p.size))
    rest = order[min(K, len(order)) :]
    values = [probs[s][i] for s, i in rest]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize("seed", range(5))
def test_without_diversity_the_top_k_is_the_best_k_by_probability(seed):
    probs = random_probs(seed)
    order = beam_search(probs, K=4, beam_width=2)
    flat = sorted((p for a in probs for p in a), reverse=True)
    assert [probs[s][i] for s, i in order] == flat


@pytest.mark.parametrize("seed", range(6))
def test_a_wide_beam_finds_the_exact_best_prefix_and_a_narrow_one_never_beats_it(seed):
    probs = random_probs(seed, sizes=(3, 3, 1))
    shares, K, div = [0.2, 0.2, 0.6], 3, 3.0
    items = [(s, i) for s, p in enumerate(probs) for i in range(p.size)]
    best = max(list_reward(probs, list(top), K, shares, div) for top in itertools.permutations(items, K))
    wide = list_reward(
        probs, beam_search(probs, K, beam_width=1000, target_shares=shares, diversity=div), K, shares, div
    )
    greedy = list_reward(
        probs, beam_search(probs, K, beam_width=1, target_shares=shares, diversity=div), K, shares, div
    )
    assert wide == pytest.approx(best)
    assert greedy <= wide + 1e-12


def test_diversity_pulls_a_starved_source_into_the_top_k():
    probs = [np.array([0.9, 0.8, 0.7]), np.array([0.1])]
    assert (1, 0) not in beam_search(probs, K=2, beam_width=2)[:2]
    assert (1, 0) in beam_search(probs, K=2, beam_width=2, target_shares=[0.5, 0.5], diversity=5.0)[:2]


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(random_probs(0), K=2, beam_width=0)
    with pytest.raises(ValueError, match="target_shares"):
        beam_search(random_probs(0), K=2, target_shares=[1.0])
    with pytest.raises(ValueError, match=r"probs\[1\]"):
        beam_search([np.ones(2), np.ones((2, 2))], K=2)


def test_decoding_never_imports_torch():
    code = "import sys, device_runtime.decoding; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
