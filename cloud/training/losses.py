"""DIR's training losses (KDD'23, section 4.4): utility BCE and the differentiable exposure JS loss.

    util = utility_loss(scores, batch["label"], batch["mask"])            # scores: [B, m, n] logits
    js = exposure_loss(scores, batch["mask"], target_shares, K=5)         # or method="gumbel"
    loss = total_loss(util, js if model.uses_exposure_loss else None, beta=0.5)

Exposure: each list's top-K over its real slots (all m*n slots of the list compete; padded slots are
never picked, a list with fewer than K real items exposes all of them). w^p_s = exposed items of
source s / exposed items in the batch. The hard top-K is used in the forward pass; the backward pass
uses the gradient of a soft relaxation (straight-through):

- `straight_through`: soft membership sigmoid((s - c) / tau), c = midpoint between the K-th and
  (K+1)-th real score of the list (held constant).
- `gumbel`: relaxed subset sampling (Xie & Ermon, 2019): one Gumbel perturbation g per slot; the hard
  selection is the top-K of s + g (an exact sample of K items without replacement), the soft one is
  the sum of K successive softmaxes of (s + g) / tau, each step lowering the chosen mass by adding
  log(1 - p) to the logits.

A list with at most K real items has no choice to make and passes no exposure gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

METHODS = ("straight_through", "gumbel")
_SMOOTH = 1e-6  # added to both distributions in the JS divergence: finite gradient where a share is 0


def utility_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over real candidate slots (mask 1); padded slots count for nothing."""
    return utility_sum(scores, labels, mask) / mask.sum().clamp(min=1.0)


def utility_sum(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed BCE-with-logits over real slots: shards of a batch add up (distributed training)."""
    _same_shape(scores, labels=labels, mask=mask)
    per_slot = F.binary_cross_entropy_with_logits(scores, labels, reduction="none")
    return (per_slot * mask).sum()


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (natural log) of two distributions over the last axis, smoothed by 1e-6."""
    p = (p + _SMOOTH) / (1.0 + _SMOOTH * p.shape[-1])
    q = (q + _SMOOTH) / (1.0 + _SMOOTH * q.shape[-1])
    mid = 0.5 * (p + q)
    return 0.5 * ((p * (p / mid).log()).sum(-1) + (q * (q / mid).log()).sum(-1))


def topk_membership(
    scores: torch.Tensor,
    mask: torch.Tensor,
    K: int,
    method: str = "straight_through",
    tau: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """[B, L] membership of each slot in its list's top-K: exactly 0/1 forward, soft gradient backward.

    `scores`, `mask`: [B, L]. Selects min(K, #real) real slots per list.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if K < 1 or tau <= 0:
        raise ValueError(f"need K >= 1 and tau > 0, got K={K}, tau={tau}")
    _same_shape(scores, mask=mask)
    real = mask > 0
    if method == "gumbel":
        uniform = torch.rand(scores.shape, generator=generator, dtype=scores.dtype, device=scores.device)
        uniform = uniform.clamp(1e-10, 1.0 - 1e-7)
        scores = scores - (-uniform.log()).log()
    ranked = scores.detach().masked_fill(~real, float("-inf"))
    order = ranked.topk(min(K, scores.shape[1]), dim=1).indices
    hard = torch.zeros_like(scores).scatter(1, order, 1.0) * mask
    has_choice = (mask.sum(1, keepdim=True) > K).to(scores.dtype)
    if method == "gumbel":
        soft = _relaxed_subset(scores, real, K, tau)
    else:
        soft = _sigmoid_threshold(scores, ranked, real, K, tau)
    soft = soft * mask * has_choice
    return hard + (soft - soft.detach())


def exposure_shares(
    scores: torch.Tensor,
    mask: torch.Tensor,
    K: int,
    method: str = "straight_through",
    tau: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """w^p [m]: share of the batch's top-K exposures per source (scores, mask: [B, m, n])."""
    per_source, exposed = exposure_counts(scores, mask, K, method, tau, generator)
    return per_source / exposed.clamp(min=1.0)


def exposure_counts(
    scores: torch.Tensor,
    mask: torch.Tensor,
    K: int,
    method: str = "straight_through",
    tau: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-K exposures per source [m], exposed items []): sums over lists, so shards of a batch add up."""
    _same_shape(scores, mask=mask)
    batch, m, n = scores.shape
    member = topk_membership(scores.reshape(batch, m * n), mask.reshape(batch, m * n), K, method, tau, generator)
    per_source = member.reshape(batch, m, n).sum(dim=(0, 2))
    exposed = mask.reshape(batch, m * n).sum(1).clamp(max=K).sum()
    return per_source, exposed


def exposure_loss(
    scores: torch.Tensor,
    mask: torch.Tensor,
    target_shares: torch.Tensor | Sequence[float],
    K: int,
    method: str = "straight_through",
    tau: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """JS divergence (natural log) between the target shares w [m] and the batch's top-K shares w^p."""
    target = torch.as_tensor(target_shares, dtype=scores.dtype, device=scores.device)
    if target.shape != (scores.shape[1],):
        raise ValueError(f"target_shares: expected {scores.shape[1]} values (one per source), got {list(target.shape)}")
    if (target < 0).any() or abs(float(target.sum()) - 1.0) > 1e-4:
        raise ValueError(f"target_shares must be >= 0 and sum to 1, got {target.tolist()}")
    return js_divergence(target, exposure_shares(scores, mask, K, method, tau, generator))


def total_loss(util: torch.Tensor, js: torch.Tensor | None, beta: float = 0.5) -> torch.Tensor:
    """beta * util + (1 - beta) * js (Eq. 9); just `util` when the exposure loss is off (js None)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    return util if js is None else beta * util + (1.0 - beta) * js


def _sigmoid_threshold(scores, ranked, real, K, tau):
    if scores.shape[1] <= K:  # no list can have more than K real slots
        return torch.zeros_like(scores)
    top = ranked.topk(K + 1, dim=1).values
    cut = 0.5 * (top[:, K - 1 : K] + top[:, K : K + 1])
    cut = torch.where(torch.isfinite(cut), cut, torch.zeros_like(cut))  # lists without a choice
    return torch.sigmoid((scores - cut) / tau)


def _relaxed_subset(perturbed, real, K, tau):
    logits = (perturbed / tau).masked_fill(~real, -1e9)
    soft = torch.zeros_like(perturbed)
    for _ in range(K):
        p = torch.softmax(logits, dim=1)
        soft = soft + p
        logits = logits + (1.0 - p).clamp(min=1e-12).log()
    return soft


def _same_shape(scores: torch.Tensor, **others: torch.Tensor) -> None:
    for name, tensor in others.items():
        if tensor.shape != scores.shape:
            raise ValueError(f"{name}: shape {list(tensor.shape)} does not match scores {list(scores.shape)}")
