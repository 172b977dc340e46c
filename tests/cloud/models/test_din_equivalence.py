"""DIN's activation unit equals its earlier formulations on fixed weights, outputs and gradients of every
parameter and input: the pair-sized one (PReLU's linear part as a pair-sized product), and, in training,
the chunked `RectifiedPairs` (recomputed in backward) against the plain formulation inference and export use."""

from __future__ import annotations

import copy

import pytest
import torch

from cloud.models.din import ActivationUnit, RectifiedPairs
from tests.cloud.models.helpers import SPEC, build, garbage_padding, make_batch

pytestmark = pytest.mark.usefixtures("single_thread")


def reference_unit(unit: ActivationUnit, hist: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    w = unit.width
    w_h, w_x, w_d, w_p = (unit.first.weight[:, i * w : (i + 1) * w] for i in range(4))
    given_x = (torch.matmul(cand, (w_x - w_d).t()) + unit.first.bias).unsqueeze(-1)
    left = torch.cat([cand.unsqueeze(2) * w_p + (w_h + w_d), given_x], dim=-1)
    batch, n, hidden, _ = left.shape
    right = torch.cat([hist, torch.ones_like(hist[..., :1])], dim=-1)
    z = torch.matmul(right, left.reshape(batch, n * hidden, w + 1).transpose(1, 2)).reshape(batch, -1, n, hidden)
    v = unit.last.weight.t()
    out = torch.matmul(torch.relu(z), v)
    if unit.slope is not None:
        out = (1.0 - unit.slope) * out + unit.slope * torch.matmul(z, v)
    return (out + unit.last.bias).squeeze(-1).transpose(1, 2)


def outputs_and_grads(forward, module: torch.nn.Module, inputs, weights: torch.Tensor) -> list[torch.Tensor]:
    """[output, d/d input for each input, d/d parameter for each parameter] of sum(forward(*inputs) * weights)."""
    module = copy.deepcopy(module)
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    out = forward(module, *inputs)
    (out * weights).sum().backward()
    return [out.detach(), *(x.grad for x in inputs), *(p.grad for p in module.parameters())]


def count_calls(monkeypatch) -> list[int]:
    """RectifiedPairs.apply still runs, and each call appends to the returned list."""
    calls: list[int] = []
    apply = RectifiedPairs.apply

    def counted(*args):
        calls.append(1)
        return apply(*args)

    monkeypatch.setattr(RectifiedPairs, "apply", counted)
    return calls


def assert_all_close(new: list[torch.Tensor], old: list[torch.Tensor]) -> None:
    assert len(new) == len(old)
    for a, b in zip(new, old, strict=True):
        assert a is not None and b is not None and a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


@pytest.mark.parametrize("prelu", [True, False])
def test_activation_unit_matches_the_pair_sized_formulation(prelu, monkeypatch):
    """Training path (several chunks, the last one short) and plain path both equal the pair-sized reference."""
    monkeypatch.setattr(RectifiedPairs, "CHUNK_FLOATS", 2 * 7 * 5 * 6)  # 2 lists per chunk: 2 + 2 + 1
    torch.manual_seed(0)
    unit = ActivationUnit(8, 6, prelu=prelu)
    if prelu:
        torch.nn.init.constant_(unit.slope, 0.3)
    inputs, weights = (torch.randn(5, 7, 8), torch.randn(5, 5, 8)), torch.randn(5, 5, 7)
    old = outputs_and_grads(reference_unit, unit, inputs, weights)
    plain = copy.deepcopy(unit)
    plain.chunked = False
    calls = count_calls(monkeypatch)
    for version in (unit, plain):
        assert_all_close(outputs_and_grads(ActivationUnit.forward, version, inputs, weights), old)
    assert len(calls) == 1  # the training path ran once, the plain one never


@pytest.mark.parametrize("activation", ["prelu", "relu"])
@pytest.mark.parametrize("history", ["padded", "empty"])
def test_din_trains_through_the_chunked_unit_as_through_the_plain_one(activation, history, monkeypatch):
    """The whole device model on a batch with padded history slots (garbage in them) or all histories empty."""
    monkeypatch.setattr(RectifiedPairs, "CHUNK_FLOATS", 1)  # one list per chunk
    model = build("din", seed=3, activation=activation)
    batch = make_batch(SPEC, batch=3, seed=5)
    if history == "empty":
        for s in range(SPEC.m):
            batch[f"hist_mask_{s}"] = torch.zeros_like(batch[f"hist_mask_{s}"])
    inputs = garbage_padding(model.device_inputs(batch))
    assert any((x == 0).any() for x in inputs[3::4]), "the batch must hold padded history slots"
    weights = torch.randn(3, SPEC.m, SPEC.n)
    plain = copy.deepcopy(model.device_model)
    plain.attention.chunked = False
    calls = count_calls(monkeypatch)
    chunked = outputs_and_grads(lambda module, *x: module(*x), model.device_model, inputs, weights)
    assert len(calls) == 1
    assert_all_close(chunked, outputs_and_grads(lambda module, *x: module(*x), plain, inputs, weights))
    assert len(calls) == 1


def test_inference_uses_the_plain_formulation(monkeypatch):
    """Without autograd (scoring, export) the chunked function is never called."""

    def fail(*args):
        raise AssertionError("RectifiedPairs ran without autograd")

    monkeypatch.setattr(RectifiedPairs, "apply", fail)
    model = build("din")
    inputs = model.device_inputs(make_batch(SPEC))
    with torch.no_grad():
        assert torch.isfinite(model.device_model(*inputs)).all()
