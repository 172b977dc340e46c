"""DIN baseline: shapes, padding, equivariance, target attention, training, empty history, export."""

import pytest
import torch

from cloud.models.din import ActivationUnit
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
SMALL = {"width": 8, "attention_hidden": 8, "mlp_dims": (16, 8)}


@pytest.mark.parametrize("activation", ["prelu", "relu"])
def test_shapes_pad_logit_and_embedding_split(activation):
    check_shapes("din", activation=activation)


def test_padding_never_changes_real_scores():
    check_padding_invariance("din")


def test_permuting_candidates_permutes_scores():
    check_equivariant("din")


def test_scores_are_pointwise():
    """DIN scores each candidate alone: changing one candidate moves no other score."""
    model = build("din")
    inputs = list(model.example_inputs(batch=1, seed=4))
    inputs[1] = torch.ones_like(inputs[1])
    changed = list(inputs)
    changed[0] = inputs[0].clone()
    changed[0][0, 0] += 3.0
    with torch.no_grad():
        delta = (model.device_model(*changed) - model.device_model(*inputs)).abs()
    assert delta[0, 0, 0] > 1e-4
    assert delta[0, 0, 1:].max() == 0 and delta[0, 1:].max() == 0


@pytest.mark.parametrize("prelu", [True, False])
def test_activation_unit_matches_the_mlp_over_the_concatenated_pair(prelu):
    torch.manual_seed(0)
    unit = ActivationUnit(5, 7, prelu=prelu)
    if prelu:
        torch.nn.init.constant_(unit.slope, 0.3)
    hist, cand = torch.randn(2, 4, 5), torch.randn(2, 3, 5)
    h, x = hist.unsqueeze(1).expand(2, 3, 4, 5), cand.unsqueeze(2).expand(2, 3, 4, 5)
    hidden = unit.first(torch.cat([h, x, h - x, h * x], dim=-1))
    hidden = torch.nn.functional.prelu(hidden, torch.tensor([0.3])) if prelu else torch.relu(hidden)
    assert torch.allclose(unit(hist, cand), unit.last(hidden).squeeze(-1), atol=1e-5)


def test_history_weights_are_unnormalised_sum_pooling():
    """Duplicating the whole history doubles the pooled interest (a softmax would leave it unchanged)."""
    model = build("din")
    device = model.device_model
    inputs = model.device_inputs(make_batch(SPEC, seed=2))
    cand, cand_mask, hist, hist_mask = device.inputs(*inputs)
    weights = device.attention(hist, cand) * hist_mask.unsqueeze(1)
    doubled = device.attention(torch.cat([hist, hist], 1), cand) * torch.cat([hist_mask, hist_mask], 1).unsqueeze(1)
    assert torch.allclose(torch.matmul(doubled, torch.cat([hist, hist], 1)), 2 * torch.matmul(weights, hist), atol=1e-5)


def test_training_steps_reduce_the_loss():
    check_training_reduces_loss("din", **SMALL)


def test_empty_history_is_finite():
    check_empty_history("din")


def test_torch_export_at_batch_one_matches_eager():
    check_torch_export("din")


@pytest.mark.slow
def test_executorch_and_tflite_runtimes_match_eager(tmp_path):
    check_runtime_parity("din", tmp_path, **SMALL)
