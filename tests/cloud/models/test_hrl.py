"""HRL baseline: shapes, padding, equivariance, the joint policy, REINFORCE training, export, and the
slot-by-slot device decoding (device_runtime.decoding.slot_decode) around the network."""

import numpy as np
import pytest
import torch

from device_runtime.decoding import slot_decode
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
SMALL = {"width": 8, "hidden": 8}


def test_shapes_pad_logit_and_embedding_split():
    check_shapes("hrl")


def test_padding_never_changes_real_scores():
    check_padding_invariance("hrl")


def test_permuting_candidates_permutes_scores():
    check_equivariant("hrl")


def test_scores_are_a_joint_policy_over_the_remaining_candidates():
    model = build("hrl")
    batch = make_batch(SPEC, seed=6)
    with torch.no_grad():
        p = torch.sigmoid(model(batch)) * batch["mask"]
    assert torch.allclose(p.sum(dim=(1, 2)), torch.ones(4), atol=1e-4)


def test_reinforce_raises_the_probability_of_clicked_items():
    model = build("hrl", seed=1, **SMALL).train()
    batch = make_batch(SPEC, batch=16, seed=9)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def clicked_mass():
        with torch.no_grad():
            p = torch.sigmoid(model(batch)) * batch["mask"]
        return ((p * batch["label"]).sum() / len(p)).item()

    before = clicked_mass()
    torch.manual_seed(0)
    for _ in range(15):
        optimizer.zero_grad()
        scores = model(batch)
        model.auxiliary_loss(batch, scores).backward()
        optimizer.step()
    assert clicked_mass() > before + 0.05


def test_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    check_training_reduces_loss("hrl", **SMALL)


def test_empty_history_is_finite():
    check_empty_history("hrl")


def test_torch_export_at_batch_one_matches_eager():
    check_torch_export("hrl")


@pytest.mark.parametrize("K", [0, 3, 5, 100])
def test_slot_decode_places_each_real_candidate_once_and_calls_the_network_per_slot(K):
    model = build("hrl")
    request = {name: x.numpy() for name, x in zip(model.layout.input_names(), model.example_inputs(batch=1, seed=K))}
    calls = []

    def run(inputs):
        calls.append({name: v.copy() for name, v in inputs.items()})
        with torch.no_grad():
            return model.device_model(*(torch.from_numpy(inputs[name]) for name in model.layout.input_names())).numpy()

    order = slot_decode(run, request, K=K)
    real = [(s, i) for s in range(SPEC.m) for i in np.flatnonzero(request[f"cand_mask_{s}"][0])]
    assert sorted(order) == sorted(real)
    k = min(K, len(real))
    assert len(calls) == max(k, 1)
    for step, (s, i) in enumerate(order[:k]):  # the slot's pick was still unplaced, and is the network's best
        assert calls[step][f"cand_mask_{s}"][0, i] == 1
        assert all(calls[later][f"cand_mask_{s}"][0, i] == 0 for later in range(step + 1, len(calls)))


def test_slot_decode_rejects_a_bad_k():
    with pytest.raises(ValueError, match="K"):
        slot_decode(lambda inputs: None, {}, K=-1)


@pytest.mark.slow
def test_executorch_and_tflite_runtimes_match_eager(tmp_path):
    check_runtime_parity("hrl", tmp_path, **SMALL)
