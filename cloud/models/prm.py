"""PRM: "Personalized Re-ranking for Recommendation" (Pei et al., RecSys'19), a MIR/PEAR baseline, run
single-source over all m*n candidates as one initial list.

    model = PRM(spec)                     # build_model("prm", spec)
    scores = model(batch)                 # [B, m, n] logits

Device model, defaults in brackets:
1. Per-source linear projection to `width` [64] + learned source embedding (cloud/models/single_source.py)
   + a learned position embedding of the slot's index within its source's upstream list (0..n-1).
2. `blocks` [2] Transformer encoder blocks (cloud/models/setrank.py EncoderBlock), `heads` [2], FFN
   width `ffn` [128], padded keys masked.
3. A linear layer to one logit per candidate (the paper's list softmax is replaced by the trainer's BCE).
PRM's pre-trained personalised vector is left out (no pre-trained model here), so it uses no history.
Not permutation-equivariant by design: the position embedding ties scores to upstream slots. The
position table has n rows, so the model runs only at the spec's n.
"""

from __future__ import annotations

import torch
from torch import nn

from cloud.models.base import RerankModel
from cloud.models.setrank import EncoderBlock
from cloud.models.single_source import SingleSourceInput, source_scores
from shared_schema.specs import DatasetSpec


class PRM(RerankModel):
    """PRM on the flattened initial list; utility loss only unless `exposure_loss`."""

    search_space = {"embedding_dim": ("int", 8, 32, 8), "width": ("int", 32, 96, 16), "ffn": ("int", 64, 256, 64)}
    """Options `dir-cloud tune` searches (cloud/training/tuning.py: ("int", low, high, step)); no dropout to tune."""

    reads_history = False

    def __init__(
        self,
        spec: DatasetSpec,
        embedding_dim: int = 16,
        width: int = 64,
        heads: int = 2,
        blocks: int = 2,
        ffn: int = 128,
        exposure_loss: bool = False,
    ):
        super().__init__(spec, embedding_dim)
        self.uses_exposure_loss = exposure_loss
        self.device_model = PRMDeviceModel(self.layout.vector_dims, spec.n, width, heads, blocks, ffn)


class PRMDeviceModel(nn.Module):
    """`forward(cand_0, cand_mask_0, hist_0, hist_mask_0, cand_1, ...) -> scores [B, m, n]` (histories unused)."""

    def __init__(self, vector_dims, n: int, width: int = 64, heads: int = 2, blocks: int = 2, ffn: int = 128):
        super().__init__()
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        self.m, self.n = len(vector_dims), n
        self.inputs = SingleSourceInput(vector_dims, width)
        self.position = nn.Parameter(torch.randn(n, width) * 0.1)
        self.blocks = nn.ModuleList(EncoderBlock(width, heads, ffn) for _ in range(blocks))
        self.out = nn.Linear(width, 1)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x, cand_mask, _, _ = self.inputs(*inputs)
        batch, slots, width = x.shape
        if slots != self.m * self.n:
            raise ValueError(f"PRM's position table has n={self.n} rows; got {slots // self.m} candidates per source")
        x = (x.reshape(batch, self.m, self.n, width) + self.position).reshape(batch, slots, width)
        for block in self.blocks:
            x = block(x, cand_mask)
        return source_scores(self.out(x), cand_mask, self.m)
