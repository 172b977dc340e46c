"""PEAR: "Personalized Re-ranking with Contextualized Transformer for Recommendation" (Li, Zhu et al.,
WWW'22 companion), run single-source: all m*n candidates as one initial list, one merged
history (cloud/models/single_source.py). Equation numbers are the paper's; docs/baselines.md lists the choices.

    model = PEAR(spec)                                  # build_model("pear", spec)
    scores = model(batch)                               # [B, m, n] item logits (what the device runs)
    loss = utility_loss(scores, ...) + model.auxiliary_loss(batch, scores)   # + alpha * list-level BCE

Device model, defaults in brackets (the paper's d = 500 is too big for a phone):
1. Per-source linear projection to d [64] + learned source embedding, then the shared 2-layer feature MLP
   Z = W2 relu(W1 f + b1) + b2 (Eq. 1; no user features in the layout) for history and list items.
   `positions=True` adds learned position embeddings (list: slot within source, history: recency round);
   the paper mentions none, and without them PEAR is permutation-equivariant in the list.
2. A learned CLS token appended after the list (after the MLP).
3. `blocks` [1] blocks of: history self-attention (Eq. 2) H_B = LN(Z_B + Attn(Z_B)), then merged
   cross-attention (Eq. 3): list + CLS queries attend over [W_k1 H_B ; W_k2 Z_S] with values
   [W_v1 H_B ; W_v2 Z_S], H_S = LN(Z_S + Attn); `heads` [2]; padded keys masked, CLS always a key.
   (Residual + LayerNorm around each attention is our choice; the paper does not say.)
4. Item head: one linear layer -> item logit; CLS head (separate linear layer) -> list logit, used only by
   `auxiliary_loss` in training (y_aux = 1 when the list holds a click), weight `aux_weight` [alpha = 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cloud.models.base import RerankModel
from cloud.models.dir import SelfAttention
from cloud.models.single_source import SingleSourceInput, masked_softmax, source_scores
from shared_schema.specs import DatasetSpec


class PEAR(RerankModel):
    """PEAR with its list-level auxiliary loss; utility (+ auxiliary) loss only unless `exposure_loss`."""

    search_space = {"embedding_dim": ("int", 8, 32, 8), "d": ("int", 32, 96, 32)}
    device_model: PEARDeviceModel
    """Options `dir-cloud tune` searches (cloud/training/tuning.py: ("int", low, high, step)); no dropout to tune."""

    def __init__(
        self,
        spec: DatasetSpec,
        embedding_dim: int = 16,
        d: int = 64,
        heads: int = 2,
        blocks: int = 1,
        positions: bool = False,
        aux_weight: float = 1.0,
        exposure_loss: bool = False,
    ):
        super().__init__(spec, embedding_dim)
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        self.uses_exposure_loss = exposure_loss
        self.aux_weight = aux_weight
        self.device_model = PEARDeviceModel(self.layout.vector_dims, spec.n, spec.t, d, heads, blocks, positions)
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        scores, list_logit = self.device_model.encode(*self.device_inputs(batch))
        self._last = (scores, list_logit) if torch.is_grad_enabled() else None  # for auxiliary_loss(batch, scores)
        return scores

    def list_logit(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B] logit of "this list holds a click" from the CLS token (training only; not exported)."""
        return self.device_model.encode(*self.device_inputs(batch))[1]

    def auxiliary_loss(self, batch: dict[str, torch.Tensor], scores: torch.Tensor) -> torch.Tensor:
        """alpha * list-level BCE, summed over lists and divided by the number of real candidates, so that
        utility_loss + this = (L_m + alpha L_aux) / #items, the paper's sum-form ratio. An optional
        batch["weight"] [B] weighs each list (weight 0: counts for nothing), as the trainer's shards do."""
        if self._last is not None and self._last[0] is scores:
            list_logit = self._last[1]
        else:
            list_logit = self.list_logit(batch)
        self._last = None
        weight = batch.get("weight", torch.ones_like(list_logit))
        any_click = (batch["label"] * batch["mask"]).amax(dim=(1, 2))
        per_list = F.binary_cross_entropy_with_logits(list_logit, any_click, reduction="none") * weight
        slots = (batch["mask"] * weight.reshape(-1, 1, 1)).sum()
        return self.aux_weight * per_list.sum() / slots.clamp(min=1.0)


class PEARDeviceModel(nn.Module):
    """`forward(cand_0, cand_mask_0, hist_0, hist_mask_0, cand_1, ...) -> scores [B, m, n]`;
    `encode(...)` also returns the CLS list logit [B]."""

    def __init__(
        self,
        vector_dims: Sequence[int],
        n: int,
        t: int,
        d: int = 64,
        heads: int = 2,
        blocks: int = 1,
        positions: bool = False,
    ):
        super().__init__()
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        self.m = len(vector_dims)
        self.inputs = SingleSourceInput(vector_dims, d)
        self.features = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
        self.list_position = nn.Parameter(torch.randn(n, d) * 0.1) if positions else None
        self.history_position = nn.Parameter(torch.randn(t, 1, d) * 0.1) if positions else None
        self.cls = nn.Parameter(torch.randn(d) * 0.1)
        self.blocks = nn.ModuleList(PEARBlock(d, heads) for _ in range(blocks))
        self.item_head = nn.Linear(d, 1)
        self.list_head = nn.Linear(d, 1)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.encode(*inputs)[0]

    def encode(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cand, cand_mask, hist, hist_mask = self.inputs(*inputs)
        batch, slots, d = cand.shape
        if self.list_position is not None:
            cand = (cand.reshape(batch, self.m, -1, d) + self.list_position).reshape(batch, slots, d)
            hist = (hist.reshape(batch, -1, self.m, d) + self.history_position).reshape(batch, -1, d)
        # one call of the shared feature MLP over [history; list]: two calls made ExecuTorch's XNNPACK
        # partitioner build a cyclic partition ("Invalid partition, found dependency cycles")
        z = self.features(torch.cat([hist, cand], dim=1))
        length = hist.shape[1]
        z_hist = z[:, :length]
        cls = z[:, :1] * 0.0 + self.cls  # broadcast by arithmetic (no expand_copy)
        z_list = torch.cat([z[:, length:], cls], dim=1)  # [B, N+1, d]
        list_mask = torch.cat([cand_mask, cand_mask[:, :1] * 0.0 + 1.0], dim=1)  # the CLS key is always real
        for block in self.blocks:
            z_hist, z_list = block(z_hist, hist_mask, z_list, list_mask)
        scores = source_scores(self.item_head(z_list[:, :slots]), cand_mask, self.m)
        return scores, self.list_head(z_list[:, slots:]).reshape(batch)


class PEARBlock(nn.Module):
    """History self-attention (Eq. 2) then merged cross-attention of the list over [history; list] (Eq. 3).

    z_hist, z_list = PEARBlock(d, heads)(z_hist [B, M, d], hist_mask, z_list [B, N+1, d], list_mask)
    """

    def __init__(self, d: int, heads: int):
        super().__init__()
        if d < 1 or heads < 1 or d % heads:
            raise ValueError(f"d ({d}) must be a positive multiple of heads ({heads})")
        self.heads = heads
        self.history_attention = SelfAttention(d, d, heads)
        self.history_norm = nn.LayerNorm(d)
        self.query = nn.Linear(d, d)  # W_q
        self.history_kv = nn.Linear(d, 2 * d)  # W_k1, W_v1
        self.list_kv = nn.Linear(d, 2 * d)  # W_k2, W_v2
        self.list_norm = nn.LayerNorm(d)

    def forward(
        self, z_hist: torch.Tensor, hist_mask: torch.Tensor, z_list: torch.Tensor, list_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h_hist = self.history_norm(z_hist + self.history_attention(z_hist, hist_mask))
        kv = torch.cat([self.history_kv(h_hist), self.list_kv(z_list)], dim=1)  # [B, M+N+1, 2d]
        d = z_list.shape[-1]
        keep = torch.cat([hist_mask, list_mask], dim=1)
        merged = _attend(self.query(z_list), kv[..., :d], kv[..., d:], keep, self.heads)
        return h_hist, self.list_norm(z_list + merged)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head scaled dot-product attention: q [B, Lq, d] over k, v [B, Lk, d], key mask keep [B, Lk].

    3-D bmm over [B * heads, L, dh] with the mask [B, 1, Lk] applied to logits viewed as [B, heads * Lq, Lk]
    (a 4-D matmul or an expanded mask lowers with non-delegated expand_copy ops, docs/export.md).
    """
    batch, lq, d = q.shape
    lk, dh = k.shape[1], d // heads
    q, k, v = (x.reshape(batch, -1, heads, dh).transpose(1, 2).reshape(batch * heads, -1, dh) for x in (q, k, v))
    logits = (torch.bmm(q, k.transpose(1, 2)) / math.sqrt(dh)).reshape(batch, heads * lq, lk)
    weights = masked_softmax(logits, keep.reshape(batch, 1, lk)).reshape(batch * heads, lq, lk)
    return torch.bmm(weights, v).reshape(batch, heads, lq, dh).transpose(1, 2).reshape(batch, lq, d)
