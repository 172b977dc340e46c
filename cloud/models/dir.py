"""DIR: "On-device Integrated Re-ranking with Heterogeneous Behavior Modeling" (Xi et al., KDD'23),
written export-friendly for ExecuTorch and TFLite.

    model = DIR(spec)                                  # or build_model("dir-isi", spec), see __init__.py
    scores = model(batch)                              # [B, m, n] logits
    scores = model.device_model(*model.device_inputs(batch))   # the same, bit for bit

Device model (dense layout tensors in, logits out), defaults in brackets:
1. Heterogeneous encoding: one MLP per source, d_s -> hidden [32] -> hidden, for candidates and history.
2. Intra-source interaction: one GRU per source over its history, oldest to newest (index 0 = newest,
   padding at the tail); p_s = state after the newest behaviour; padded steps keep the state, an empty
   history gives p_s = 0. The m GRUs run as one grouped computation over stacked weights [m, ...].
   `gru=False` (dir-isi): masked average pooling instead.
3. Linear (cross-stitch) sharing V = A P, A [m, m] learnable, identity at init (`linear_sharing`, dir-lrs).
4. High-order sharing: multi-head self-attention [heads = 2] over the m rows [p_s, v_s] -> r_s of width
   hidden (`high_order_sharing`, dir-hrs; without it r_s = v_s).
5. Listwise context: multi-head self-attention over all m*n candidate slots, padded keys masked, with a
   residual x̂ = x + Attn(x) (`listwise_context`, dir-lcm; without it x̂ = x).
6. Source-level alignment o = [x̂, r_s, x̂ * r_s] (slot (s, j) belongs to source s by the fixed layout, so
   r_s is broadcast over the n slots of source s), shared MLP [mlp_dims = (64, 32)], the last hidden layer
   personalized by the preference-adaptive generator ẑ = g(R) ⊙ relu(W z + b), g(R) = sigmoid(MLP([r_1..r_m]))
   (`preference_generator`, dir-pg), then a linear layer to one logit per slot.
Padded candidate slots get the constant logit PAD_LOGIT (0: every consumer skips them by mask).
`exposure_loss=False` (dir-js) only sets `uses_exposure_loss`.

Extension, not in the paper: `history_attention=True` (dir-ca, "DIR with candidate-aware history
attention"). Step 2 gives one p_s per source, the same for every candidate of source s; dir-ca adds, per
candidate slot (s, j), an attention over source s's own encoded history (step 1): query W x_(s,j) + b
from the candidate's encoding, keys and values the history encodings, scaled dot product, padded steps
masked and their weights zeroed, so an empty history gives a_(s,j) = 0. The alignment input becomes
o = [x̂, r_s, x̂ * r_s, a_(s,j)]. Attending over the history per candidate is the idea of DIN ("Deep
Interest Network for Click-Through Rate Prediction", Zhou et al., KDD'18).

Export rules kept: no nn.GRU / chunk / split / one_hot / boolean indexing / -inf, masks are float
multiplications, no data-dependent control flow, and the lowering rules of docs/export.md (every op of
every variant is delegated to XNNPACK).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cloud.models.base import RerankModel
from shared_schema.specs import DatasetSpec

MASKED = 30.0
"""Subtracted from the attention logit of a padded key (whose logit is first zeroed): its weight is
exp(-30) ~ 1e-13 of a real key's at logit 0, and finite, so no -inf arithmetic produces NaN. Kept this
small so int8 activation ranges calibrated on real padded lists stay close to the real logits' range."""

PAD_LOGIT = 0.0
"""Score of every padded candidate slot. Padded slots carry no meaning: losses, metrics, the exposure
top-K and the device merge all skip them by mask. 0 lies inside the real logits' range, so it does not
stretch an int8 output scale (a large negative constant collapsed the int8 scores)."""


class DIR(RerankModel):
    """DIR with its ablations as constructor flags (see the module docstring for each flag)."""

    search_space = {"embedding_dim": ("int", 8, 32, 8), "hidden": ("int", 16, 64, 16)}
    """Options `dir-cloud tune` searches (cloud/training/tuning.py: ("int", low, high, step)); no dropout to tune."""

    def __init__(
        self,
        spec: DatasetSpec,
        embedding_dim: int = 16,
        hidden: int = 32,
        heads: int = 2,
        mlp_dims: Sequence[int] = (64, 32),
        gru: bool = True,
        linear_sharing: bool = True,
        high_order_sharing: bool = True,
        listwise_context: bool = True,
        preference_generator: bool = True,
        exposure_loss: bool = True,
        history_attention: bool = False,
    ):
        super().__init__(spec, embedding_dim)
        self.uses_exposure_loss = exposure_loss
        self.device_model = DIRDeviceModel(
            self.layout.vector_dims,
            hidden=hidden,
            heads=heads,
            mlp_dims=mlp_dims,
            gru=gru,
            linear_sharing=linear_sharing,
            high_order_sharing=high_order_sharing,
            listwise_context=listwise_context,
            preference_generator=preference_generator,
            history_attention=history_attention,
        )


class DIRDeviceModel(nn.Module):
    """`forward(cand_0, cand_mask_0, hist_0, hist_mask_0, cand_1, ...) -> scores [B, m, n]`.

    Weights do not depend on n or t, so the same model also runs on longer padded inputs.
    """

    def __init__(
        self,
        vector_dims: Sequence[int],
        hidden: int = 32,
        heads: int = 2,
        mlp_dims: Sequence[int] = (64, 32),
        gru: bool = True,
        linear_sharing: bool = True,
        high_order_sharing: bool = True,
        listwise_context: bool = True,
        preference_generator: bool = True,
        history_attention: bool = False,
    ):
        super().__init__()
        if hidden < 1 or heads < 1 or hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be a positive multiple of heads ({heads})")
        if not mlp_dims or min(mlp_dims) < 1:
            raise ValueError(f"mlp_dims must be one or more positive widths, got {tuple(mlp_dims)}")
        m = len(vector_dims)
        self.m = m
        self.encoders = nn.ModuleList(
            nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden)) for d in vector_dims
        )
        self.gru = GroupedGRU(m, hidden) if gru else None
        self.share = nn.Parameter(torch.eye(m)) if linear_sharing else None
        self.source_attention = (
            SelfAttention(2 * hidden if linear_sharing else hidden, hidden, heads) if high_order_sharing else None
        )
        self.candidate_attention = SelfAttention(hidden, hidden, heads) if listwise_context else None
        widths = [(4 if history_attention else 3) * hidden, *mlp_dims]
        self.mlp = nn.Sequential(
            *(layer for a, b in zip(widths[:-2], widths[1:-1]) for layer in (nn.Linear(a, b), nn.ReLU()))
        )
        self.personal = nn.Linear(widths[-2], widths[-1])
        self.generator = (
            nn.Sequential(nn.Linear(m * hidden, hidden), nn.ReLU(), nn.Linear(hidden, widths[-1]), nn.Sigmoid())
            if preference_generator
            else None
        )
        self.out = nn.Linear(widths[-1], 1)
        # built last, so that the parts shared with plain DIR draw the same initial weights
        self.history_attention = HistoryAttention(hidden) if history_attention else None

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        m = self.m
        if len(inputs) != 4 * m:
            raise ValueError(
                f"expected {4 * m} inputs (cand, cand_mask, hist, hist_mask per source), got {len(inputs)}"
            )
        encoded = [self.encoders[s](torch.cat([inputs[4 * s], inputs[4 * s + 2]], dim=1)) for s in range(m)]
        n = inputs[0].shape[1]
        cand = torch.stack([e[:, :n] for e in encoded], dim=1)  # [B, m, n, h]
        cand_mask = torch.stack(inputs[1::4], dim=1)  # [B, m, n]
        hist = torch.stack([e[:, n:] for e in encoded], dim=0)  # [m, B, t, h]
        hist_mask = torch.stack(inputs[3::4], dim=0)  # [m, B, t]
        prefs = self._preferences(hist, hist_mask)  # [B, m, h]
        batch, _, _, hidden = cand.shape
        x = cand.reshape(batch, m * n, hidden)
        if self.candidate_attention is not None:
            x = x + self.candidate_attention(x, cand_mask.reshape(batch, m * n))
        x = x.reshape(batch, m, n, hidden)
        r = x * 0.0 + prefs.reshape(batch, m, 1, hidden)  # broadcast by arithmetic: no expand_copy
        aligned = [x, r, x * r]
        if self.history_attention is not None:
            by_source = torch.stack([e[:, :n] for e in encoded], dim=0)  # [m, B, n, h]
            attended = self.history_attention(by_source, hist, hist_mask)  # [m, B, n, h]
            aligned.append(attended.transpose(0, 1))
        z = self.mlp(torch.cat(aligned, dim=-1))
        z = torch.relu(self.personal(z))
        if self.generator is not None:
            z = z * self.generator(prefs.reshape(batch, m * hidden)).reshape(batch, 1, 1, -1)
        scores = self.out(z).reshape(batch, m, n)
        return scores * cand_mask + (1.0 - cand_mask) * PAD_LOGIT

    def _preferences(self, hist: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
        """Source-level preferences R [B, m, h] from histories [m, B, t, h] with masks [m, B, t]."""
        if self.gru is not None:
            p = self.gru(hist, hist_mask)
        else:  # masked average pooling as 3-D bmm (sum(dim) is not delegated); an empty history gives 0
            m, batch, steps, h = hist.shape
            flat_mask = hist_mask.reshape(m * batch, 1, steps)
            total = torch.bmm(flat_mask, hist.reshape(m * batch, steps, h))
            count = torch.bmm(flat_mask, flat_mask.transpose(1, 2))  # 0/1 mask: mask . mask = #real steps
            p = (total / count.clamp(min=1.0)).reshape(m, batch, h)
        p = p.transpose(0, 1)  # [B, m, h]
        # V = A P as linear(P^T, A)^T: a parameter on the left of matmul lowers to a non-delegated mm
        v = F.linear(p.transpose(1, 2), self.share).transpose(1, 2) if self.share is not None else p
        if self.source_attention is None:
            return v
        return self.source_attention(torch.cat([p, v], dim=-1) if self.share is not None else p)


class GroupedGRU(nn.Module):
    """m independent GRUs (gate order r, z, n as in nn.GRU) run together with batched matmuls.

        p = GroupedGRU(m, h)(hist [m, B, t, h], mask [m, B, t])   # [m, B, h]

    Steps run from index t-1 to 0 (oldest to newest); a step with mask 0 leaves the state unchanged.
    """

    def __init__(self, m: int, hidden: int):
        super().__init__()
        bound = 1.0 / math.sqrt(hidden)
        self.hidden = hidden
        self.w_input = nn.Parameter(torch.empty(m, hidden, 3 * hidden).uniform_(-bound, bound))
        self.w_state = nn.Parameter(torch.empty(m, hidden, 3 * hidden).uniform_(-bound, bound))
        self.b_input = nn.Parameter(torch.empty(m, 1, 3 * hidden).uniform_(-bound, bound))
        self.b_state = nn.Parameter(torch.empty(m, 1, 3 * hidden).uniform_(-bound, bound))

    def forward(self, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m, batch, steps, h = hist.shape
        flat = hist.reshape(m, batch, steps * h)  # step k = a slice of the last axis (no select_copy)
        state = None  # the zero initial state, peeled off the first step (no zeros tensor in the graph)
        for k in range(steps - 1, -1, -1):
            # projecting per step (not all steps at once) keeps each slice's backward small
            x = torch.bmm(flat[..., k * h : (k + 1) * h], self.w_input) + self.b_input
            g = self.b_state if state is None else torch.bmm(state, self.w_state) + self.b_state
            rz = torch.sigmoid(x[..., : 2 * h] + g[..., : 2 * h])
            candidate = torch.tanh(x[..., 2 * h :] + rz[..., :h] * g[..., 2 * h :])
            z = rz[..., h:]
            keep = mask[:, :, k : k + 1]
            if state is None:  # (1 - z) * candidate + z * 0, kept where the step is real
                state = keep * (candidate - z * candidate)
            else:  # (1 - z) * candidate + z * state where real, the old state where padded
                state = state + keep * (candidate + z * (state - candidate) - state)
        if state is None:
            raise ValueError("hist: no history steps (t = 0); the history needs t >= 1")
        return state


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention (Eq. 2, no output projection), optional key mask.

    out = SelfAttention(d_in, d_out, heads)(x [B, L, d_in], key_mask [B, L] or None)   # [B, L, d_out]
    """

    def __init__(self, d_in: int, d_out: int, heads: int):
        super().__init__()
        self.d_out, self.heads = d_out, heads
        self.qkv = nn.Linear(d_in, 3 * d_out)
        self.scale = 1.0 / math.sqrt(d_out // heads)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        length, d, heads = x.shape[1], self.d_out, self.heads
        dh = d // heads
        qkv = self.qkv(x)
        # 3-D bmm over [B * heads, L, dh]: a 4-D matmul lowers with non-delegated expand_copy ops
        q, k, v = (
            qkv[..., i * d : (i + 1) * d].reshape(-1, length, heads, dh).transpose(1, 2).reshape(-1, length, dh)
            for i in range(3)
        )
        logits = torch.bmm(q, k.transpose(1, 2)) * self.scale  # [B * heads, L, L]
        if key_mask is not None:  # the mask [B, 1, L] broadcasts over the rows of all heads
            keep = key_mask.reshape(-1, 1, length)
            logits = logits.reshape(-1, heads * length, length)
            logits = (logits * keep + (keep - 1.0) * MASKED).reshape(-1, length, length)
        out = torch.bmm(torch.softmax(logits, dim=-1), v)
        return out.reshape(-1, heads, length, dh).transpose(1, 2).reshape(-1, length, d)


class HistoryAttention(nn.Module):
    """Candidate-aware attention of each source's candidates over that source's own history (dir-ca).

        a = HistoryAttention(h)(cand [m, B, n, h], hist [m, B, t, h], hist_mask [m, B, t])   # [m, B, n, h]

    a_(s,j) = sum_k w_k hist_(s,k), w = softmax_k((W cand_(s,j) + b) . hist_(s,k) / sqrt(h)) over the real
    steps; a padded step's weight is zeroed, so an empty history gives a = 0 and padding never leaks.
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.query = nn.Linear(hidden, hidden)
        self.scale = 1.0 / math.sqrt(hidden)

    def forward(self, cand: torch.Tensor, hist: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
        m, batch, n, h = cand.shape
        steps = hist.shape[2]
        # 3-D bmm over [m * B, ...]: each (source, list) attends only over its own history
        q = self.query(cand).reshape(m * batch, n, h)
        keys = hist.reshape(m * batch, steps, h)
        keep = hist_mask.reshape(m * batch, 1, steps)  # broadcasts over the n candidate rows
        logits = torch.bmm(q, keys.transpose(1, 2)) * self.scale  # [m * B, n, t]
        weights = torch.softmax(logits * keep + (keep - 1.0) * MASKED, dim=-1) * keep
        return torch.bmm(weights, keys).reshape(m, batch, n, h)
