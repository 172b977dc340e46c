"""Shared input and output of the single-source baselines (DIN, SetRank, PRM, MIR, PEAR) in the layout.

    flat = SingleSourceInput(vector_dims, width=32)
    cand, cand_mask, hist, hist_mask = flat(*inputs)   # [B, m*n, w], [B, m*n], [B, m*t, w], [B, m*t]
    scores = source_scores(item_logits, cand_mask, m)   # [B, m*n] -> [B, m, n], PAD_LOGIT at padding

Candidates: the m*n slots become ONE set; slot j of source s is flat index s*n + j. Each vector is
projected from its source's width d_s to a common `width` by a per-source linear layer, and the learned
embedding of its source is added; padded slots are zeroed afterwards.

History: the union of the m per-source histories as one sequence of m*t slots, projected the same way.
The layout only holds each source's history newest first, without timestamps, so the true order across
sources is unknown; the merge interleaves by recency rank: merged slot r*m + s holds source s's r-th
newest behaviour (ties between sources broken by source order). Index 0 is still the newest, but padding
is spread through the sequence (a short history leaves holes), so every consumer reads `hist_mask`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cloud.models.dir import MASKED, PAD_LOGIT


class SingleSourceInput(nn.Module):
    """Layout tensors -> one candidate set and one merged history in a common width (see module docstring)."""

    def __init__(self, vector_dims: Sequence[int], width: int):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be positive, got {width}")
        self.m = len(vector_dims)
        self.project = nn.ModuleList(nn.Linear(d, width) for d in vector_dims)
        self.source = nn.Parameter(torch.randn(self.m, width) * 0.1)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.m
        if len(inputs) != 4 * m:
            raise ValueError(
                f"expected {4 * m} inputs (cand, cand_mask, hist, hist_mask per source), got {len(inputs)}"
            )
        (cand, cand_mask), (hist, hist_mask) = (self._project(inputs, offset) for offset in (0, 2))
        batch, _, n, width = cand.shape
        t = hist.shape[2]
        return (
            cand.reshape(batch, m * n, width),
            cand_mask.reshape(batch, m * n),
            hist.transpose(1, 2).reshape(batch, t * m, width),  # merged slot r*m + s
            hist_mask.transpose(1, 2).reshape(batch, t * m),
        )

    def _project(self, inputs: tuple[torch.Tensor, ...], offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidates (offset 0) or histories (offset 2) of every source: vectors [B, m, L, w], masks [B, m, L]."""
        masks = inputs[offset + 1 :: 4]
        vectors = [
            (self.project[s](inputs[4 * s + offset]) + self.source[s : s + 1]) * masks[s].unsqueeze(-1)
            for s in range(self.m)
        ]  # a slice of the source table, not source[s] (select_copy)
        return torch.stack(vectors, dim=1), torch.stack(masks, dim=1)


def source_scores(item_logits: torch.Tensor, cand_mask: torch.Tensor, m: int) -> torch.Tensor:
    """Flat logits [B, m*n] (or [B, m*n, 1]) -> scores [B, m, n]; padded slots get PAD_LOGIT."""
    scores = item_logits.reshape(cand_mask.shape) * cand_mask + (1.0 - cand_mask) * PAD_LOGIT
    return scores.reshape(scores.shape[0], m, -1)


def masked_softmax(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis ignoring entries with keep 0 (finite mask; all-masked rows give uniform
    weights, so callers zero what those rows would read)."""
    return torch.softmax(logits * keep + (keep - 1.0) * MASKED, dim=-1)


def recency_rank(hist_mask: torch.Tensor) -> torch.Tensor:
    """[..., L] -> [..., L]: how many real behaviours precede each slot of a newest-first history (0 = newest),
    as a matmul with a strictly upper-triangular ones matrix (no cumsum)."""
    index = torch.arange(hist_mask.shape[-1], device=hist_mask.device)
    earlier = (index.unsqueeze(1) < index.unsqueeze(0)).to(hist_mask.dtype)  # [L, L]: row i before column j
    return torch.matmul(hist_mask, earlier)


def mlp(widths: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers widths[0] -> ... -> widths[-1], each followed by `activation`."""
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"an MLP needs an input width and one or more positive layer widths, got {tuple(widths)}")
    return nn.Sequential(*(layer for a, b in zip(widths[:-1], widths[1:]) for layer in (nn.Linear(a, b), activation())))
