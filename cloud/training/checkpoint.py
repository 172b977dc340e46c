"""A run folder opened or resumed, the checkpoint saved after each epoch and loaded on resume, RNG states.

    state = open_run(config, data, run_dir, resume, shares, K, world)   # None, or the checkpoint to resume
    save_checkpoint(run_dir / runs.CHECKPOINT, model, optimizer, scheduler, epoch=..., best=..., ...)

RUN/checkpoint.pt holds the last finished epoch's full state (weights, optimiser, scheduler, selection so
far, every rank's torch RNG state) as tensors and plain values only, so it loads with weights_only=True.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import torch

from cloud.data.prepared import PreparedData
from cloud.training import runs
from cloud.training.config import TrainConfig
from cloud.training.distributed import Context

RESUME_FIELDS = ("model", "history", "seed", "model_options")
"""TrainConfig fields a resumed run must share with the saved one."""


def open_run(
    config: TrainConfig, data: PreparedData, run_dir: Path, resume: bool, shares, K: int, world: int
) -> dict | None:
    """Create or reopen the run folder (rank 0); the checkpoint state to resume from, or None."""
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    state = None
    if resume and (run_dir / runs.CHECKPOINT).exists():
        state = load_checkpoint(run_dir / runs.CHECKPOINT)
        check_resume_config(state["config"], config, run_dir)
    runs.atomic_write_json(
        run_dir / runs.CONFIG,
        {
            **dataclasses.asdict(config),
            "data": str(data.path.resolve()),
            "world_size": world,
            "spec": data.spec.model_dump(mode="json"),
            "target_shares": shares,
            "K": K,
        },
    )
    return state


def check_resume_config(saved: dict, config: TrainConfig, run_dir: Path) -> None:
    current = dataclasses.asdict(config)
    differ = sorted(k for k in RESUME_FIELDS if saved.get(k) != current.get(k))
    if differ:
        raise ValueError(
            f"cannot resume {run_dir}: {differ} differ from the saved run; use the saved values or a new --out"
        )


def load_checkpoint(path: Path) -> dict:
    """checkpoint.pt with torch's weights_only loader: tensors and plain values only, never arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path}: holds objects other than tensors and plain values, so it is not loaded "
            f"({str(exc).splitlines()[0]}); resume only checkpoints written by `dir-cloud train`, "
            "or start a new run with another --out"
        ) from None
    except (RuntimeError, EOFError) as exc:
        raise ValueError(
            f"{path}: not a readable checkpoint ({str(exc).splitlines()[0]}); start a new run with another --out"
        ) from None


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    epoch: int,
    best: dict,
    history_rows: list[dict],
    config: TrainConfig,
    rng,
) -> None:
    """The full state after `epoch` (0-based), written atomically (rank 0)."""
    runs.atomic_torch_save(
        {
            "model": cpu_state(model),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "best": best,
            "history_rows": history_rows,
            "config": dataclasses.asdict(config),
            "rng": rng,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
        },
        path,
    )


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}


def rng_states(ctx: Context):
    """The torch RNG state to checkpoint: one uint8 tensor, or one per rank in a distributed run (plain
    tensors, so the checkpoint loads with weights_only=True). A collective: every rank calls it."""
    states = ctx.all_gather(torch.get_rng_state())
    return states[0] if ctx.world == 1 else states


def restore_rng(saved, ctx: Context, seed: int) -> None:
    states = saved if isinstance(saved, list) else [saved]
    if ctx.rank < len(states):
        torch.set_rng_state(states[ctx.rank])
    else:  # resumed with more ranks than the checkpoint had
        torch.manual_seed(seed + ctx.rank)
