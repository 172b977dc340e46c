"""SVR baseline: shapes, padding, equivariance, list head, training, export; device beam search in test_decoding.py."""

import pytest
import torch

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
SMALL = {"width": 8, "mlp_dims": (16, 8)}


def test_shapes_pad_logit_and_embedding_split():
    check_shapes("svr")


def test_padding_never_changes_real_scores():
    check_padding_invariance("svr")


def test_permuting_candidates_permutes_scores():
    check_equivariant("svr")


def test_list_head_reads_the_whole_list_and_trains_only_through_auxiliary_loss():
    model = build("svr").train()
    batch = make_batch(SPEC, seed=4)
    scores = model(batch)
    aux = model.auxiliary_loss(batch, scores)
    assert aux.ndim == 0 and aux > 0
    aux.backward()
    assert model.device_model.list_head.weight.grad.abs().sum() > 0
    assert model.device_model.click.weight.grad is None  # the click head is trained by the utility loss
    with torch.no_grad():  # recomputed when scores are not the stored ones: the same value
        assert torch.allclose(model.auxiliary_loss(batch, scores.clone()), aux)
    with pytest.raises(ValueError, match="aux_weight"):
        build("svr", aux_weight=-1.0)


def test_training_steps_reduce_the_loss():
    check_training_reduces_loss("svr", **SMALL)


def test_empty_history_is_finite():
    check_empty_history("svr")


def test_torch_export_at_batch_one_matches_eager():
    check_torch_export("svr")


@pytest.mark.slow
def test_executorch_and_tflite_runtimes_match_eager(tmp_path):
    check_runtime_parity("svr", tmp_path, **SMALL)
