"""DIN: "Deep Interest Network for Click-Through Rate Prediction" (Zhou et al., KDD'18), a DIR baseline,
run single-source: all m*n candidates as one set, one merged history (cloud/models/single_source.py).

    model = DIN(spec)                     # build_model("din", spec); --history device|cloud gives DIN-D / DIN-C
    scores = model(batch)                 # [B, m, n] logits, each candidate scored on its own

Device model, defaults in brackets:
1. Per-source linear projection to `width` [32] + learned source embedding, candidates and history.
2. Local activation unit: for candidate x and history item h, weight a(h, x) = MLP([h, x, h - x, h * x])
   (one hidden layer of `attention_hidden` [36] units, then one output, no softmax); padded history
   slots weigh 0.
3. Sum pooling u(x) = sum_h a(h, x) h (an empty history gives u = 0).
4. MLP([u(x), x]) with widths `mlp_dims` [(200, 80)] and PReLU (`activation="relu"` for ReLU), one logit.
Pointwise: a candidate's score does not depend on the other candidates (permutation-equivariant).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cloud.models.base import RerankModel
from cloud.models.single_source import SingleSourceInput, mlp, source_scores
from shared_schema.specs import DatasetSpec


class PReLU(nn.Module):
    """PReLU with one learned slope a (init 0.25), as relu(x) - a * relu(-x): ExecuTorch's XNNPACK lowering
    rejected aten.prelu in this model ("non-NHWC compatible node")."""

    def __init__(self):
        super().__init__()
        self.slope = nn.Parameter(torch.tensor(0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) - self.slope * torch.relu(-x)


ACTIVATIONS = {"prelu": PReLU, "relu": nn.ReLU}


class DIN(RerankModel):
    """DIN on the flattened candidate set; trained with the utility loss only unless `exposure_loss`."""

    search_space = {
        "embedding_dim": ("int", 8, 32, 8),
        "width": ("int", 16, 64, 16),
        "attention_hidden": ("int", 16, 64, 4),
    }
    """Options `dir-cloud tune` searches (cloud/training/tuning.py: ("int", low, high, step)); no dropout to tune."""

    def __init__(
        self,
        spec: DatasetSpec,
        embedding_dim: int = 16,
        width: int = 32,
        attention_hidden: int = 36,
        mlp_dims: Sequence[int] = (200, 80),
        activation: str = "prelu",
        exposure_loss: bool = False,
    ):
        super().__init__(spec, embedding_dim)
        self.uses_exposure_loss = exposure_loss
        self.device_model = DINDeviceModel(self.layout.vector_dims, width, attention_hidden, mlp_dims, activation)


class DINDeviceModel(nn.Module):
    """`forward(cand_0, cand_mask_0, hist_0, hist_mask_0, cand_1, ...) -> scores [B, m, n]`."""

    def __init__(
        self,
        vector_dims: Sequence[int],
        width: int = 32,
        attention_hidden: int = 36,
        mlp_dims: Sequence[int] = (200, 80),
        activation: str = "prelu",
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        act = ACTIVATIONS[activation]
        self.m = len(vector_dims)
        self.inputs = SingleSourceInput(vector_dims, width)
        self.attention = ActivationUnit(width, attention_hidden, prelu=activation == "prelu")
        self.mlp = mlp([2 * width, *mlp_dims], act)
        self.out = nn.Linear(mlp_dims[-1], 1)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        cand, cand_mask, hist, hist_mask = self.inputs(*inputs)
        weights = self.attention(hist, cand) * hist_mask.unsqueeze(1)  # [B, N, L], unnormalised
        interest = torch.matmul(weights, hist)  # sum pooling, [B, N, w]
        logits = self.out(self.mlp(torch.cat([interest, cand], dim=-1)))
        return source_scores(logits, cand_mask, self.m)


class ActivationUnit(nn.Module):
    """DIN's local activation unit: a(h, x) = v . act(W [h, x, h - x, h * x] + b) + c for every
    (candidate x, history item h) pair, one hidden layer of `hidden` units, act PReLU or ReLU.

        weights = ActivationUnit(w, 36)(hist [B, L, w], cand [B, N, w])   # [B, N, L]

    Computed without the [B, N, L, 4w] pair tensor: unit j's pre-activation is linear in h given x,
    sum_k (x_k P_jk + Q_jk) h_k + R_j(x) with W = [W_h, W_x, W_d, W_p], P = W_p, Q = W_h + W_d,
    R(x) = (W_x - W_d) x + b, so one batched matmul gives all pairs; PReLU followed by the output layer
    is v . prelu(z) = (1 - s) v . relu(z) + s v . z, so relu(z) is the only other pair-sized tensor.
    """

    def __init__(self, width: int, hidden: int = 36, prelu: bool = True):
        super().__init__()
        if hidden < 1:
            raise ValueError(f"attention_hidden must be positive, got {hidden}")
        self.width = width
        self.first = nn.Linear(4 * width, hidden)
        self.slope = nn.Parameter(torch.tensor(0.25)) if prelu else None
        self.last = nn.Linear(hidden, 1)

    def forward(self, hist: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        w = self.width
        w_h, w_x, w_d, w_p = (self.first.weight[:, i * w : (i + 1) * w] for i in range(4))  # each [hidden, w]
        given_x = (torch.matmul(cand, (w_x - w_d).t()) + self.first.bias).unsqueeze(-1)  # R(x) [B, N, hidden, 1]
        left = torch.cat([cand.unsqueeze(2) * w_p + (w_h + w_d), given_x], dim=-1)  # [B, N, hidden, w + 1]
        batch, n, hidden, _ = left.shape
        right = torch.cat([hist, torch.ones_like(hist[..., :1])], dim=-1)  # [B, L, w + 1]
        # pre-activations of all pairs as [B, L, N, hidden], so the output layer is a plain matmul (no copies)
        z = torch.matmul(right, left.reshape(batch, n * hidden, w + 1).transpose(1, 2)).reshape(batch, -1, n, hidden)
        v = self.last.weight.t()  # [hidden, 1]
        out = torch.matmul(torch.relu(z), v)
        if self.slope is not None:  # z . v = right . (left^T v): linear in the pair, no pair-sized product
            per_candidate = torch.matmul(v.t(), left).reshape(batch, n, w + 1)  # left^T v [B, N, w + 1]
            linear = torch.matmul(right, per_candidate.transpose(1, 2))  # [B, L, N]
            out = (1.0 - self.slope) * out + self.slope * linear.unsqueeze(-1)
        return (out + self.last.bias).squeeze(-1).transpose(1, 2)  # [B, N, L]
