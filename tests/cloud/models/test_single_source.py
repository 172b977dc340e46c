"""The single-source baselines' shared input: one candidate set, the merged history, recency ranks."""

import torch

from cloud.models.dir import MASKED, PAD_LOGIT
from cloud.models.single_source import SingleSourceInput, masked_softmax, recency_rank, source_scores


def _inputs():
    """Two sources (widths 3 and 2), n=2, t=3; source 0 has 2 behaviours, source 1 has 1."""
    cand0, cand1 = torch.randn(1, 2, 3), torch.randn(1, 2, 2)
    hist0, hist1 = torch.randn(1, 3, 3), torch.randn(1, 3, 2)
    masks = [
        torch.tensor([[1.0, 0]]),
        torch.tensor([[1.0, 1, 0]]),
        torch.tensor([[1.0, 1]]),
        torch.tensor([[1.0, 0, 0]]),
    ]
    return (
        cand0,
        masks[0],
        hist0 * masks[1].unsqueeze(-1),
        masks[1],
        cand1,
        masks[2],
        hist1 * masks[3].unsqueeze(-1),
        masks[3],
    )


def test_candidates_are_flattened_by_source_and_history_interleaved_by_recency():
    torch.manual_seed(0)
    flat = SingleSourceInput([3, 2], width=4)
    inputs = _inputs()
    cand, cand_mask, hist, hist_mask = flat(*inputs)
    assert cand.shape == (1, 4, 4) and hist.shape == (1, 6, 4)
    assert cand_mask.tolist() == [[1, 0, 1, 1]]
    expected = flat.project[1](inputs[4][:, 1]) + flat.source[1]
    assert torch.allclose(cand[:, 3], expected)
    assert torch.equal(cand[:, 1], torch.zeros(1, 4))  # padded slots zeroed
    # merged slot r*m + s = source s's r-th newest behaviour
    assert hist_mask.tolist() == [[1, 1, 1, 0, 0, 0]]
    assert torch.allclose(hist[:, 1], flat.project[1](inputs[6][:, 0]) + flat.source[1])
    assert torch.allclose(hist[:, 2], flat.project[0](inputs[2][:, 1]) + flat.source[0])


def test_recency_rank_counts_newer_real_behaviours():
    mask = torch.tensor([[1.0, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0]])
    assert recency_rank(mask).tolist() == [[0, 1, 1, 2, 3, 3], [0, 0, 0, 0, 0, 0]]


def test_source_scores_reshape_and_pad():
    logits = torch.arange(6.0).reshape(1, 6)
    mask = torch.tensor([[1.0, 1, 0, 1, 0, 0]])
    assert source_scores(logits, mask, 2).tolist() == [[[0, 1, PAD_LOGIT], [3, PAD_LOGIT, PAD_LOGIT]]]


def test_masked_softmax_ignores_masked_entries_and_stays_finite_when_all_are():
    logits = torch.tensor([[2.0, 50.0, 1.0], [3.0, 4.0, 5.0]])
    keep = torch.tensor([[1.0, 0, 1], [0, 0, 0]])
    out = masked_softmax(logits, keep)
    assert torch.allclose(out[0], torch.softmax(torch.tensor([2.0, -MASKED, 1.0]), -1))
    assert out[0, 1] < 1e-12 and torch.isfinite(out).all()
    assert torch.allclose(out[1], torch.full((3,), 1 / 3))
