"""EdgeRec baseline: shapes, padding, equivariance, per-source behaviour attention, training, export."""

import pytest
import torch

from tests.cloud.models.helpers import (
    build,
    check_empty_history,
    check_equivariant,
    check_padding_invariance,
    check_runtime_parity,
    check_shapes,
    check_torch_export,
    check_training_reduces_loss,
)

pytestmark = pytest.mark.usefixtures("single_thread")
SMALL = {"width": 8, "mlp_dims": (16, 8)}


def test_shapes_pad_logit_and_embedding_split():
    check_shapes("edgerec")


def test_padding_never_changes_real_scores():
    check_padding_invariance("edgerec")


def test_permuting_candidates_permutes_scores():
    check_equivariant("edgerec")


def test_each_source_sequence_has_its_own_attention():
    """Source s's interest vector reads only source s's behaviours; every source's history moves the scores."""
    model = build("edgerec")
    device = model.device_model
    inputs = list(model.example_inputs(batch=1, seed=3))
    for s in range(device.m):
        inputs[4 * s + 3] = torch.ones_like(inputs[4 * s + 3])
    changed = list(inputs)
    changed[2] = inputs[2] + 1.0  # source 0's history
    with torch.no_grad():
        (cand, _, hist, mask), (_, _, hist2, _) = device.inputs(*inputs), device.inputs(*changed)
        source_of_slot = torch.arange(hist.shape[1]) % device.m
        for s in range(device.m):
            keep = mask * (source_of_slot == s).float()
            delta = (device.behaviour(cand, hist2, keep) - device.behaviour(cand, hist, keep)).abs().max()
            assert (delta > 1e-4) if s == 0 else (delta == 0)
        assert (device(*changed) - device(*inputs)).abs().max() > 1e-4


def test_training_steps_reduce_the_loss():
    check_training_reduces_loss("edgerec", **SMALL)


def test_empty_history_is_finite():
    check_empty_history("edgerec")


def test_torch_export_at_batch_one_matches_eager():
    check_torch_export("edgerec")


@pytest.mark.slow
def test_executorch_and_tflite_runtimes_match_eager(tmp_path):
    check_runtime_parity("edgerec", tmp_path, **SMALL)
