"""CRUM: "Context-aware Reranking with Utility Maximization for Recommendation" (Xi et al., arXiv
2021), run single-source: all m*n candidates as one list (cloud/models/single_source.py).
Where the paper's equations leave a detail open, the choice is ours: marked [ours], listed in docs/baselines.md.

    model = CRUM(spec)                                   # build_model("crum", spec)
    model.begin_epoch(epoch, epochs)                     # the trainer's call: picks the training stage
    scores = model(batch)                                # [B, m, n] reranker logits (the exported part)
    loss = model.auxiliary_loss(batch, scores)           # stage 1: evaluator BCE; stage 2: swap pairs
    u = model.evaluator_probs(batch)                     # [B, N] evaluator click probabilities (cloud)

Initial order [ours]: the layout has no order across sources, so the initial permutation pi_0 is the
flat slot order s*n + j (source by source, each source's slots in the order given); the reranker sees the
within-source slot j as its position attribute (learned embedding [n, width]) plus the source embedding.
CRUM uses no user history; neither does this model.

Device model (exported), defaults in brackets: ListEncoder = per-source projection to `width` [32] +
source embedding + position embedding -> `gat_layers` [2] GAT layers over the fully connected graph of
real candidates (`heads` [2], e_ij = LeakyReLU(a1 . W x_i + a2 . W x_j), softmax over real j, ELU, heads
concatenated) -> scorer MLP([x, h]) [(64, 32)] -> one logit per candidate (the paper's MLP
[1024, 512, 128, 64] is too big for a phone).

Evaluator (cloud only, its own ListEncoder of the same shape): w_i = [x_i, q(position in pi), h_i] in pi
order, a Bi-LSTM written by hand (`lstm_hidden` [16] per direction; padded steps keep the state),
MLP([x_i, q_i]) [(64, 32)] -> click logit.
Training in two stages, as in the paper, all through `auxiliary_loss` (the trainer adds no BCE):
- stage 1, the first `evaluator_epochs` [1, ours] epochs: evaluator BCE on the logged clicks in the
  initial order; the evaluator and the item embeddings (cloud) learn, the reranker does not;
- stage 2, the remaining epochs: the evaluator and the item embeddings are frozen; `pairs` [10] random
  pairs (i above j in pi_0, both real) per list; u_pi = sum_i P(c_i | pi) / P(c_i | pi_0) * c_i (b_i = 1),
  dU = u_{pi_ij} - u_{pi_0}; [ours] orientation: if dU > 0 the target is s_j > s_i, else
  s_i > s_j, loss |dU| * log(1 + exp(-(s_winner - s_loser))) trains the reranker.
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
    """CRUM's reranker (exported) with its cloud-only evaluator, trained in two stages (module docstring)."""

    search_space = {"embedding_dim": ("int", 8, 32, 8), "width": ("int", 16, 48, 16)}
    """Options `dir-cloud tune` searches (cloud/training/tuning.py: ("int", low, high, step)); no dropout to tune."""

    uses_utility_loss = False
    reads_history = False

    def __init__(
        self,
        spec: DatasetSpec,
        embedding_dim: int = 16,
        width: int = 32,
        heads: int = 2,
        gat_layers: int = 2,
        mlp_dims: Sequence[int] = (64, 32),
        lstm_hidden: int = 16,
        pairs: int = 10,
        evaluator_epochs: int = 1,
        exposure_loss: bool = False,
    ):
        super().__init__(spec, embedding_dim)
        if pairs < 1 or evaluator_epochs < 1:
            raise ValueError(
                f"pairs and evaluator_epochs must be >= 1, got pairs={pairs}, evaluator_epochs={evaluator_epochs}"
            )
        self.uses_exposure_loss = exposure_loss
        self.pairs, self.evaluator_epochs = pairs, evaluator_epochs
        dims = self.layout.vector_dims
        self.device_model = CRUMDeviceModel(dims, spec.n, width, heads, gat_layers, mlp_dims)
        self.evaluator = Evaluator(
            ListEncoder(dims, spec.n, width, heads, gat_layers), spec.m * spec.n, lstm_hidden, mlp_dims
        )
        self.stage = "evaluator"
        self._last: tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None = None

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """Stage 1 (epochs < evaluator_epochs): the evaluator and the item embeddings learn the clicks; stage 2:
        both frozen, the reranker learns from the swap pairs."""
        if epochs <= self.evaluator_epochs:
            raise ValueError(
                f"CRUM trains its evaluator for evaluator_epochs={self.evaluator_epochs} epochs before "
                f"the reranker: give more epochs than that (got {epochs}) or lower evaluator_epochs"
            )
        self.stage = "evaluator" if epoch < self.evaluator_epochs else "reranker"
        first = self.stage == "evaluator"
        self.evaluator.requires_grad_(first)
        self.item_encoder.requires_grad_(first)
        self.device_model.requires_grad_(not first)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = self.device_inputs(batch)
        scores = self.device_model(*inputs)
        self._last = (scores, inputs) if torch.is_grad_enabled() else None
        return scores

    @torch.no_grad()
    def evaluator_probs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, N] evaluator click probabilities of the flat candidates in the initial order."""
        return torch.sigmoid(self.evaluator(*self.evaluator.encoder(*self.device_inputs(batch))))

    def auxiliary_loss(self, batch: dict[str, torch.Tensor], scores: torch.Tensor) -> torch.Tensor:
        """Stage "evaluator": the evaluator's click BCE; stage "reranker": the |dU|-weighted swap-pair loss
        on `scores`. Normalised like utility_loss (per real candidate)."""
        inputs = self._last[1] if self._last is not None and self._last[0] is scores else self.device_inputs(batch)
        self._last = None
        x, h, mask = self.evaluator.encoder(*inputs)
        label = (batch["label"] * batch["mask"]).reshape(mask.shape)
        if self.stage == "evaluator":
            logit = self.evaluator(x, h, mask)
            per_list = (F.binary_cross_entropy_with_logits(logit, label, reduction="none") * mask).sum(-1)
        else:
            first, second, delta = self.swap_gains(x.detach(), h.detach(), mask, label)
            flat = scores.reshape(mask.shape)
            s_i, s_j = torch.gather(flat, 1, first), torch.gather(flat, 1, second)
            margin = torch.where(delta > 0, s_j - s_i, s_i - s_j)
            per_list = (delta.abs() * F.softplus(-margin)).sum(-1)
        weight = batch.get("weight", torch.ones_like(per_list))
        slots = (batch["mask"] * weight.view(-1, 1, 1)).sum().clamp(min=1.0)
        return (per_list * weight).sum() / slots

    @torch.no_grad()
    def swap_gains(self, x, h, mask, label) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random pairs (first above second in pi_0, both real; [B, P] each) and their dU [B, P] (0 for
        lists with fewer than two real candidates); x, h: the evaluator's encoding of the list."""
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


class ListEncoder(nn.Module):
    """Layout tensors -> node features x [B, N, w] (projection + source + slot-position embeddings), GAT
    outputs h [B, N, w] and the flat mask [B, N]; the reranker and the evaluator each have one."""

    def __init__(self, vector_dims, n: int, width: int = 32, heads: int = 2, gat_layers: int = 2):
        super().__init__()
        if heads < 1 or width % heads or gat_layers < 1:
            raise ValueError(f"width ({width}) must be a positive multiple of heads ({heads}); gat_layers >= 1")
        self.m = len(vector_dims)
        self.inputs = SingleSourceInput(vector_dims, width)
        self.position = nn.Parameter(torch.randn(n, width) * 0.1)
        self.gat = nn.ModuleList(GraphAttention(width, heads) for _ in range(gat_layers))

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cand, cand_mask, _, _ = self.inputs(*inputs)
        batch, total, width = cand.shape
        x = (cand.reshape(batch, self.m, -1, width) + self.position).reshape(batch, total, width)
        h = x
        for layer in self.gat:
            h = layer(h, cand_mask)
        return x, h, cand_mask


class CRUMDeviceModel(nn.Module):
    """`forward(cand_0, cand_mask_0, hist_0, hist_mask_0, cand_1, ...) -> scores [B, m, n]`: ListEncoder,
    then MLP([x, h]) -> one logit per candidate."""

    def __init__(
        self,
        vector_dims,
        n: int,
        width: int = 32,
        heads: int = 2,
        gat_layers: int = 2,
        mlp_dims: Sequence[int] = (64, 32),
    ):
        super().__init__()
        self.encoder = ListEncoder(vector_dims, n, width, heads, gat_layers)
        self.scorer = mlp([2 * width, *mlp_dims])
        self.out = nn.Linear(mlp_dims[-1], 1)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x, h, mask = self.encoder(*inputs)
        logits = self.out(self.scorer(torch.cat([x, h], dim=-1))).squeeze(-1)
        return source_scores(logits, mask, self.encoder.m)


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
    """Click logits [B, N] of a list given in order, from its own ListEncoder's x, h:
    [x, position, h] -> hand-written Bi-LSTM -> MLP([x, q]).

        logits = evaluator(*evaluator.encoder(*layout_inputs))
    """

    def __init__(self, encoder: ListEncoder, positions: int, hidden: int, mlp_dims: Sequence[int]):
        super().__init__()
        width = encoder.position.shape[1]
        self.encoder = encoder
        self.position = nn.Parameter(torch.randn(positions, width) * 0.1)
        self.forward_lstm, self.backward_lstm = LSTM(3 * width, hidden), LSTM(3 * width, hidden)
        self.mlp = mlp([width + 2 * hidden, *mlp_dims])
        self.out = nn.Linear(mlp_dims[-1], 1)

    def forward(self, x: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        steps = torch.cat([x, self.position[: x.shape[1]].expand_as(x), h], dim=-1)
        ahead = self.forward_lstm(steps, mask)
        behind = self.backward_lstm(steps, mask, reverse=True)
        return self.out(self.mlp(torch.cat([x, ahead, behind], dim=-1))).squeeze(-1)


class LSTM(nn.Module):
    """One-direction LSTM over [B, L, d] (gates input, forget, cell, output); a step with mask 0 keeps
    the state. Returns the hidden state after every step [B, L, hidden]; `reverse=True` runs from the
    last step to the first (the state after step k is still at index k).

    The gates are one linear layer over [x_k, state]; its input part is applied to all steps in one
    matmul before the loop, so each step multiplies only the state."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Linear(d + hidden, 4 * hidden)
        bound = 1.0 / math.sqrt(hidden)
        nn.init.uniform_(self.gates.weight, -bound, bound)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        batch, steps, d = x.shape
        h = self.hidden
        from_input = F.linear(x.transpose(0, 1), self.gates.weight[:, :d], self.gates.bias)  # [L, B, 4h]
        from_state = self.gates.weight[:, d:].t()  # [h, 4h]
        state = cell = x.new_zeros(batch, h)
        out: list[torch.Tensor] = [state] * steps
        for k in range(steps - 1, -1, -1) if reverse else range(steps):
            gates = torch.addmm(from_input[k], state, from_state)
            gate = torch.sigmoid(gates)
            new_cell = gate[:, h : 2 * h] * cell + gate[:, :h] * torch.tanh(gates[:, 2 * h : 3 * h])
            new_state = gate[:, 3 * h :] * torch.tanh(new_cell)
            keep = mask[:, k : k + 1]
            cell = cell + keep * (new_cell - cell)
            state = state + keep * (new_state - state)
            out[k] = state
        return torch.stack(out, dim=1)
