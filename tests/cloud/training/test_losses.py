"""cloud.training.losses: masked BCE, JS divergence, differentiable top-K exposure (straight-through and Gumbel)."""

import math

import pytest
import torch
import torch.nn.functional as F

from cloud.training.losses import (
    METHODS,
    exposure_loss,
    exposure_shares,
    js_divergence,
    topk_membership,
    total_loss,
    utility_loss,
)


def random_lists(batch=64, m=3, n=6, seed=0):
    """Scores and masks with list sizes from 0 to m*n real slots (padding at random places)."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, m, n, generator=g)
    keep = torch.rand(batch, 1, 1, generator=g)
    mask = (torch.rand(batch, m, n, generator=g) < keep).float()
    mask[0] = 0.0
    mask[1] = 1.0
    return scores, mask


def dominated_lists(batch=16):
    """Source 0's real scores sit just above source 1's: the top-3 of every list is all source 0."""
    scores = torch.stack([torch.full((batch, 4), 0.6), torch.full((batch, 4), 0.2)], 1)
    scores = scores + 0.05 * torch.arange(4.0)  # distinct within a source
    mask = torch.ones(batch, 2, 4)
    mask[:, :, 3] = 0.0  # one padded slot per source, with the highest score of its source
    return scores.requires_grad_(), mask


def test_utility_loss_is_the_mean_bce_over_real_slots():
    scores, mask = random_lists()
    labels = (torch.rand(scores.shape) < 0.3).float() * mask
    expected = F.binary_cross_entropy_with_logits(scores[mask > 0], labels[mask > 0])
    assert torch.allclose(utility_loss(scores, labels, mask), expected, atol=1e-6)
    garbage_scores = scores + (1 - mask) * 100.0
    garbage_labels = labels + (1 - mask)
    assert torch.allclose(utility_loss(garbage_scores, garbage_labels, mask), expected, atol=1e-6)


def test_utility_loss_checks_shapes():
    with pytest.raises(ValueError, match="labels: shape"):
        utility_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5), torch.ones(2, 3, 4))


def test_js_divergence_hand_values():
    p = torch.tensor([1.0, 0.0])
    assert js_divergence(p, torch.tensor([0.0, 1.0])).item() == pytest.approx(math.log(2), abs=1e-4)
    a, b = torch.tensor([0.5, 0.4, 0.1]), torch.tensor([0.2, 0.2, 0.6])
    mid = (a + b) / 2
    expected = 0.5 * (a * (a / mid).log()).sum() + 0.5 * (b * (b / mid).log()).sum()
    assert js_divergence(a, b).item() == pytest.approx(expected.item(), abs=1e-5)
    assert js_divergence(a, b).item() == pytest.approx(js_divergence(b, a).item(), abs=1e-7)
    assert js_divergence(a, a).item() == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_topk_selects_exactly_min_k_real_slots(method):
    scores, mask = random_lists(seed=1)
    flat_scores, flat_mask = scores.reshape(64, -1), mask.reshape(64, -1)
    for K in (1, 5, 18, 30):
        member = topk_membership(flat_scores, flat_mask, K, method, generator=torch.Generator().manual_seed(K))
        assert set(member.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(member.sum(1), flat_mask.sum(1).clamp(max=K))
        assert (member * (1 - flat_mask)).sum() == 0  # padding never selected


def test_straight_through_selects_the_best_real_scores():
    scores, mask = random_lists(seed=2)
    flat_scores, flat_mask = scores.reshape(64, -1), mask.reshape(64, -1)
    member = topk_membership(flat_scores + (1 - flat_mask) * 10.0, flat_mask, 4)
    for b in range(64):
        real = flat_scores[b][flat_mask[b] > 0]
        chosen = flat_scores[b][member[b] > 0]
        assert torch.equal(chosen.sort().values, real.sort(descending=True).values[:4].sort().values)


def test_gumbel_draws_are_random_but_reproducible():
    scores, mask = random_lists(seed=3)
    flat = scores.reshape(64, -1), mask.reshape(64, -1)
    first = topk_membership(*flat, 3, "gumbel", generator=torch.Generator().manual_seed(0))
    again = topk_membership(*flat, 3, "gumbel", generator=torch.Generator().manual_seed(0))
    other = topk_membership(*flat, 3, "gumbel", generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.parametrize("method", METHODS)
def test_shares_count_short_lists_by_their_real_items(method):
    scores = torch.zeros(2, 2, 3)
    mask = torch.tensor([[[1.0, 1, 1], [1, 1, 1]], [[0, 0, 0], [1, 0, 0]]])  # 6 real items, then 1
    shares = exposure_shares(scores, mask, K=3, method=method)
    assert shares.sum().item() == pytest.approx(1.0)
    assert shares[1].item() >= 0.25  # the single item of list 2 is exposed: at least 1 of 4 exposures


@pytest.mark.parametrize("method", METHODS)
def test_exposure_loss_is_zero_when_exposure_matches_target(method):
    scores = torch.tensor([[[3.0, 2.0, -5.0], [1.0, -4.0, -6.0]]]).repeat(5, 1, 1)
    mask = torch.ones_like(scores)
    # Gumbel noise (under 20 in size) cannot lift a -80 logit over 20; top-3 = 2 of source 0, 1 of source 1.
    loss = exposure_loss(
        scores * 20, mask, [2 / 3, 1 / 3], K=3, method=method, generator=torch.Generator().manual_seed(0)
    )
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("method", METHODS)
def test_exposure_gradient_favours_the_under_exposed_source(method):
    scores, mask = dominated_lists()
    target = [0.2, 0.8]
    loss = exposure_loss(scores, mask, target, K=3, method=method, generator=torch.Generator().manual_seed(0))
    assert loss.item() > 0.01
    loss.backward()
    grad = scores.grad
    assert (grad[:, 0][mask[:, 0] > 0] >= 0).all() and grad[:, 0].sum() > 0
    assert (grad[:, 1][mask[:, 1] > 0] <= 0).all() and grad[:, 1].sum() < 0
    assert (grad[mask == 0] == 0).all()
    with torch.no_grad():
        before = exposure_shares(scores, mask, 3)[1]
        after = exposure_shares(scores - 5.0 * grad / grad.abs().max(), mask, 3)[1]
    assert after > before


def test_lists_without_a_choice_pass_no_exposure_gradient():
    scores = torch.randn(4, 2, 5, requires_grad=True)
    mask = torch.zeros(4, 2, 5)
    mask[:, 0, :2] = 1.0  # only 2 real items per list, K = 3
    exposure_loss(scores, mask, [0.1, 0.9], K=3).backward()
    assert torch.equal(scores.grad, torch.zeros_like(scores))


def test_exposure_loss_rejects_bad_arguments():
    scores, mask = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    with pytest.raises(ValueError, match="one per source"):
        exposure_loss(scores, mask, [0.5, 0.5], K=2)
    with pytest.raises(ValueError, match="sum to 1"):
        exposure_loss(scores, mask, [0.5, 0.5, 0.5], K=2)
    with pytest.raises(ValueError, match="method must be one of"):
        exposure_loss(scores, mask, [0.2, 0.3, 0.5], K=2, method="sort")
    with pytest.raises(ValueError, match="mask: shape"):
        exposure_loss(scores, torch.ones(2, 3, 5), [0.2, 0.3, 0.5], K=2)


def test_total_loss_mixes_with_beta():
    util, js = torch.tensor(0.8), torch.tensor(0.2)
    assert total_loss(util, js).item() == pytest.approx(0.5)
    assert total_loss(util, js, beta=0.75).item() == pytest.approx(0.65)
    assert total_loss(util, None) is util
    with pytest.raises(ValueError, match="beta"):
        total_loss(util, js, beta=1.5)
