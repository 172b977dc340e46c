"""SetRank baseline: shapes, padding, equivariance, no history, training, export."""

import pytest
import torch

from tests.cloud.models.helpers import (
    SPEC,
    build,
    check_equivariant,
    check_padding_invariance,
    check_runtime_parity,
    check_shapes,
    check_torch_export,
    check_training_reduces_loss,
    make_batch,
)

pytestmark = pytest.mark.usefixtures("single_thread")
SMALL = {"width": 8, "heads": 2, "ffn": 16}


def test_shapes_pad_logit_and_embedding_split():
    check_shapes("setrank")


def test_padding_never_changes_real_scores():
    check_padding_invariance("setrank")


def test_permuting_candidates_permutes_scores():
    check_equivariant("setrank")


def test_candidates_interact_and_history_is_ignored():
    """Changing one candidate moves the others' scores (self-attention); changing or emptying the
    history moves nothing (SetRank uses no history, so one version serves device and cloud)."""
    model = build("setrank")
    inputs = list(model.device_inputs(make_batch(SPEC, seed=1)))
    with torch.no_grad():
        base = model.device_model(*inputs)
        changed = list(inputs)
        changed[0] = inputs[0] + 2.0 * inputs[1].unsqueeze(-1)
        assert (model.device_model(*changed) - base)[:, 1:][torch.stack(inputs[5::4], 1) == 1].abs().max() > 1e-4
        no_history = list(inputs)
        for s in range(SPEC.m):
            no_history[4 * s + 2] = torch.randn_like(inputs[4 * s + 2])
            no_history[4 * s + 3] = torch.zeros_like(inputs[4 * s + 3])
        assert torch.equal(model.device_model(*no_history), base)


def test_options_reach_the_model():
    model = build("setrank", width=16, heads=2, blocks=3, ffn=8)
    assert len(model.device_model.blocks) == 3 and model.device_model.blocks[0].ffn[0].out_features == 8
    with pytest.raises(ValueError, match="multiple of heads"):
        build("setrank", width=10, heads=4)


def test_training_steps_reduce_the_loss():
    check_training_reduces_loss("setrank", **SMALL)


def test_torch_export_at_batch_one_matches_eager():
    check_torch_export("setrank")


@pytest.mark.slow
def test_executorch_and_tflite_runtimes_match_eager(tmp_path):
    check_runtime_parity("setrank", tmp_path, **SMALL)
