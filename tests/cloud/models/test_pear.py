"""PEAR baseline: shapes, padding, equivariance (without position embeddings), the CLS list-level
auxiliary loss and its training hook, empty history, training, export."""

import pytest
import torch
import torch.nn.functional as F

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
    permuted_scores,
)

pytestmark = pytest.mark.usefixtures("single_thread")
SMALL = {"d": 8, "heads": 2}


@pytest.mark.parametrize("positions", [False, True])
def test_shapes_pad_logit_and_embedding_split(positions):
    check_shapes("pear", positions=positions)


@pytest.mark.parametrize("positions", [False, True])
def test_padding_never_changes_real_scores(positions):
    check_padding_invariance("pear", longer=not positions, positions=positions)


def test_permuting_candidates_permutes_scores_without_positions():
    check_equivariant("pear")


def test_position_embeddings_break_equivariance():
    out, expected = permuted_scores("pear", positions=True)
    assert (out - expected).abs().max() > 1e-3


def test_auxiliary_loss_is_the_cls_any_click_bce():
    model = build("pear", aux_weight=0.5)
    batch = make_batch(SPEC, batch=6, seed=4)
    batch["label"][1] = 0.0  # a list without clicks
    scores = model(batch)
    logit = model.list_logit(batch)
    any_click = (batch["label"] * batch["mask"]).amax(dim=(1, 2))
    assert any_click[1] == 0 and any_click.sum() > 0
    expected = 0.5 * F.binary_cross_entropy_with_logits(logit, any_click, reduction="sum") / batch["mask"].sum()
    assert torch.allclose(model.auxiliary_loss(batch, scores), expected, atol=1e-6)
    assert torch.allclose(model.auxiliary_loss(batch, scores.detach().clone()), expected, atol=1e-6)  # recomputed


def test_auxiliary_loss_skips_lists_of_weight_zero():
    """The trainer's shards weigh lists (batch["weight"]); a list of weight 0 counts for nothing."""
    model = build("pear")
    batch = make_batch(SPEC, batch=6, seed=4)
    scores = model(batch)
    full = model.auxiliary_loss(batch, scores)
    batch["weight"] = torch.tensor([1.0, 1, 1, 0, 0, 0])
    first = {key: value[:3] for key, value in batch.items()}
    assert torch.allclose(model.auxiliary_loss(batch, scores), model.auxiliary_loss(first, model(first)), atol=1e-6)
    assert not torch.allclose(model.auxiliary_loss(batch, scores), full)


def test_auxiliary_loss_trains_the_cls_head_and_other_models_have_none():
    model = build("pear")
    batch = make_batch(SPEC, batch=6, seed=5)
    model.auxiliary_loss(batch, model(batch)).backward()
    assert model.device_model.list_head.weight.grad.abs().sum() > 0
    assert model.device_model.item_head.weight.grad is None  # only the CLS path feeds the auxiliary loss
    assert build("din").auxiliary_loss(batch, torch.zeros(6, SPEC.m, SPEC.n)) is None


def test_the_cls_token_sees_the_list_and_the_history():
    model = build("pear")
    inputs = list(model.device_inputs(make_batch(SPEC, seed=6)))
    device = model.device_model
    with torch.no_grad():
        base = device.encode(*inputs)[1]
        for index in (0, 2):  # candidates of source 0, history of source 0
            changed = list(inputs)
            changed[index] = inputs[index] + inputs[index + 1].unsqueeze(-1)
            assert (device.encode(*changed)[1] - base).abs().max() > 1e-4


def test_options_reach_the_model():
    model = build("pear", d=16, heads=4, blocks=2, positions=True)
    device = model.device_model
    assert len(device.blocks) == 2 and device.cls.shape == (16,) and device.list_position.shape == (SPEC.n, 16)
    with pytest.raises(ValueError, match="multiple of heads"):
        build("pear", d=10, heads=4)
    with pytest.raises(ValueError, match="aux_weight"):
        build("pear", aux_weight=-1.0)


def test_empty_history_is_finite():
    check_empty_history("pear")


def test_training_steps_reduce_the_loss():
    check_training_reduces_loss("pear", **SMALL)


def test_torch_export_at_batch_one_matches_eager():
    check_torch_export("pear")


@pytest.mark.slow
def test_executorch_and_tflite_runtimes_match_eager(tmp_path):
    check_runtime_parity("pear", tmp_path, **SMALL)
