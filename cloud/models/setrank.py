"""SetRank: "Learning a Permutation-Invariant Ranking Model for Information Retrieval" (Pang et al.,
SIGIR'20), a DIR baseline, run single-source over all m*n candidates as one set; it uses no history.

    model = SetRank(spec)                 # build_model("setrank", spec)
    scores = model(batch)                 # [B, m, n] logits

Device model, defaults in brackets:
1. Per-source linear projection to `width` [64] + learned source embedding (cloud/models/single_source.py).
2. `blocks` [2] multi-head self-attention blocks (MSAB) over the candidate set, `heads` [4], padded
   keys masked, no positional encoding: x = LN(x + Attn(x)); x = LN(x + FFN(x)), FFN width `ffn` [128].
3. A linear layer to one logit per candidate.
Permutation-equivariant by construction. Trained with the trainer's BCE (the paper's attention-rank
loss is not used; see docs/baselines.md).
"""

from __future__ import annotations

import torch
from torch import nn

from cloud.models.base import RerankModel
from cloud.models.dir import SelfAttention
from cloud.models.single_source import SingleSourceInput, source_scores
from shared_schema.specs import DatasetSpec


class SetRank(RerankModel):
    """SetRank on the flattened candidate set; utility loss only unless `exposure_loss`."""

    search_space = {"embedding_dim": ("int", 8, 32, 8), "width": ("int", 32, 96, 16), "ffn": ("int", 64, 256, 64)}
    """Options `dir-cloud tune` searches (cloud/training/tuning.py: ("int", low, high, step)); no dropout to tune."""

    reads_history = False

    def __init__(
        self,
        spec: DatasetSpec,
        embedding_dim: int = 16,
        width: int = 64,
        heads: int = 4,
        blocks: int = 2,
        ffn: int = 128,
        exposure_loss: bool = False,
    ):
        super().__init__(spec, embedding_dim)
        self.uses_exposure_loss = exposure_loss
        self.device_model = SetRankDeviceModel(self.layout.vector_dims, width, heads, blocks, ffn)


class SetRankDeviceModel(nn.Module):
    """`forward(cand_0, cand_mask_0, hist_0, hist_mask_0, cand_1, ...) -> scores [B, m, n]` (histories unused)."""

    def __init__(self, vector_dims, width: int = 64, heads: int = 4, blocks: int = 2, ffn: int = 128):
        super().__init__()
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        self.m = len(vector_dims)
        self.inputs = SingleSourceInput(vector_dims, width)
        self.blocks = nn.ModuleList(EncoderBlock(width, heads, ffn) for _ in range(blocks))
        self.out = nn.Linear(width, 1)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x, cand_mask, _, _ = self.inputs(*inputs)
        for block in self.blocks:
            x = block(x, cand_mask)
        return source_scores(self.out(x), cand_mask, self.m)


class EncoderBlock(nn.Module):
    """Post-norm Transformer encoder block over a masked set (SetRank's MSAB, PRM's encoder block).

    x = EncoderBlock(width, heads, ffn)(x [B, L, width], key_mask [B, L])   # [B, L, width]
    """

    def __init__(self, width: int, heads: int, ffn: int):
        super().__init__()
        if width < 1 or heads < 1 or width % heads:
            raise ValueError(f"width ({width}) must be a positive multiple of heads ({heads})")
        self.attention = SelfAttention(width, width, heads)
        self.norm1 = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, ffn), nn.ReLU(), nn.Linear(ffn, width))
        self.norm2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attention(x, key_mask))
        return self.norm2(x + self.ffn(x))
