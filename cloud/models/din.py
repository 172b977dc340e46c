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
from torch.autograd.function import once_differentiable

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
    is v . prelu(z) = (1 - s) v . relu(z) + s v . z, and v . z is linear in the pair, so v . relu(z) is
    the only pair-sized part. When autograd records (training), that part runs as `RectifiedPairs`, a few
    lists at a time and recomputed in backward, so no pair-sized tensor is stored; inference and
    torch.export keep the plain formulation (`chunked = False` forces it, e.g. to count its FLOPs).
    """

    def __init__(self, width: int, hidden: int = 36, prelu: bool = True):
        super().__init__()
        if hidden < 1:
            raise ValueError(f"attention_hidden must be positive, got {hidden}")
        self.width = width
        self.first = nn.Linear(4 * width, hidden)
        self.slope = nn.Parameter(torch.tensor(0.25)) if prelu else None
        self.last = nn.Linear(hidden, 1)
        self.chunked = True

    def forward(self, hist: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        w = self.width
        w_h, w_x, w_d, w_p = (self.first.weight[:, i * w : (i + 1) * w] for i in range(4))  # each [hidden, w]
        given_x = torch.matmul(cand, (w_x - w_d).t()) + self.first.bias  # R(x) [B, N, hidden]
        if self.chunked and torch.is_grad_enabled() and not torch.compiler.is_compiling():
            return self._recomputed(hist, cand, w_p, w_h + w_d, given_x)
        given_x = given_x.unsqueeze(-1)  # [B, N, hidden, 1]
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

    def _recomputed(
        self, hist: torch.Tensor, cand: torch.Tensor, w_p: torch.Tensor, q: torch.Tensor, given_x: torch.Tensor
    ) -> torch.Tensor:
        """The same weights [B, N, L] through `RectifiedPairs`; v . z from the [B, N, w] factors."""
        v = self.last.weight  # [1, hidden]
        out = RectifiedPairs.apply(hist, cand, w_p, q, given_x, v.reshape(-1))  # [B, L, N]
        if self.slope is not None:  # z . v = h . (x * (v^T P) + v^T Q) + R(x) . v
            per_candidate = cand * torch.matmul(v, w_p) + torch.matmul(v, q)  # [B, N, w]
            linear = torch.matmul(hist, per_candidate.transpose(1, 2)) + torch.matmul(given_x, v.t()).transpose(1, 2)
            out = (1.0 - self.slope) * out + self.slope * linear
        return (out + self.last.bias).transpose(1, 2)


class RectifiedPairs(torch.autograd.Function):
    """v . relu(z) for every (history item l, candidate n) pair, [B, L, N], with
    z[b, l, n] = a[b, n] hist[b, l] + R[b, n] and a[b, n] = cand[b, n] * P + Q ([hidden, w] each).

        out = RectifiedPairs.apply(hist [B, L, w], cand [B, N, w], P, Q, R [B, N, hidden], v [hidden])

    Runs over the batch a few lists at a time, so that a chunk's z [b, L, N, hidden] stays in cache, and
    saves only its inputs: backward recomputes each chunk's z instead of reading a stored pair-sized tensor
    (autograd over the plain formulation writes and rereads several of them, each 66 MB at DIN's default
    sizes, and is memory-bound). Costs one more batched matmul than the plain formulation's training step.
    """

    CHUNK_FLOATS = 1 << 18
    """Floats of z per chunk (1 MiB, within a core's L2 cache)."""

    @staticmethod
    def _chunks(hist: torch.Tensor, given_x: torch.Tensor) -> list[slice]:
        """Slices of the batch, each holding about CHUNK_FLOATS of z."""
        size = max(1, RectifiedPairs.CHUNK_FLOATS // max(1, hist.shape[1] * given_x.shape[1] * given_x.shape[2]))
        return [slice(s, s + size) for s in range(0, hist.shape[0], size)]

    @staticmethod
    def _pre_activations(
        hist: torch.Tensor, cand: torch.Tensor, p: torch.Tensor, q: torch.Tensor, given_x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk's a [b, N * hidden, w] and z [b, L, N * hidden]."""
        b, n, hidden = given_x.shape
        a = torch.addcmul(q, cand.unsqueeze(2), p).reshape(b, n * hidden, -1)
        return a, torch.baddbmm(given_x.reshape(b, 1, n * hidden), hist, a.transpose(1, 2))

    @staticmethod
    def forward(ctx, hist, cand, p, q, given_x, v):  # type: ignore[override]
        ctx.save_for_backward(hist, cand, p, q, given_x, v)
        batch, length, _ = hist.shape
        n, hidden = given_x.shape[1:]
        out = hist.new_empty(batch, length, n)
        for c in RectifiedPairs._chunks(hist, given_x):
            _, z = RectifiedPairs._pre_activations(hist[c], cand[c], p, q, given_x[c])
            out[c] = torch.matmul(z.relu_().reshape(-1, length, n, hidden), v)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        hist, cand, p, q, given_x, v = ctx.saved_tensors
        _, length, _ = hist.shape
        n, hidden = given_x.shape[1:]
        g_hist, g_cand, g_given = (
            hist.new_empty(hist.shape),
            cand.new_empty(cand.shape),
            given_x.new_empty(given_x.shape),
        )
        g_p, g_q, g_v = p.new_zeros(p.shape), q.new_zeros(q.shape), v.new_zeros(v.shape)
        for c in RectifiedPairs._chunks(hist, given_x):
            a, z = RectifiedPairs._pre_activations(hist[c], cand[c], p, q, given_x[c])
            b = z.shape[0]
            g_z = torch.ops.aten.threshold_backward(grad[c].unsqueeze(-1) * v, z.reshape(b, length, n, hidden), 0)
            g_z = g_z.reshape(b, length, n * hidden)  # d out / d z: v where z > 0
            g_v.addmv_(z.relu_().reshape(-1, hidden).t(), grad[c].reshape(-1))
            g_hist[c] = torch.bmm(g_z, a)
            g_given[c] = g_z.sum(1).reshape(b, n, hidden)
            g_a = torch.bmm(g_z.transpose(1, 2), hist[c]).reshape(b, n, hidden, -1)
            g_cand[c] = (g_a * p).sum(2)
            g_p += (g_a * cand[c].unsqueeze(2)).sum((0, 1))
            g_q += g_a.sum((0, 1))
        return g_hist, g_cand, g_p, g_q, g_given, g_v
