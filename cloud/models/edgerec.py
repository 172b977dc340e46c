"""EdgeRec: "EdgeRec: Recommender System on Edge in Mobile Taobao" (Gong et al., CIKM'20), a DIR baseline,
adapted to the layout: all m*n candidates as one set, one behaviour sequence per
source (cloud/models/single_source.py flattens both).

    model = EdgeRec(spec)                 # build_model("edgerec", spec)
    scores = model(batch)                 # [B, m, n] logits

EdgeRec models heterogeneous on-device behaviour sequences (item exposures and item actions in Taobao)
with attention from the candidates. The layout has per-source click histories only (no exposures, no
action types), so here each source's history is one "heterogeneous" behaviour sequence, told apart by a
learned source ("action type") embedding added to every behaviour; the exposure sequence has no
counterpart and is left out. Device model, defaults in brackets:
1. Per-source linear projection to `width` [32] + learned source embedding (candidates and behaviours).
2. Behaviour attention, one per source sequence: the candidates are the queries, that source's real
   behaviours the keys and values (scaled dot product, `heads` [2], softmax over the real behaviours; an
   empty sequence gives 0). The m interest vectors are concatenated.
3. Context-aware reranking: multi-head self-attention over the candidate set with a residual (EdgeRec
   encodes the ranked list with a GRU; the layout's candidate set has no order, so attention instead).
4. MLP([context, interests]) with widths `mlp_dims` [(64, 32)], ReLU, one logit per candidate.
Weights do not depend on n or t; permutation-equivariant within each source's candidates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from cloud.models.base import RerankModel
from cloud.models.dir import SelfAttention
from cloud.models.single_source import SingleSourceInput, masked_softmax, mlp, source_scores
from shared_schema.specs import DatasetSpec


class EdgeRec(RerankModel):
    """EdgeRec on the flattened candidate set; utility loss only unless `exposure_loss`."""

    search_space = {"embedding_dim": ("int", 8, 32, 8), "width": ("int", 16, 64, 16)}
    """Options `dir-cloud tune` searches (cloud/training/tuning.py: ("int", low, high, step)); no dropout to tune."""

    def __init__(
        self,
        spec: DatasetSpec,
        embedding_dim: int = 16,
        width: int = 32,
        heads: int = 2,
        mlp_dims: Sequence[int] = (64, 32),
        exposure_loss: bool = False,
    ):
        super().__init__(spec, embedding_dim)
        self.uses_exposure_loss = exposure_loss
        self.device_model = EdgeRecDeviceModel(self.layout.vector_dims, width, heads, mlp_dims)


class EdgeRecDeviceModel(nn.Module):
    """`forward(cand_0, cand_mask_0, hist_0, hist_mask_0, cand_1, ...) -> scores [B, m, n]`."""

    def __init__(self, vector_dims: Sequence[int], width: int = 32, heads: int = 2, mlp_dims: Sequence[int] = (64, 32)):
        super().__init__()
        if heads < 1 or width % heads:
            raise ValueError(f"width ({width}) must be a positive multiple of heads ({heads})")
        self.m = len(vector_dims)
        self.inputs = SingleSourceInput(vector_dims, width)
        self.behaviour = BehaviourAttention(width, heads)
        self.context = SelfAttention(width, width, heads)
        self.mlp = mlp([(self.m + 1) * width, *mlp_dims])
        self.out = nn.Linear(mlp_dims[-1], 1)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        cand, cand_mask, hist, hist_mask = self.inputs(*inputs)
        context = cand + self.context(cand, cand_mask)
        m = self.m
        source_of_slot = torch.arange(hist.shape[1], device=hist.device) % m  # merged slot r*m + s
        interests = [
            self.behaviour(cand, hist, hist_mask * (source_of_slot == s).to(hist_mask.dtype)) for s in range(m)
        ]
        logits = self.out(self.mlp(torch.cat([context, *interests], dim=-1))).squeeze(-1)
        return source_scores(logits, cand_mask, m)


class BehaviourAttention(nn.Module):
    """Candidates attend over the behaviours with keep 1 (multi-head, scaled dot product, no output projection).

        interest = BehaviourAttention(w, heads)(cand [B, N, w], hist [B, L, w], keep [B, L])   # [B, N, w]

    A candidate whose keys are all masked reads 0.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.scale = 1.0 / math.sqrt(width // heads)

    def forward(self, cand: torch.Tensor, hist: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        batch, n, w = cand.shape
        length, heads = hist.shape[1], self.heads
        dh = w // heads
        kv = self.key_value(hist)
        q = self.query(cand).reshape(batch, n, heads, dh).transpose(1, 2).reshape(-1, n, dh)
        k, v = (
            kv[..., i * w : (i + 1) * w].reshape(batch, length, heads, dh).transpose(1, 2).reshape(-1, length, dh)
            for i in range(2)
        )
        logits = (torch.bmm(q, k.transpose(1, 2)) * self.scale).reshape(batch, heads * n, length)
        weights = masked_softmax(logits, keep.unsqueeze(1)) * keep.unsqueeze(1)  # all-masked rows read 0
        out = torch.bmm(weights.reshape(-1, n, length), v)
        return out.reshape(batch, heads, n, dh).transpose(1, 2).reshape(batch, n, w)
