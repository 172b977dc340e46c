"""MIR: "Multi-Level Interaction Reranking with User Behavior History" (Xi et al., SIGIR'22),
a DIR baseline, run single-source: all m*n candidates as one set, one merged history
(cloud/models/single_source.py). Equation numbers are the paper's; docs/baselines.md lists the choices.

    model = MIR(spec)                     # build_model("mir", spec); --history device|cloud: MIR-D / MIR-C
    model = MIR(spec, printed_form=True)  # Eq. 7 as printed (slot-tied W_s, W_l; not equivariant)
    scores = model(batch)                 # [B, m, n] logits

Device model, defaults in brackets (N = m*n candidates, M = m*t history slots, d = fields * field_dim):
1. Per-source linear projection to d [4 * 16 = 64] + learned source embedding; x_i (candidates) and h_j
   (history). The k = `fields` "fields" used by the feature-level affinity are the d-vector cut into
   k pieces of `field_dim` (the sources' own fields differ in number, so they are projected to common ones).
2. Intra-set: 1-head self-attention over the candidates (padded keys masked), s_i = [x_i, a_i] (2d).
3. Intra-list: hand-written Bi-LSTM (`lstm_hidden` [64] per direction) over the merged history, oldest to
   newest forward, padded steps skipped; l_j = [h_j, q_j] (d + 2 * lstm_hidden), zero at padded slots.
4. SLAttention: C_A = tanh(S W_IA L^T) + sum_{s,t} W_c(s,t) tanh(E_S^i W_FA E_L^j^T)(s,t) (item- and
   feature-level affinity), decay d_j = exp(-theta * r_j) with theta = softplus(g(mean of the real h_j))
   > 0 (g: d -> 32 -> 1 with LeakyReLU; the layout has no user profile, so the history stands in for p_u)
   and r_j the recency rank (0 = newest real behaviour in the merged history; the layout has no ages);
   C = C_A + C_A * D, zero at padded rows and columns. Then (equivariant default)
   Q_S = tanh(S W_s S^T + C L W_l S^T), Q_L = tanh(S W_s S^T C), or (`printed_form=True`)
   Q_S = tanh(S W_s + C L W_l), Q_L = tanh(S W_s C) with W_s, W_l having one column per slot (N);
   A_S, A_L = row softmaxes with padded columns masked; S^ = A_S S, L^ = A_L L.
5. MLP([x_i, s^_i, l^_i]) with `mlp_dims` [(500, 200, 80)] and LeakyReLU, one logit.
An empty history gives L = 0, hence C = 0 and L^ = 0 (finite scores, no NaN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cloud.models.base import RerankModel
from cloud.models.dir import SelfAttention
from cloud.models.single_source import SingleSourceInput, masked_softmax, mlp, recency_rank, source_scores
from shared_schema.specs import DatasetSpec


class MIR(RerankModel):
    """MIR on the flattened candidate set and merged history; utility loss only unless `exposure_loss`."""

    search_space = {
        "embedding_dim": ("int", 8, 32, 8),
        "field_dim": ("int", 8, 24, 8),
        "lstm_hidden": ("int", 32, 96, 32),
    }
    """Options `dir-cloud tune` searches (cloud/training/tuning.py: ("int", low, high, step)); no dropout to tune."""

    def __init__(
        self,
        spec: DatasetSpec,
        embedding_dim: int = 16,
        fields: int = 4,
        field_dim: int = 16,
        lstm_hidden: int = 64,
        mlp_dims: Sequence[int] = (500, 200, 80),
        printed_form: bool = False,
        exposure_loss: bool = False,
    ):
        super().__init__(spec, embedding_dim)
        self.uses_exposure_loss = exposure_loss
        self.device_model = MIRDeviceModel(
            self.layout.vector_dims, spec.n, fields, field_dim, lstm_hidden, mlp_dims, printed_form
        )


class MIRDeviceModel(nn.Module):
    """`forward(cand_0, cand_mask_0, hist_0, hist_mask_0, cand_1, ...) -> scores [B, m, n]`.

    The default (equivariant) form runs at any n and t; `printed_form` needs exactly the spec's n.
    """

    def __init__(
        self,
        vector_dims: Sequence[int],
        n: int,
        fields: int = 4,
        field_dim: int = 16,
        lstm_hidden: int = 64,
        mlp_dims: Sequence[int] = (500, 200, 80),
        printed_form: bool = False,
    ):
        super().__init__()
        if fields < 1 or field_dim < 1 or lstm_hidden < 1:
            raise ValueError(
                f"fields, field_dim and lstm_hidden must be positive, got {fields}, {field_dim}, {lstm_hidden}"
            )
        d = fields * field_dim
        d_set, d_list = 2 * d, d + 2 * lstm_hidden
        self.m, self.fields, self.field_dim, self.printed_form = len(vector_dims), fields, field_dim, printed_form
        self.slots = self.m * n
        self.inputs = SingleSourceInput(vector_dims, d)
        self.set_attention = SelfAttention(d, d, 1)
        self.lstm = BiLSTM(d, lstm_hidden)
        self.w_item = _weight(d_set, d_list)  # W_IA
        self.w_field = _weight(field_dim, field_dim)  # W_FA
        self.w_conv = _weight(fields, fields)  # W_c
        self.decay = nn.Sequential(nn.Linear(d, 32), nn.LeakyReLU(), nn.Linear(32, 1))
        width = self.slots if printed_form else d_set
        self.w_set, self.w_list = _weight(d_set, width), _weight(d_list, width)  # W_s, W_l
        self.mlp = mlp([d + d_set + d_list, *mlp_dims], nn.LeakyReLU)
        self.out = nn.Linear(mlp_dims[-1], 1)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x, cand_mask, h, hist_mask = self.inputs(*inputs)
        if self.printed_form and x.shape[1] != self.slots:
            raise ValueError(f"printed-form MIR has {self.slots} slot columns in W_s; got {x.shape[1]} candidates")
        set_rows = torch.cat([x, self.set_attention(x, cand_mask)], dim=-1)  # S [B, N, 2d]
        list_rows = torch.cat([h, self.lstm(h, hist_mask)], dim=-1) * hist_mask.unsqueeze(-1)  # L [B, M, d + 2 d_h]
        item_level = torch.tanh(torch.matmul(torch.matmul(set_rows, self.w_item), list_rows.transpose(1, 2)))
        affinity = (item_level + self._field_affinity(x, h)) * cand_mask.unsqueeze(-1) * hist_mask.unsqueeze(1)  # C_A
        flat_mask = hist_mask.unsqueeze(1)  # [B, 1, M]; mean of the real h_j as bmm (an empty history gives 0)
        pooled = torch.bmm(flat_mask, h) / torch.bmm(flat_mask, flat_mask.transpose(1, 2)).clamp(min=1.0)
        theta = F.softplus(self.decay(pooled))  # [B, 1, 1], > 0
        c = affinity + affinity * torch.exp(-theta * recency_rank(flat_mask))  # C [B, N, M]
        set_w, list_w = torch.matmul(set_rows, self.w_set), torch.matmul(list_rows, self.w_list)
        if not self.printed_form:  # S W_s S^T, L W_l S^T
            set_w, list_w = (torch.matmul(w, set_rows.transpose(1, 2)) for w in (set_w, list_w))
        q_set = torch.tanh(set_w + torch.matmul(c, list_w))  # [B, N, N]
        q_list = torch.tanh(torch.matmul(set_w, c))  # [B, N, M]; padded candidates' rows of C are 0
        s_hat = torch.matmul(masked_softmax(q_set, cand_mask.unsqueeze(1)), set_rows)
        l_hat = torch.matmul(masked_softmax(q_list, hist_mask.unsqueeze(1)), list_rows)
        logits = self.out(self.mlp(torch.cat([x, s_hat, l_hat], dim=-1)))
        return source_scores(logits, cand_mask, self.m)

    def _field_affinity(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """C_FA [B, N, M]: sum_{s,t} W_c(s,t) tanh(E_S^i W_FA (E_L^j)^T)(s,t), as batched matmuls (<= 4-D)."""
        batch, n, _ = x.shape
        m, k, e = h.shape[1], self.fields, self.field_dim
        left = torch.matmul(x.reshape(batch, n * k, e), self.w_field)
        pairs = torch.tanh(torch.matmul(left, h.reshape(batch, m * k, e).transpose(1, 2)))  # [B, N*k, M*k]
        weighted = pairs.reshape(batch * n, k, m, k) * self.w_conv.reshape(1, k, 1, k)
        return weighted.sum(dim=3).sum(dim=1).reshape(batch, n, m)


class BiLSTM(nn.Module):
    """Bidirectional LSTM over a masked newest-first sequence, as matmuls (gate order i, f, g, o like nn.LSTM).

        q = BiLSTM(d_in, hidden)(x [B, L, d_in], mask [B, L])   # [B, L, 2 * hidden]

    The forward direction runs oldest to newest (index L-1 to 0), the backward direction newest to oldest;
    both run in the same loop as a batch of two. A step with mask 0 leaves state and cell unchanged (so
    padding may sit anywhere); q[:, j] = [forward state, backward state] after step j.
    """

    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        bound = 1.0 / math.sqrt(hidden)
        self.hidden = hidden
        self.w_input = nn.Parameter(torch.empty(2, d_in, 4 * hidden).uniform_(-bound, bound))
        self.w_state = nn.Parameter(torch.empty(2, hidden, 4 * hidden).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(2, 1, 4 * hidden).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, steps, d_in = x.shape
        h = self.hidden
        flat = x.reshape(batch, steps * d_in)  # step k = a slice (no select_copy in the exported graph)
        state = cell = None  # the zero initial state, peeled off the first step (no zeros tensor in the graph)
        forward_out: list[torch.Tensor] = [x] * steps
        backward_out: list[torch.Tensor] = [x] * steps
        for k in range(steps):
            old, new = steps - 1 - k, k
            step = torch.cat([flat[:, old * d_in : (old + 1) * d_in], flat[:, new * d_in : (new + 1) * d_in]])
            keep = torch.cat([mask[:, old : old + 1], mask[:, new : new + 1]]).reshape(2, batch, 1)
            gates = torch.bmm(step.reshape(2, batch, d_in), self.w_input) + self.bias
            if state is not None:
                gates = gates + torch.bmm(state, self.w_state)
            i, f, o = (torch.sigmoid(gates[..., a * h : (a + 1) * h]) for a in (0, 1, 3))
            written = i * torch.tanh(gates[..., 2 * h : 3 * h])
            if cell is None or state is None:  # zero state and cell before the first step
                cell = keep * written
                state = keep * o * torch.tanh(written)
            else:
                new_cell = f * cell + written
                cell = cell + keep * (new_cell - cell)
                state = state + keep * (o * torch.tanh(new_cell) - state)
            forward_out[old], backward_out[new] = state[:1], state[1:]
        out = torch.cat([torch.cat(forward_out), torch.cat(backward_out)], dim=-1)  # [L, B, 2h]
        return out.transpose(0, 1)


def _weight(rows: int, cols: int) -> nn.Parameter:
    """A Xavier-uniform initialised matrix parameter."""
    return nn.Parameter(nn.init.xavier_uniform_(torch.empty(rows, cols)))
