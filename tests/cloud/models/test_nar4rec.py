"""NAR4Rec baseline: shapes, padding, equivariance, matching matrix, targets, losses, training, export,
and contrastive decoding (device_runtime.decoding.contrastive_decode)."""

import numpy as np
import pytest
import torch

from cloud.models.nar4rec import hinge_similarity, sequence_targets
from device_runtime.decoding import contrastive_decode
from tests.cloud.models.helpers import (
    SPEC,
    build,
    check_empty_history,
    check_equivariant,
    check_padding_invariance,
    check_runtime_parity,
    check_shapes,
    check_torch_export,
    check_training_reduces_loss,
    make_batch,
)

pytestmark = pytest.mark.usefixtures("single_thread")
SMALL = {"width": 8}


def test_shapes_pad_logit_and_embedding_split():
    check_shapes("nar4rec")


def test_padding_never_changes_real_scores():
    check_padding_invariance("nar4rec")


def test_permuting_candidates_permutes_scores():
    check_equivariant("nar4rec")


def test_matching_matrix_columns_are_distributions_over_real_candidates_and_scores_are_marginal_logits():
    model = build("nar4rec")
    batch = make_batch(SPEC, seed=3)
    probs, sim = model.matching(batch)
    mask = batch["mask"].reshape(4, -1)
    assert probs.shape == (4, SPEC.m * SPEC.n, SPEC.K) and sim.shape == (4, SPEC.m * SPEC.n, SPEC.m * SPEC.n)
    assert torch.allclose(probs.sum(dim=1), torch.ones(4, SPEC.K), atol=1e-5)
    assert (probs[mask == 0] < 1e-9).all()
    marginal = probs.sum(-1).clamp(1e-6, 1 - 1e-6)
    with torch.no_grad():
        scores = model(batch).reshape(4, -1)
    assert torch.allclose(scores[mask == 1], torch.logit(marginal)[mask == 1], atol=1e-4)


def test_sequence_targets_put_clicks_first_and_never_padding():
    label = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0, 0.0]])
    target = sequence_targets(label, mask, slots=3)  # [B, N, S]
    assert target[0].argmax(0).tolist() == [1, 3, 0]
    assert target[1, :, :2].argmax(0).tolist() == [0, 2] and target[1, :, 2].sum() == 0  # 2 real candidates
    assert (target.sum(-1) <= 1).all() and (target * (1 - mask).unsqueeze(-1)).sum() == 0


def test_unlikelihood_pushes_logged_placements_down_in_lists_without_clicks():
    model = build("nar4rec", omega=0.0).train()
    batch = make_batch(SPEC, seed=5)
    batch["label"] = torch.zeros_like(batch["label"])
    scores = model(batch)
    model.auxiliary_loss(batch, scores).backward()
    grad = model.device_model.slot_embedding.grad
    assert grad is not None and grad.abs().sum() > 0
    # gradient direction: a small step along -grad lowers the probability of the logged placements
    probs_before, _ = model.matching(batch)
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 1e-2 * p.grad
    probs_after, _ = model.matching(batch)
    mask = batch["mask"].reshape(4, -1)
    target = sequence_targets(torch.zeros_like(mask), mask, SPEC.K)
    assert (probs_after * target).sum() < (probs_before * target).sum()


def test_hinge_similarity_counts_only_real_pairs():
    z = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    pairs = torch.tensor([[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])  # item 2 is padding
    assert hinge_similarity(z, pairs, rho=0.5).item() == pytest.approx(0.5)  # cos 1: max(0, .5 - 1 + 1)


def test_training_steps_reduce_the_loss():
    check_training_reduces_loss("nar4rec", **SMALL)


def test_empty_history_is_finite():
    check_empty_history("nar4rec")


def test_torch_export_at_batch_one_matches_eager():
    check_torch_export("nar4rec")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_contrastive_decode_picks_each_valid_candidate_once(seed, alpha):
    model = build("nar4rec")
    batch = make_batch(SPEC, batch=1, seed=seed)
    probs, sim = model.matching(batch)
    valid = batch["mask"].reshape(-1).numpy() > 0
    order = contrastive_decode(probs[0].numpy(), sim[0].numpy(), valid, alpha=alpha)
    assert sorted(order) == np.flatnonzero(valid).tolist()
    if alpha == 0.0:  # per-slot greedy argmax without repeats
        p, taken = probs[0].numpy(), []
        for j in range(min(SPEC.K, int(valid.sum()))):
            column = np.where(valid & ~np.isin(np.arange(valid.size), taken), p[:, j], -np.inf)
            taken.append(int(np.argmax(column)))
        assert order[: len(taken)] == taken


def test_contrastive_decode_penalises_near_duplicates():
    probs = np.array([[0.5, 0.5], [0.45, 0.45], [0.05, 0.05]])
    sim = np.array([[1.0, 0.99, 0.0], [0.99, 1.0, 0.0], [0.0, 0.0, 1.0]])
    valid = np.ones(3, dtype=bool)
    assert contrastive_decode(probs, sim, valid, alpha=0.0)[:2] == [0, 1]
    assert contrastive_decode(probs, sim, valid, alpha=0.5)[:2] == [0, 2]
    with pytest.raises(ValueError, match="alpha"):
        contrastive_decode(probs, sim, valid, alpha=2.0)


@pytest.mark.slow
def test_executorch_and_tflite_runtimes_match_eager(tmp_path):
    check_runtime_parity("nar4rec", tmp_path, **SMALL)
