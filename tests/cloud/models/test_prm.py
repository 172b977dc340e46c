"""PRM baseline: shapes, padding, position embedding (not equivariant by design), training, export."""

import pytest
import torch

from tests.cloud.models.helpers import (
    SPEC,
    build,
    check_padding_invariance,
    check_runtime_parity,
    check_shapes,
    check_torch_export,
    check_training_reduces_loss,
    make_batch,
    permuted_scores,
)

pytestmark = pytest.mark.usefixtures("single_thread")
SMALL = {"width": 8, "heads": 2, "ffn": 16}


def test_shapes_pad_logit_and_embedding_split():
    check_shapes("prm")


def test_padding_never_changes_real_scores():
    """Garbage in padded slots is harmless; extra slots are not (the position table has n rows)."""
    check_padding_invariance("prm", longer=False)


def test_longer_lists_than_the_position_table_are_refused():
    from tests.cloud.models.helpers import pad_longer

    model = build("prm")
    inputs = pad_longer(model.device_inputs(make_batch(SPEC)), extra_n=2, extra_t=0)
    with pytest.raises(ValueError, match="position table has n=6"):
        model.device_model(*inputs)


def test_permuting_candidates_does_not_permute_scores():
    """The position embedding ties a candidate's score to its upstream slot: PRM is not equivariant."""
    out, expected = permuted_scores("prm")
    assert (out - expected).abs().max() > 1e-3


def test_position_is_the_slot_within_the_source():
    """Swapping two candidates' vectors within a source changes scores; the same position table serves
    every source."""
    model = build("prm")
    assert tuple(model.device_model.position.shape) == (SPEC.n, 64)
    inputs = list(model.example_inputs(batch=1, seed=3))
    inputs[1] = torch.ones_like(inputs[1])
    swapped = list(inputs)
    swapped[0] = inputs[0][:, [1, 0, *range(2, SPEC.n)]]
    with torch.no_grad():
        base, out = model.device_model(*inputs), model.device_model(*swapped)
    assert (out[0, 0, 0] - base[0, 0, 1]).abs() > 1e-4


def test_training_steps_reduce_the_loss():
    check_training_reduces_loss("prm", **SMALL)


def test_torch_export_at_batch_one_matches_eager():
    check_torch_export("prm")


@pytest.mark.slow
def test_executorch_and_tflite_runtimes_match_eager(tmp_path):
    check_runtime_parity("prm", tmp_path, **SMALL)
