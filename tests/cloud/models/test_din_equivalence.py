"""DIN's activation unit equals its earlier formulation (PReLU's linear part as a pair-sized product):
outputs and gradients on fixed weights."""

from __future__ import annotations

import copy

import torch

from cloud.models.din import ActivationUnit


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
    out = (1.0 - unit.slope) * out + unit.slope * torch.matmul(z, v)
    return (out + unit.last.bias).squeeze(-1).transpose(1, 2)


def test_activation_unit_matches_the_pair_sized_formulation():
    torch.manual_seed(0)
    unit = ActivationUnit(8, 6)
    with torch.no_grad():
        unit.slope.fill_(0.3)
    new_unit, old_unit = copy.deepcopy(unit), copy.deepcopy(unit)
    hist, cand = torch.randn(3, 7, 8), torch.randn(3, 5, 8)
    h_new, c_new = hist.clone().requires_grad_(), cand.clone().requires_grad_()
    h_old, c_old = hist.clone().requires_grad_(), cand.clone().requires_grad_()
    new, old = new_unit(h_new, c_new), reference_unit(old_unit, h_old, c_old)
    assert new.shape == (3, 5, 7) and torch.allclose(new, old, atol=1e-5)
    weights = torch.randn_like(new)
    (new * weights).sum().backward()
    (old * weights).sum().backward()
    assert torch.allclose(h_new.grad, h_old.grad, atol=1e-5) and torch.allclose(c_new.grad, c_old.grad, atol=1e-5)
    for a, b in zip(new_unit.parameters(), old_unit.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-5)
