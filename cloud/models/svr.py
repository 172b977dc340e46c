"""SVR: "Real-time Short Video Recommendation on Mobile Devices" (Gong et al., CIKM'22, Kuaishou; NAR4Rec's
"Edge-Rerank"), a DIR baseline, run single-source: all m*n candidates as one set,
one merged history (cloud/models/single_source.py).

    model = SVR(spec)                                    # build_model("svr", spec)
    scores = model(batch)                                # [B, m, n] click logits (what the device runs)
    loss = utility_loss(scores, ...) + model.auxiliary_loss(batch, scores)   # + list-context head BCE
    order = beam_search(per_source_probs, K=5, beam_width=4)   # on the device, device_runtime/decoding.py

Device network (fixed shape, exported like every model), defaults in brackets:
1. Per-source linear projection to `width` [32] + learned source embedding (candidates and history).
2. Target attention over the merged history: each candidate is the query, softmax over the real
   behaviours (EdgeRec's BehaviourAttention with one sequence, `heads` [2]); an empty history gives 0.
3. List context c = masked mean of the candidates, given to every candidate.
4. Shared bottom MLP([x, u, x * u, c]) with widths `mlp_dims` [(64, 32)], then two task heads:
   - click head: one logit per candidate = the exported `scores` (training: utility loss);
   - list-context head: from the masked mean of the bottom outputs, the logit that the list holds a
     click (training only, `auxiliary_loss`, weight `aux_weight` [0.5]). Kuaishou's tasks (click, like,
     follow, long view) have no counterpart in click-only logs; this second head is our choice.
Decoding (device side, numpy): SVR builds the list by beam search over a list reward on the estimated
scores; `device_runtime.decoding.beam_search` does that around this network's output (beam width and the
reward's diversity weight are arguments there). Training uses the click head only (plus the list head).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cloud.models.base import RerankModel
from cloud.models.edgerec import BehaviourAttention
from cloud.models.single_source import SingleSourceInput, mlp, source_scores
from shared_schema.specs import DatasetSpec


class SVR(RerankModel):
    """SVR's network with its two heads; utility (+ list-head) loss only unless `exposure_loss`."""

    search_space = {"embedding_dim": ("int", 8, 32, 8), "width": ("int", 16, 64, 16)}
    device_model: SVRDeviceModel
    """Options `dir-cloud tune` searches (cloud/training/tuning.py: ("int", low, high, step)); no dropout to tune."""

    device_decoder = "beam_search"

    def __init__(
        self,
        spec: DatasetSpec,
        embedding_dim: int = 16,
        width: int = 32,
        heads: int = 2,
        mlp_dims: Sequence[int] = (64, 32),
        aux_weight: float = 0.5,
        exposure_loss: bool = False,
    ):
        super().__init__(spec, embedding_dim)
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        self.uses_exposure_loss = exposure_loss
        self.aux_weight = aux_weight
        self.device_model = SVRDeviceModel(self.layout.vector_dims, width, heads, mlp_dims)
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        scores, list_logit = self.device_model.encode(*self.device_inputs(batch))
        self._last = (scores, list_logit) if torch.is_grad_enabled() else None  # for auxiliary_loss
        return scores

    def auxiliary_loss(self, batch: dict[str, torch.Tensor], scores: torch.Tensor) -> torch.Tensor:
        """aux_weight * BCE of the list-context head against "the list holds a click", summed over lists
        (weighted by batch["weight"] when present) and divided by the real candidates, like utility_loss."""
        if self._last is not None and self._last[0] is scores:
            list_logit = self._last[1]
        else:
            list_logit = self.device_model.encode(*self.device_inputs(batch))[1]
        self._last = None
        any_click = (batch["label"] * batch["mask"]).amax(dim=(1, 2))
        per_list = F.binary_cross_entropy_with_logits(list_logit, any_click, reduction="none")
        weight = batch.get("weight", torch.ones_like(per_list))
        slots = (batch["mask"] * weight.view(-1, 1, 1)).sum().clamp(min=1.0)
        return self.aux_weight * (per_list * weight).sum() / slots


class SVRDeviceModel(nn.Module):
    """`forward(cand_0, cand_mask_0, hist_0, hist_mask_0, cand_1, ...) -> scores [B, m, n]`;
    `encode(...)` also returns the list-context logit [B]."""

    def __init__(self, vector_dims: Sequence[int], width: int = 32, heads: int = 2, mlp_dims: Sequence[int] = (64, 32)):
        super().__init__()
        if heads < 1 or width % heads:
            raise ValueError(f"width ({width}) must be a positive multiple of heads ({heads})")
        self.m = len(vector_dims)
        self.inputs = SingleSourceInput(vector_dims, width)
        self.attention = BehaviourAttention(width, heads)
        self.bottom = mlp([4 * width, *mlp_dims])
        self.click = nn.Linear(mlp_dims[-1], 1)
        self.list_head = nn.Linear(mlp_dims[-1], 1)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.encode(*inputs)[0]

    def encode(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cand, cand_mask, hist, hist_mask = self.inputs(*inputs)
        interest = self.attention(cand, hist, hist_mask)
        context = cand * 0.0 + masked_mean(cand, cand_mask)  # broadcast by arithmetic: no expand_copy
        z = self.bottom(torch.cat([cand, interest, cand * interest, context], dim=-1))
        scores = source_scores(self.click(z).squeeze(-1), cand_mask, self.m)
        list_logit = self.list_head(masked_mean(z, cand_mask)).reshape(-1)
        return scores, list_logit


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, N, w], [B, N] -> [B, 1, w] mean over the real slots (0 when there are none), as one bmm."""
    keep = mask.unsqueeze(1)
    return torch.bmm(keep, x) / torch.bmm(keep, keep.transpose(1, 2)).clamp(min=1.0)
