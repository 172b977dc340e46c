"""HRL: "Hierarchical Reinforcement Learning for Integrated Recommendation" (Xie et al., AAAI'21), a DIR
baseline: a high-level agent picks the source (channel) of the next slot, a
low-level agent picks the item within it; the list is built slot by slot.

    model = HRL(spec)                                    # build_model("hrl", spec)
    scores = model(batch)                                # [B, m, n] logit of the first slot's joint policy
    loss = model.auxiliary_loss(batch, scores)           # REINFORCE over K slots (the trainer adds no BCE)
    order = slot_decode(run, request, K=5)               # on the device: device_runtime/decoding.py

State and policy (fixed-shape network, exported like every model), defaults in brackets:
- The state of a slot is (history, the candidates not yet placed): the placed ones are removed by
  zeroing their `cand_mask` entries, so the same network is called once per slot with no extra input.
- Per-source projection to `width` [32] + source embedding (cloud/models/single_source.py); per source,
  u_s = masked mean of its history, c_s = masked mean of its remaining candidates, k_s = #remaining.
- High level: MLP([u_1, c_1, k_1, ..., u_m, c_m, k_m]) [hidden 32] -> m logits, sources with nothing left
  masked, softmax -> pi_H(s).
- Low level: MLP([x_i, u_s, x_i * u_s]) [hidden 32] -> logit, softmax within source s over its remaining
  candidates -> pi_L(i | s).
- scores = logit of p(s, i) = pi_H(s) pi_L(i | s) (clamped to [1e-6, 1 - 1e-6]): sigmoid(score) is the
  probability the policy places (s, i) in the current slot; PAD_LOGIT at padded / placed slots.
Training (cloud, on logged clicks; the reward and state here are ours): REINFORCE.
Each list is an episode of K slots sampled from the policy; placing item i earns its logged click as the
reward; the return G_k = sum of the rewards from slot k on, minus the batch's mean return at slot k
(baseline); loss = -sum_k (G_k - b_k) log p(a_k), weight `rl_weight` [1], through `auxiliary_loss`, the
whole objective; `utility_loss=True` adds the trainer's BCE of the first slot's p(s, i) against the clicks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cloud.models.base import RerankModel
from cloud.models.dir import MASKED
from cloud.models.single_source import SingleSourceInput, mlp, source_scores
from cloud.models.svr import masked_mean
from shared_schema.specs import DatasetSpec

EPS = 1e-6


class HRL(RerankModel):
    """HRL's two-level policy trained by REINFORCE (`auxiliary_loss`) alone; `utility_loss=True` adds the
    trainer's BCE on the first slot's p(s, i), `exposure_loss=True` the exposure loss."""

    search_space = {"embedding_dim": ("int", 8, 32, 8), "width": ("int", 16, 64, 16), "hidden": ("int", 16, 64, 16)}
    device_model: HRLDeviceModel
    """Options `dir-cloud tune` searches (cloud/training/tuning.py: ("int", low, high, step)); no dropout to tune."""

    device_decoder = "slot_policy"

    def __init__(
        self,
        spec: DatasetSpec,
        embedding_dim: int = 16,
        width: int = 32,
        hidden: int = 32,
        rl_weight: float = 1.0,
        utility_loss: bool = False,
        exposure_loss: bool = False,
    ):
        super().__init__(spec, embedding_dim)
        self.uses_utility_loss = utility_loss
        if rl_weight < 0:
            raise ValueError(f"rl_weight must be >= 0, got {rl_weight}")
        self.uses_exposure_loss = exposure_loss
        self.rl_weight = rl_weight
        self.device_model = HRLDeviceModel(self.layout.vector_dims, width, hidden)

    def auxiliary_loss(self, batch: dict[str, torch.Tensor], scores: torch.Tensor) -> torch.Tensor:
        """rl_weight * REINFORCE loss of K sampled slots (logged clicks as rewards), summed over lists and
        divided by the real candidates, like utility_loss."""
        net = self.device_model
        cand, mask, hist, hist_mask = net.inputs(*self.device_inputs(batch))  # once: placing only zeroes mask
        users = net.user_state(hist, hist_mask)
        label = batch["label"] * batch["mask"]
        rewards: list[torch.Tensor] = []
        log_probs: list[torch.Tensor] = []
        for _ in range(min(self.spec.K, self.layout.n * self.layout.m)):
            logits = net.policy(cand * mask.unsqueeze(-1), mask, users) if len(rewards) else scores
            p = torch.sigmoid(logits).reshape(len(label), -1) * mask
            alive = (mask.sum(-1) > 0).to(p.dtype)
            action = torch.multinomial(p.detach() + (1.0 - alive).unsqueeze(-1), 1)  # [B, 1]; dead lists pick 0
            log_probs.append(torch.log(torch.gather(p, 1, action).squeeze(-1).clamp(min=EPS)) * alive)
            rewards.append(torch.gather(label.reshape(len(label), -1), 1, action).squeeze(-1) * alive)
            mask = mask * (1.0 - torch.zeros_like(p).scatter_(1, action, 1.0) * alive.view(-1, 1))
        rewards_t = torch.stack(rewards, 1)
        returns = rewards_t.flip(1).cumsum(1).flip(1)
        advantage = returns - returns.mean(0, keepdim=True)
        per_list = -(advantage * torch.stack(log_probs, 1)).sum(-1)
        weight = batch.get("weight", torch.ones_like(per_list))
        slots = (batch["mask"] * weight.view(-1, 1, 1)).sum().clamp(min=1.0)
        return self.rl_weight * (per_list * weight).sum() / slots


class HRLDeviceModel(nn.Module):
    """`forward(cand_0, cand_mask_0, hist_0, hist_mask_0, cand_1, ...) -> scores [B, m, n]`, the logits of
    the joint policy p(s, i) for the next slot over the candidates whose mask is 1."""

    def __init__(self, vector_dims: Sequence[int], width: int = 32, hidden: int = 32):
        super().__init__()
        self.m = len(vector_dims)
        self.inputs = SingleSourceInput(vector_dims, width)
        self.high = nn.Sequential(*mlp([self.m * (2 * width + 1), hidden]), nn.Linear(hidden, self.m))
        self.low = nn.Sequential(*mlp([3 * width, hidden]), nn.Linear(hidden, 1))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        cand, cand_mask, hist, hist_mask = self.inputs(*inputs)
        return self.policy(cand, cand_mask, self.user_state(hist, hist_mask))

    def user_state(self, hist: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
        """u_s per source [B, m, w]: the masked mean of its history (merged slot r*m + s)."""
        source_of_slot = torch.arange(hist.shape[1], device=hist.device) % self.m
        return torch.cat(
            [masked_mean(hist, hist_mask * (source_of_slot == s).to(hist_mask.dtype)) for s in range(self.m)], 1
        )

    def policy(self, cand: torch.Tensor, cand_mask: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """Scores [B, m, n] of the next slot given the remaining candidates (zeroed where placed)."""
        m = self.m
        batch, total, width = cand.shape
        n = total // m
        per_cand = cand.reshape(batch * m, n, width)
        per_mask = cand_mask.reshape(batch * m, n)
        left = torch.bmm(per_mask.unsqueeze(1), per_mask.unsqueeze(2)).reshape(batch, m, 1)  # remaining counts
        state = torch.cat([users, masked_mean(per_cand, per_mask).reshape(batch, m, width), left], dim=-1)
        has_left = (left.reshape(batch, m) > 0).to(cand.dtype)
        high = torch.log_softmax(_masked(self.high(state.reshape(batch, -1)), has_left), dim=-1)  # [B, m]
        u = (per_cand.reshape(batch, m, n, width) * 0.0 + users.reshape(batch, m, 1, width)).reshape(
            batch, total, width
        )
        low = self.low(torch.cat([cand, u, cand * u], dim=-1)).reshape(batch, m, n)
        low = torch.log_softmax(_masked(low, cand_mask.reshape(batch, m, n)), dim=-1)
        p = torch.exp(high.unsqueeze(-1) + low).clamp(EPS, 1.0 - EPS)
        return source_scores((torch.log(p) - torch.log(1.0 - p)).reshape(batch, total), cand_mask, m)


def _masked(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return logits * keep + (keep - 1.0) * MASKED
