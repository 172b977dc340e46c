"""CRUM baseline: shapes, padding, GAT, hand-written Bi-LSTM, swap gains, two-stage training, export (reranker only)."""

import pytest
import torch

from cloud.models.crum import LSTM
from tests.cloud.models.helpers import (
    SPEC,
    build,
    check_empty_history,
    check_padding_invariance,
    check_runtime_parity,
    check_shapes,
    check_torch_export,
    check_training_reduces_loss,
    make_batch,
)

pytestmark = pytest.mark.usefixtures("single_thread")
SMALL = {"width": 8, "mlp_dims": (16, 8), "lstm_hidden": 4, "pairs": 2}


def test_shapes_pad_logit_and_embedding_split():
    check_shapes("crum")


def test_padding_never_changes_real_scores():
    check_padding_invariance("crum", longer=False)  # position embeddings are fixed to n slots


def test_only_the_reranker_is_exported():
    model = build("crum")
    names = [name for name, _ in model.device_model.named_parameters()]
    assert names and not any("evaluator" in name or "lstm" in name for name in names)
    assert sum(p.numel() for p in model.evaluator.parameters()) > 0


def test_lstm_matches_torch_lstm_on_real_steps():
    torch.manual_seed(0)
    mine, ref = LSTM(5, 3), torch.nn.LSTM(5, 3, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(mine.gates.weight[:, :5])
        ref.weight_hh_l0.copy_(mine.gates.weight[:, 5:])
        ref.bias_ih_l0.copy_(mine.gates.bias)
        ref.bias_hh_l0.zero_()
    x = torch.randn(2, 4, 5)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    out = mine(x, mask)
    assert torch.allclose(out[0], ref(x[:1])[0][0], atol=1e-5)
    assert torch.allclose(out[1, :2], ref(x[1:, :2])[0][0], atol=1e-5)
    assert torch.equal(out[1, 2], out[1, 1]) and torch.equal(out[1, 3], out[1, 1])  # padded steps keep the state


def test_swap_gains_are_zero_without_clicks_and_pairs_are_real_and_ordered():
    model = build("crum", pairs=6)
    batch = make_batch(SPEC, seed=2)
    with torch.no_grad():
        x, h, mask = model.evaluator.encoder(*model.device_inputs(batch))
        label = (batch["label"] * batch["mask"]).reshape(mask.shape)
        first, second, delta = model.swap_gains(x, h, mask, label)
        assert (first < second).all()
        several = mask.sum(-1) >= 2
        assert (torch.gather(mask, 1, first)[several] == 1).all() and (
            torch.gather(mask, 1, second)[several] == 1
        ).all()
        _, _, none = model.swap_gains(x, h, mask, torch.zeros_like(label))
        assert (none == 0).all()
        clicked = label.sum(-1) > 0
        assert delta[clicked].abs().sum() > 0


def grads_after_one_step(model, batch) -> dict[str, bool]:
    model.zero_grad(set_to_none=True)
    model.auxiliary_loss(batch, model(batch)).backward()
    parts = {"evaluator": model.evaluator, "reranker": model.device_model, "embeddings": model.item_encoder}
    return {
        name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
        for name, part in parts.items()
    }


def test_stage_one_trains_the_evaluator_and_stage_two_only_the_reranker():
    model = build("crum", evaluator_epochs=2).train()
    batch = make_batch(SPEC, seed=3)
    model.begin_epoch(1, 3)
    assert model.stage == "evaluator"
    assert grads_after_one_step(model, batch) == {"evaluator": True, "reranker": False, "embeddings": True}
    model.begin_epoch(2, 3)
    assert model.stage == "reranker"
    assert grads_after_one_step(model, batch) == {"evaluator": False, "reranker": True, "embeddings": False}
    with pytest.raises(ValueError, match="evaluator_epochs=2"):
        model.begin_epoch(0, 2)


def test_stage_two_pair_loss_falls_with_the_evaluator_unchanged():
    model = build("crum", seed=3, **SMALL).train()
    batch = make_batch(SPEC, batch=16, seed=9)
    model.begin_epoch(1, 2)
    frozen = {k: v.clone() for k, v in model.evaluator.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-2)

    def pair_loss() -> torch.Tensor:
        torch.manual_seed(0)  # the same random pairs at every evaluation
        return model.auxiliary_loss(batch, model(batch))

    before = pair_loss().item()
    for _ in range(12):
        optimizer.zero_grad()
        pair_loss().backward()
        optimizer.step()
    assert pair_loss().item() < 0.9 * before
    assert all(torch.equal(v, model.evaluator.state_dict()[k]) for k, v in frozen.items())


def test_training_steps_reduce_the_loss():
    check_training_reduces_loss("crum", **SMALL)


def test_empty_history_is_finite():
    check_empty_history("crum")


def test_torch_export_at_batch_one_matches_eager():
    check_torch_export("crum")


@pytest.mark.slow
def test_executorch_and_tflite_runtimes_match_eager(tmp_path):
    check_runtime_parity("crum", tmp_path, **SMALL)
