"""CRUM's LSTM computes what its earlier step-by-step formulation computed (outputs and gradients)."""

from __future__ import annotations

import copy

import torch

from cloud.models.crum import LSTM


def reference_lstm(lstm: LSTM, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The earlier formulation: the gate layer on [x_k, state] at every step."""
    batch, steps, _ = x.shape
    state = cell = x.new_zeros(batch, lstm.hidden)
    out = []
    for k in range(steps):
        i, f, g, o = lstm.gates(torch.cat([x[:, k], state], dim=-1)).split(lstm.hidden, dim=-1)
        new_cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        new_state = torch.sigmoid(o) * torch.tanh(new_cell)
        keep = mask[:, k : k + 1]
        cell = cell + keep * (new_cell - cell)
        state = state + keep * (new_state - state)
        out.append(state)
    return torch.stack(out, dim=1)


def test_lstm_matches_the_step_by_step_formulation_both_directions():
    torch.manual_seed(0)
    lstm = LSTM(12, 8)
    x = torch.randn(5, 7, 12)
    mask = (torch.rand(5, 7) > 0.3).float()
    for reverse in (False, True):
        new_lstm, old_lstm = copy.deepcopy(lstm), copy.deepcopy(lstm)
        x_new, x_old = x.clone().requires_grad_(), x.clone().requires_grad_()
        new = new_lstm(x_new, mask, reverse=reverse)
        old = (
            reference_lstm(old_lstm, x_old.flip(1), mask.flip(1)).flip(1)
            if reverse
            else reference_lstm(old_lstm, x_old, mask)
        )
        assert torch.allclose(new, old, atol=1e-5)
        weights = torch.randn_like(new)
        (new * weights).sum().backward()
        (old * weights).sum().backward()
        assert torch.allclose(x_new.grad, x_old.grad, atol=1e-5)
        for a, b in zip(new_lstm.parameters(), old_lstm.parameters(), strict=True):
            assert torch.allclose(a.grad, b.grad, atol=1e-5)
