"""The training objective of one step and the additive batch sums it is computed from, exact under data parallelism.

local = BatchSums.of(model, batch, scores, K, topk, exposure)          # this rank's share of the batch
total = BatchSums.unpacked(ctx.all_reduce_sum(local.packed()))         # the whole global batch
objective, loss = step_objective(local, total, target, beta, exposure, ctx.world)
objective.backward()                                                   # DDP's average is the exact gradient
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cloud.training.losses import exposure_counts, js_divergence, utility_sum


@dataclass
class BatchSums:
    """Additive statistics of a batch or of one rank's share of it: the shares' sums are the batch's.

    lists, summed BCE over real slots, real slots, auxiliary loss times slots, exposed items, and top-K
    exposures per source [m] (zeros when the exposure loss is off).
    """

    lists: torch.Tensor
    bce: torch.Tensor
    slots: torch.Tensor
    aux: torch.Tensor
    exposed: torch.Tensor
    exposures: torch.Tensor

    @classmethod
    def of(
        cls, model, batch: dict[str, torch.Tensor], scores: torch.Tensor, K: int, topk: str, exposure: bool
    ) -> BatchSums:
        """Sums of one (share of a) batch; lists of weight 0 count for nothing.

        `model.auxiliary_loss` is taken to be normalised like utility_loss (per real slot of its
        batch), so a share's value times its slots adds up over shares.
        """
        weight = batch["weight"]
        mask = batch["mask"] * weight.view(-1, 1, 1)
        slots = mask.sum()
        aux = model.auxiliary_loss(batch, scores)
        zero = scores.new_zeros(())
        if exposure:
            exposures, exposed = exposure_counts(scores, mask, K, method=topk)
        else:
            exposures, exposed = scores.new_zeros(scores.shape[1]), zero
        return cls(
            weight.sum(),
            utility_sum(scores, batch["label"], mask),
            slots,
            zero if aux is None else aux * slots,
            exposed,
            exposures,
        )

    def packed(self) -> torch.Tensor:
        scalars = torch.stack([self.lists, self.bce, self.slots, self.aux, self.exposed])
        return torch.cat([scalars, self.exposures]).detach()

    @classmethod
    def unpacked(cls, values: torch.Tensor) -> BatchSums:
        return cls(values[0], values[1], values[2], values[3], values[4], values[5:])


def step_objective(
    local: BatchSums,
    total: BatchSums,
    target: torch.Tensor,
    beta: float,
    exposure: bool,
    world: int,
    utility: bool = True,
) -> tuple[torch.Tensor, float]:
    """(objective of this rank, loss of the global batch).

    The loss is util + aux, or beta * util + (1 - beta) * JS(target, exposure shares) + aux, over the
    whole global batch; util is 0 with `utility=False` (models whose auxiliary loss is their objective).
    The objective's gradient is this rank's part of the loss gradient times `world`, so DDP's average over
    ranks is the exact gradient: the utility and aux sums are divided by the global slot count, and the JS
    term is evaluated at the global shares with a gradient through this rank's exposures only (the other
    ranks' exposures enter as constants).
    """
    slots = total.slots.clamp(min=1.0)
    util = local.bce / slots if utility else local.bce.new_zeros(())
    util_value = total.bce / slots if utility else util
    if exposure:
        exposures = local.exposures + (total.exposures - local.exposures.detach())
        js = js_divergence(target, exposures / total.exposed.clamp(min=1.0))
        util, util_value = beta * util + (1.0 - beta) * js, beta * util_value + (1.0 - beta) * js.detach()
    objective = world * (util + local.aux / slots)
    return objective, float(util_value + total.aux / slots)
