"""CRUM: "Context-aware Reranking with Utility Maximization for Recommendation" (Xi et al.; seeds/003,
MODELS.md section 4), run single-source: all m*n candidates as one list (cloud/models/single_source.py).
The seed lost its equations; every choice below marked [ours] is documented in docs/baselines.md.

    model = CRUM(spec)                                   # build_model("crum", spec)
    scores = model(batch)                                # [B, m, n] reranker logits (the exported part)
    loss = utility_loss(scores, ...) + model.auxiliary_loss(batch, scores)   # evaluator BCE + swap pairs
    u = model.evaluator_probs(batch)                     # [B, N] evaluator click probabilities (cloud)

Initial order [ours]: the layout has no order across sources, so the initial permutation pi_0 is the
flat slot order s*n + j (source by source, each source's slots in the order given); the reranker sees the
within-source slot j as its position attribute (learned embedding [n, width]) plus the source embedding.
CRUM uses no user history; neither does this model.

Device model (exported), defaults in brackets: per-source projection to `width` [32] + source embedding
+ position embedding -> `gat_layers` [2] GAT layers over the fully connected graph of real candidates
(`heads` [2], e_ij = LeakyReLU(a1 . W x_i + a2 . W x_j), softmax over real j, ELU, heads concatenated)
-> scorer MLP([x, h]) [(64, 32)] -> one logit per candidate (the paper's MLP [1024, 512, 128, 64] is too
big for a phone).

Evaluator (cloud only): w_i = [x_i, q(position in pi), h_i] in pi order, a Bi-LSTM written by hand
(`lstm_hidden` [16] per direction; padded steps keep the state), MLP([x_i, q_i]) [(64, 32)] -> click logit.
Training, all through `auxiliary_loss`, one loop [ours: the paper trains the evaluator first, then the
reranker with the evaluator frozen; here both train together and the reranker's pair weights are
computed without gradient, so the evaluator is frozen for that term]:
- evaluator BCE on the logged clicks in the initial order (it trains the GAT too);
- `pairs` [10] random pairs (i above j in pi_0, both real) per list; u_pi = sum_i P(c_i | pi) / P(c_i | pi_0)
  * c_i (b_i = 1), dU = u_{pi_ij} - u_{pi_0}; reading (B) of MODELS.md 4.4: if dU > 0 the target is
  s_j > s_i, else s_i > s_j, loss |dU| * log(1 + exp(-(s_winner - s_loser))), weight `pair_weight` [1].
The training loop also adds its utility loss (BCE on the reranker scores), which the paper does not have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cloud.models.base import RerankModel
from cloud.models.single_source import SingleSourceInput, masked_softmax, mlp, source_scores
from shared_schema.specs import DatasetSpec


class CRUM(RerankModel):
    """CRUM's reranker (exported) with its cloud-only evaluator; see the module docstring."""

    def __init__(self, spec: DatasetSpec, embedding_dim: int = 16, width: int = 32, heads: int = 2,
                 gat_layers: int = 2, mlp_dims: Sequence[int] = (64, 32), lstm_hidden: int = 16, pairs: int = 10,
                 pair_weight: float = 1.0, exposure_loss: bool = False):
        super().__init__(spec, embedding_dim)
        if pairs < 1 or pair_weight < 0:
            raise ValueError(f"pairs must be >= 1 and pair_weight >= 0, got pairs={pairs}, pair_weight={pair_weight}")
        self.uses_exposure_loss = exposure_loss
        self.pairs, self.pair_weight = pairs, pair_weight
        self.device_model = CRUMDeviceModel(self.layout.vector_dims, spec.n, width, heads, gat_layers, mlp_dims)
        self.evaluator = Evaluator(spec.m * spec.n, width, lstm_hidden, mlp_dims)
        self._last: tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None = None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = self.device_model.encode(*self.device_inputs(batch))
        self._last = (parts[0], parts) if torch.is_grad_enabled() else None
        return parts[0]

    @torch.no_grad()
    def evaluator_probs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, N] evaluator click probabilities of the flat candidates in the initial order."""
        _, x, h, mask = self.device_model.encode(*self.device_inputs(batch))
        return torch.sigmoid(self.evaluator(x, h, mask))

    def auxiliary_loss(self, batch: dict[str, torch.Tensor], scores: torch.Tensor) -> torch.Tensor:
        if self._last is not None and self._last[0] is scores:
            _, x, h, mask = self._last[1]
        else:
            _, x, h, mask = self.device_model.encode(*self.device_inputs(batch))
        self._last = None
        label = (batch["label"] * batch["mask"]).reshape(mask.shape)
        logit = self.evaluator(x, h, mask)
        per_list = (F.binary_cross_entropy_with_logits(logit, label, reduction="none") * mask).sum(-1)
        first, second, delta = self.swap_gains(x.detach(), h.detach(), mask, label)
        flat = scores.reshape(mask.shape)
        s_i, s_j = torch.gather(flat, 1, first), torch.gather(flat, 1, second)
        margin = torch.where(delta > 0, s_j - s_i, s_i - s_j)
        per_list = per_list + self.pair_weight * (delta.abs() * F.softplus(-margin)).sum(-1)
        weight = batch.get("weight", torch.ones_like(per_list))
        slots = (batch["mask"] * weight.view(-1, 1, 1)).sum().clamp(min=1.0)
        return (per_list * weight).sum() / slots

    @torch.no_grad()
    def swap_gains(self, x, h, mask, label) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random pairs (first above second in pi_0, both real; [B, P] each) and their dU [B, P] (0 for
        lists with fewer than two real candidates)."""
        batch, n = mask.shape
        p = self.pairs
        noise = torch.rand(batch, p, n, device=mask.device) + 2.0 * (1.0 - mask).unsqueeze(1)
        two = torch.argsort(noise, dim=-1)[..., :2]  # two distinct slots per pair, real ones first
        first, second = two.min(-1).values, two.max(-1).values
        valid = torch.gather(mask, 1, first) * torch.gather(mask, 1, second)
        perm = torch.arange(n, device=mask.device).repeat(batch, p, 1)  # [B, P, N]: item at each position
        perm.scatter_(2, first.unsqueeze(-1), second.unsqueeze(-1))
        perm.scatter_(2, second.unsqueeze(-1), first.unsqueeze(-1))
        logged = torch.sigmoid(self.evaluator(x, h, mask))  # [B, N]
        swapped_mask = torch.gather(mask.unsqueeze(1).expand(-1, p, -1), 2, perm)
        swapped = self.evaluator(_reorder(x, perm), _reorder(h, perm), swapped_mask.reshape(batch * p, n))
        swapped = torch.sigmoid(swapped).reshape(batch, p, n)
        by_item = torch.empty_like(swapped).scatter_(2, perm, swapped)  # P(c_i | pi_ij) indexed by item
        ratio = by_item / logged.clamp(min=1e-6).unsqueeze(1)
        clicks = label.unsqueeze(1)
        delta = ((ratio * clicks).sum(-1) - clicks.sum(-1)) * valid  # u_{pi_ij} - u_{pi_0} (ratio 1 at pi_0)
        return first, second, delta


def _reorder(z: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """z [B, N, d] listed in each of the P orders perm [B, P, N] -> [B * P, N, d]."""
    batch, p, n = perm.shape
    index = perm.unsqueeze(-1).expand(-1, -1, -1, z.shape[-1])
    return torch.gather(z.unsqueeze(1).expand(-1, p, -1, -1), 2, index).reshape(batch * p, n, -1)


class CRUMDeviceModel(nn.Module):
    """`forward(cand_0, cand_mask_0, hist_0, hist_mask_0, cand_1, ...) -> scores [B, m, n]`; `encode(...)`
    also returns the node features x [B, N, w], GAT outputs h [B, N, w] and the flat mask [B, N]."""

    def __init__(self, vector_dims, n: int, width: int = 32, heads: int = 2, gat_layers: int = 2,
                 mlp_dims: Sequence[int] = (64, 32)):
        super().__init__()
        if heads < 1 or width % heads or gat_layers < 1:
            raise ValueError(f"width ({width}) must be a positive multiple of heads ({heads}); gat_layers >= 1")
        self.m = len(vector_dims)
        self.inputs = SingleSourceInput(vector_dims, width)
        self.position = nn.Parameter(torch.randn(n, width) * 0.1)
        self.gat = nn.ModuleList(GraphAttention(width, heads) for _ in range(gat_layers))
        self.scorer = mlp([2 * width, *mlp_dims])
        self.out = nn.Linear(mlp_dims[-1], 1)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.encode(*inputs)[0]

    def encode(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cand, cand_mask, _, _ = self.inputs(*inputs)
        batch, total, width = cand.shape
        x = (cand.reshape(batch, self.m, -1, width) + self.position).reshape(batch, total, width)
        h = x
        for layer in self.gat:
            h = layer(h, cand_mask)
        logits = self.out(self.scorer(torch.cat([x, h], dim=-1))).squeeze(-1)
        return source_scores(logits, cand_mask, self.m), x, h, cand_mask


class GraphAttention(nn.Module):
    """GAT layer over the fully connected graph of real nodes: heads of width w/heads, concatenated, ELU.

        h = GraphAttention(w, heads)(x [B, N, w], mask [B, N])   # [B, N, w]
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.project = nn.Linear(width, width, bias=False)
        self.attend = nn.Linear(width, 2 * heads, bias=False)  # per head: a1 . Wx_i and a2 . Wx_j

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, n, width = x.shape
        heads, dh = self.heads, width // self.heads
        z = self.project(x)
        a = self.attend(z).transpose(1, 2)  # [B, 2*heads, N]
        e = F.leaky_relu(a[:, :heads].unsqueeze(-1) + a[:, heads:].unsqueeze(-2), 0.2)  # [B, heads, N, N]
        alpha = masked_softmax(e.reshape(batch, heads * n, n), mask.unsqueeze(1)).reshape(batch * heads, n, n)
        values = z.reshape(batch, n, heads, dh).transpose(1, 2).reshape(batch * heads, n, dh)
        out = torch.bmm(alpha, values).reshape(batch, heads, n, dh).transpose(1, 2).reshape(batch, n, width)
        return F.elu(out)


class Evaluator(nn.Module):
    """Click logits [B, N] of a list given in order: [x, position, h] -> hand-written Bi-LSTM -> MLP([x, q])."""

    def __init__(self, positions: int, width: int, hidden: int, mlp_dims: Sequence[int]):
        super().__init__()
        self.position = nn.Parameter(torch.randn(positions, width) * 0.1)
        self.forward_lstm, self.backward_lstm = LSTM(3 * width, hidden), LSTM(3 * width, hidden)
        self.mlp = mlp([width + 2 * hidden, *mlp_dims])
        self.out = nn.Linear(mlp_dims[-1], 1)

    def forward(self, x: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        steps = torch.cat([x, self.position[: x.shape[1]].expand_as(x), h], dim=-1)
        ahead = self.forward_lstm(steps, mask)
        behind = self.backward_lstm(steps.flip(1), mask.flip(1)).flip(1)
        return self.out(self.mlp(torch.cat([x, ahead, behind], dim=-1))).squeeze(-1)


class LSTM(nn.Module):
    """One-direction LSTM over [B, L, d] (gates input, forget, cell, output); a step with mask 0 keeps
    the state. Returns the hidden state after every step [B, L, hidden]."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Linear(d + hidden, 4 * hidden)
        bound = 1.0 / math.sqrt(hidden)
        nn.init.uniform_(self.gates.weight, -bound, bound)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = x.shape
        state = cell = x.new_zeros(batch, self.hidden)
        out = []
        for k in range(steps):
            i, f, g, o = self.gates(torch.cat([x[:, k], state], dim=-1)).split(self.hidden, dim=-1)
            new_cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
            new_state = torch.sigmoid(o) * torch.tanh(new_cell)
            keep = mask[:, k: k + 1]
            cell = cell + keep * (new_cell - cell)
            state = state + keep * (new_state - state)
            out.append(state)
        return torch.stack(out, dim=1)
