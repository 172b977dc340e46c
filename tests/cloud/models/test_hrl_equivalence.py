"""HRL's REINFORCE loss, encoding the list once, equals its earlier formulation that re-ran the whole
network (projections included) for every slot: loss and gradients on fixed weights and draws."""

from __future__ import annotations

import copy

import torch

from cloud.models import build_model
from cloud.models.hrl import EPS
from tests.cloud.models.helpers import SPEC, make_batch


def reference_loss(model, batch, scores):
    """The earlier formulation: the device model on the layout inputs with the placed masks zeroed."""
    inputs = list(model.device_inputs(batch))
    m = model.layout.m
    label = batch["label"] * batch["mask"]
    rewards, log_probs = [], []
    for _ in range(min(model.spec.K, model.layout.n * m)):
        remaining = torch.stack(inputs[1::4], dim=1)
        logits = model.device_model(*inputs) if len(rewards) else scores
        p = torch.sigmoid(logits).reshape(len(label), -1) * remaining.reshape(len(label), -1)
        alive = (remaining.reshape(len(label), -1).sum(-1) > 0).to(p.dtype)
        action = torch.multinomial(p.detach() + (1.0 - alive).unsqueeze(-1), 1)
        log_probs.append(torch.log(torch.gather(p, 1, action).squeeze(-1).clamp(min=EPS)) * alive)
        rewards.append(torch.gather(label.reshape(len(label), -1), 1, action).squeeze(-1) * alive)
        placed = torch.zeros_like(p).scatter_(1, action, 1.0).reshape(remaining.shape) * alive.view(-1, 1, 1)
        for s in range(m):
            inputs[4 * s + 1] = inputs[4 * s + 1] * (1.0 - placed[:, s])
    rewards_t = torch.stack(rewards, 1)
    returns = rewards_t.flip(1).cumsum(1).flip(1)
    per_list = -((returns - returns.mean(0, keepdim=True)) * torch.stack(log_probs, 1)).sum(-1)
    return model.rl_weight * per_list.sum() / batch["mask"].sum().clamp(min=1.0)


def test_reinforce_loss_and_gradients_match_the_earlier_formulation():
    spec, batch = SPEC, make_batch(SPEC, batch=16, seed=9)
    torch.manual_seed(0)
    new = build_model("hrl", spec)
    old = copy.deepcopy(new)
    torch.manual_seed(1)
    loss_new = new.auxiliary_loss(batch, new(batch))
    torch.manual_seed(1)
    loss_old = reference_loss(old, batch, old(batch))
    assert torch.allclose(loss_new, loss_old, atol=1e-5)
    loss_new.backward()
    loss_old.backward()
    for (name, a), b in zip(new.named_parameters(), old.parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-5), name
