"""Data-parallel training over processes started by torchrun: process group, ranks, collectives.

    with distributed.session(device="cpu") as ctx:        # torchrun's RANK, WORLD_SIZE... -> gloo / nccl
        model = ctx.wrap(model)                             # DistributedDataParallel when ctx.active
        start, stop = ctx.shard_range(len(valid))           # this rank's contiguous part of a split
        totals = ctx.all_reduce_sum(local_sums)             # the sum over ranks, on every rank
        parts = ctx.all_gather(scores)                      # one object per rank, in rank order
        state = ctx.broadcast(state if ctx.is_main else None)   # rank 0's object on every rank

Launch: `torchrun --nproc-per-node N -m cloud.cli train ...` (docs/distributed.md). Without torchrun's
variables the context is a single process: nothing is initialised and the collectives return their
input. Backend: nccl for cuda (rank i uses GPU LOCAL_RANK i), gloo for cpu. Under torchrun, SIGTERM
(sent by torchrun to the other ranks when one fails) raises SystemExit, so `finally` blocks and the
atomic writers' temp-file cleanup run.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun(environ: Mapping[str, str] = os.environ) -> bool:
    """True when torchrun (or torch.distributed.run) started this process."""
    return all(name in environ for name in TORCHRUN_VARIABLES)


def launch_rank(environ: Mapping[str, str] = os.environ) -> int:
    """This process's global rank as torchrun set it (0 outside torchrun)."""
    return int(environ.get("RANK", 0))


def is_peer_failure(exc: BaseException) -> bool:
    """Whether a collective failed because another rank went away (gloo reports it as a RuntimeError)."""
    return isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and "/gloo/" in str(exc))


@dataclass(frozen=True)
class Context:
    """Where this process stands in the job; `active` when a process group is initialised."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    active: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard_range(self, length: int) -> tuple[int, int]:
        """[start, stop) of this rank's contiguous share of `length` items (sizes differ by at most 1)."""
        base, extra = divmod(length, self.world)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model wrapped in DistributedDataParallel (gradients averaged over ranks), or itself."""
        if not self.active:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return tensor
        total = tensor.detach().clone()
        dist.all_reduce(total)
        return total

    def all_gather(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


@contextmanager
def session(device: str = "cpu", required: bool = False) -> Iterator[Context]:
    """A Context for this process; joins torchrun's process group when launched by torchrun."""
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu")
    if not launched_by_torchrun():
        if required:
            raise ValueError(
                "--distributed: this process was not started by torchrun (RANK, WORLD_SIZE, MASTER_ADDR... unset); "
                "launch it as `torchrun --nproc-per-node N -m cloud.cli train ...` (see docs/distributed.md)"
            )
        yield Context(device=target)
        return
    rank, world, local_rank = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if target.type == "cuda":
        target = torch.device("cuda", local_rank)
        torch.cuda.set_device(target)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield Context(rank, world, local_rank, target, active=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if owned:  # not after an error: a group with a dead peer may not tear down cleanly; exit frees it
        dist.destroy_process_group()


def _exit_on_sigterm(signum, frame):
    raise SystemExit(f"rank {launch_rank()}: stopped by SIGTERM (torchrun stops every rank when one fails)")
