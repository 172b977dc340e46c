"""NAR4Rec: "Non-autoregressive Generative Models for Reranking Recommendation" (Ren et al., KDD'24),
a DIR baseline, run single-source: all m*n candidates as one set, one merged history
(cloud/models/single_source.py).

    model = NAR4Rec(spec)                                # build_model("nar4rec", spec)
    scores = model(batch)                                # [B, m, n] logits of the slot marginals (exported)
    loss = model.auxiliary_loss(batch, scores)           # (un)likelihood + contrastive (the trainer adds no BCE)
    probs, sim = model.matching(batch)                   # [B, N, S] matrix, [B, N, N] cosine
    order = contrastive_decode(probs[0].numpy(), sim[0].numpy(), valid, alpha=0.2)   # device_runtime.decoding
    scores, matching, encodings = model.export_module()(*inputs)   # what the bundle exports (three outputs)

Network, defaults in brackets (L, d and heads are not in the paper):
1. Per-source linear projection to `width` [32] + source embedding; the masked mean of the merged history
   is added to every candidate (how user/history features enter is not stated in the paper; our default).
2. Candidate encoder: `layers` [1] Transformer layers x = LN(x + SelfAttn(x)), x = LN(x + FFN(x)), padded
   keys masked, no positions (permutation-equivariant).
3. Slot encoder over S = `slots` [spec.K] learned slot embeddings: per layer bidirectional self-attention
   over the slots, cross-attention to the candidate encoder's output of the same layer, FFN (residual + LN).
4. Matching matrix p[i, j] = softmax over the real candidates i of x_i . t_j / sqrt(width) (Eq. 12).
Exported `scores`: the logit of the slot marginal q_i = sum_j p[i, j] (clamped to [1e-6, 1 - 1e-6]), so
the trainer's utility loss, when turned on (`utility_loss=True`; off by default, as in the paper), is
BCE on the matching-matrix marginals. The bundle (`export_module`, decoder `contrastive`) also exports the
matching matrix `matching` [1, N, S] and the unit-norm candidate encodings `encodings` [1, N, width]; the
device runs `contrastive_decode` on them in numpy (cosine similarity = encodings @ encodings.T), see
device_runtime/decoding.py `decode_request`.

Training targets (DIR's lists have no logged slot order, so this stands in for it): the logged sequence Y is the
list's clicked candidates first, then its unclicked ones, each group in slot order, first S kept (slots
beyond the real candidates are dropped). Sequence utility R = #clicks in Y; R >= `tau` [1] makes Y a
positive sequence (likelihood -sum log p), else a negative one (unlikelihood -sum log(1 - p)), Eq. 13-15.
Contrastive terms (Eq. 18-19): mean over pairs i != j of max(0, rho - 1 + cos) on candidate outputs
(real pairs) and on slot outputs, weight `omega` [0.01], margin `rho` [0.5]. `auxiliary_loss` returns
their sum per list, summed over lists and divided by the real candidates (like utility_loss).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cloud.models.base import RerankModel
from cloud.models.dir import SelfAttention
from cloud.models.edgerec import BehaviourAttention
from cloud.models.single_source import SingleSourceInput, masked_softmax, source_scores
from cloud.models.svr import masked_mean
from shared_schema.specs import DatasetSpec

EPS = 1e-6


class NAR4Rec(RerankModel):
    """NAR4Rec's generator trained by `auxiliary_loss` alone (the paper's losses); `utility_loss=True` adds
    the trainer's BCE on the marginals, `exposure_loss=True` the exposure loss."""

    search_space = {"embedding_dim": ("int", 8, 32, 8), "width": ("int", 16, 64, 16)}
    device_model: NAR4RecDeviceModel
    """Options `dir-cloud tune` searches (cloud/training/tuning.py: ("int", low, high, step)); no dropout to tune."""

    device_decoder = "contrastive"

    def __init__(
        self,
        spec: DatasetSpec,
        embedding_dim: int = 16,
        width: int = 32,
        heads: int = 2,
        layers: int = 1,
        slots: int | None = None,
        tau: float = 1.0,
        omega: float = 0.01,
        rho: float = 0.5,
        utility_loss: bool = False,
        exposure_loss: bool = False,
    ):
        super().__init__(spec, embedding_dim)
        self.uses_utility_loss = utility_loss
        slots = spec.K if slots is None else slots
        if slots < 1 or layers < 1:
            raise ValueError(f"slots ({slots}) and layers ({layers}) must be >= 1")
        if omega < 0 or not -1.0 <= rho <= 1.0:
            raise ValueError(f"omega must be >= 0 and rho in [-1, 1], got omega={omega}, rho={rho}")
        self.uses_exposure_loss = exposure_loss
        self.slots, self.tau, self.omega, self.rho = slots, tau, omega, rho
        self.device_model = NAR4RecDeviceModel(self.layout.vector_dims, width, heads, layers, slots)
        self._last: tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None = None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = self.device_model.encode(*self.device_inputs(batch))
        self._last = (parts[0], parts) if torch.is_grad_enabled() else None
        return parts[0]

    def export_module(self) -> nn.Module:
        """The exported network: (scores, matching [B, N, S], unit-norm candidate encodings [B, N, w])."""
        return NAR4RecExport(self.device_model)

    @torch.no_grad()
    def matching(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(p [B, N, S] matching matrix over the flat candidates s*n + j, cosine similarity [B, N, N] of the
        candidate encodings), for `device_runtime.decoding.contrastive_decode`."""
        _, probs, x, _, _ = self.device_model.encode(*self.device_inputs(batch))
        unit = F.normalize(x, dim=-1)
        return probs, unit @ unit.transpose(1, 2)

    def auxiliary_loss(self, batch: dict[str, torch.Tensor], scores: torch.Tensor) -> torch.Tensor:
        if self._last is not None and self._last[0] is scores:
            _, probs, x, t, cand_mask = self._last[1]
        else:
            _, probs, x, t, cand_mask = self.device_model.encode(*self.device_inputs(batch))
        self._last = None
        label = (batch["label"] * batch["mask"]).reshape(cand_mask.shape)
        target = sequence_targets(label, cand_mask, self.slots)  # [B, N, S]
        utility = (target * label.unsqueeze(-1)).sum(dim=(1, 2))
        positive = (utility >= self.tau).to(probs.dtype).view(-1, 1, 1)
        p = probs.clamp(EPS, 1.0 - EPS)
        per_list = -(target * (positive * torch.log(p) + (1.0 - positive) * torch.log(1.0 - p))).sum(dim=(1, 2))
        pairs_x = cand_mask.unsqueeze(1) * cand_mask.unsqueeze(2)
        per_list = per_list + self.omega * (
            hinge_similarity(x, pairs_x, self.rho)
            + hinge_similarity(t, torch.ones_like(t[..., 0]).unsqueeze(1), self.rho)
        )
        weight = batch.get("weight", torch.ones_like(per_list))
        slots = (batch["mask"] * weight.view(-1, 1, 1)).sum().clamp(min=1.0)
        return (per_list * weight).sum() / slots


class NAR4RecDeviceModel(nn.Module):
    """`forward(cand_0, cand_mask_0, hist_0, hist_mask_0, cand_1, ...) -> scores [B, m, n]`; `encode(...)` also
    returns the matching matrix [B, N, S], candidate and slot encodings, and the flat candidate mask."""

    def __init__(self, vector_dims, width: int = 32, heads: int = 2, layers: int = 1, slots: int = 5):
        super().__init__()
        if heads < 1 or width % heads:
            raise ValueError(f"width ({width}) must be a positive multiple of heads ({heads})")
        self.m = len(vector_dims)
        self.inputs = SingleSourceInput(vector_dims, width)
        self.slot_embedding = nn.Parameter(torch.randn(slots, width) * 0.1)
        self.cand_layers = nn.ModuleList(EncoderLayer(width, heads) for _ in range(layers))
        self.slot_layers = nn.ModuleList(EncoderLayer(width, heads, cross=True) for _ in range(layers))
        self.scale = 1.0 / math.sqrt(width)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.encode(*inputs)[0]

    def encode(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cand, cand_mask, hist, hist_mask = self.inputs(*inputs)
        x = cand + masked_mean(hist, hist_mask)
        t = masked_mean(cand, cand_mask) * 0.0 + self.slot_embedding.unsqueeze(0)  # [B, S, w], rank 3 (ExecuTorch)
        for cand_layer, slot_layer in zip(self.cand_layers, self.slot_layers):
            x = cand_layer(x, cand_mask)
            t = slot_layer(t, None, x, cand_mask)
        logits = torch.bmm(t, x.transpose(1, 2)) * self.scale  # [B, S, N]
        probs = masked_softmax(logits, cand_mask.unsqueeze(1)).transpose(1, 2)  # [B, N, S], softmax over candidates
        marginal = torch.matmul(probs, torch.ones_like(probs[:, :1, :]).transpose(1, 2)).squeeze(-1)  # sum over slots
        marginal = marginal.clamp(EPS, 1.0 - EPS)
        scores = source_scores(torch.log(marginal) - torch.log(1.0 - marginal), cand_mask, self.m)
        return scores, probs, x, t, cand_mask


class NAR4RecExport(nn.Module):
    """`forward(*layout inputs) -> (scores [B, m, n], matching [B, N, S], encodings [B, N, w])`: what the
    bundle exports for the device's contrastive decoding (encodings unit-normalised, so their dot products
    are the cosine similarities `matching()` gives)."""

    def __init__(self, device_model: NAR4RecDeviceModel):
        super().__init__()
        self.device_model = device_model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scores, probs, x, _, _ = self.device_model.encode(*inputs)
        return scores, probs, x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True).clamp(min=1e-24))


class EncoderLayer(nn.Module):
    """Post-LN Transformer layer: self-attention, optional cross-attention to `memory`, FFN (width 2w)."""

    def __init__(self, width: int, heads: int, cross: bool = False):
        super().__init__()
        self.attention = SelfAttention(width, width, heads)
        self.cross = BehaviourAttention(width, heads) if cross else None
        self.ffn = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, width))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(3 if cross else 2))

    def forward(self, x, mask=None, memory=None, memory_mask=None):
        x = self.norms[0](x + self.attention(x, mask))
        if self.cross is not None:
            x = self.norms[2](x + self.cross(x, memory, memory_mask))
        return self.norms[1](x + self.ffn(x))


def sequence_targets(label: torch.Tensor, mask: torch.Tensor, slots: int) -> torch.Tensor:
    """P [B, N, S]: 1 where candidate i fills slot j of the stand-in logged sequence (clicked first, then
    unclicked, each in slot order; padded candidates never; slots past the real candidates stay empty)."""
    n = label.shape[1]
    index = torch.arange(n, device=label.device, dtype=label.dtype)
    key = index + n * (1.0 - label) + 2 * n * (1.0 - mask)
    order = torch.argsort(key, dim=1)[:, :slots]  # [B, S']
    picked = F.one_hot(order, n).to(label.dtype) * torch.gather(mask, 1, order).unsqueeze(-1)  # [B, S', N]
    target = picked.transpose(1, 2)
    if target.shape[2] < slots:  # fewer candidate slots than S
        target = F.pad(target, (0, slots - target.shape[2]))
    return target


def hinge_similarity(z: torch.Tensor, pairs: torch.Tensor, rho: float) -> torch.Tensor:
    """[B]: mean over pairs i != j with pairs[b, i, j] = 1 of max(0, rho - 1 + cos(z_i, z_j)) (0 if none)."""
    unit = F.normalize(z, dim=-1)
    off = 1.0 - torch.eye(z.shape[1], device=z.device, dtype=z.dtype)
    keep = pairs * off
    hinge = torch.relu(rho - 1.0 + unit @ unit.transpose(1, 2)) * keep
    return hinge.sum(dim=(1, 2)) / keep.sum(dim=(1, 2)).clamp(min=1.0)
