"""Train a reranker on prepared data with validation-based checkpoint selection.

    config = TrainConfig(model="dir", history="device", seed=0)
    train(config, data_dir="out/data", run_dir="out/run")   # writes the run folder of cloud.training.runs

Adam with L2 (weight decay), early stopping on validation AUC, the best epoch's weights kept as
model.pt, the last epoch's full state as checkpoint.pt (so `resume=True` continues after a crash).
A run ends when validation AUC has not improved for `patience` epochs; `epochs` is only a safety cap
(set high enough that the benchmark's runs end by patience), and RUN/metrics.json says which of the
two ended it (`stop_reason`: "patience" or "cap", `stopped_epoch`, `best_epoch`). `lr_schedule="plateau"`
halves the learning rate when validation AUC has not improved for `lr_patience` epochs
(torch's ReduceLROnPlateau).

Started by torchrun (docs/distributed.md), the same call trains data-parallel: every rank reads its
share of each global batch (`config.batch_size` lists) from disk, DistributedDataParallel averages the
gradients, and each rank's loss is normalised by the global batch (BatchSums), so N ranks take the
steps one process would take. Validation is sharded and gathered, so every rank selects the same
epoch; only rank 0 writes the run folder.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cloud.data.batches import HISTORY_VIEWS, ListBatcher
from cloud.data.prepared import PreparedData
from cloud.evaluation.scoring import evaluate_references, evaluate_scores, not_beaten, predict
from cloud.models import build_model
from cloud.training import runs
from cloud.training.distributed import Context, is_peer_failure, session
from cloud.training.losses import exposure_counts, js_divergence, utility_sum

LR_SCHEDULES = ("constant", "plateau")


@dataclass
class TrainConfig:
    """Everything that determines a run; saved in RUN/config.json so it can be reproduced."""

    model: str = "dir"
    history: str = "device"
    seed: int = 0
    epochs: int = 100  # a cap only: runs end by `patience` on validation AUC (metrics.json: stop_reason)
    batch_size: int = 256
    lr: float = 2e-3
    l2: float = 1e-5
    beta: float = 0.5
    topk: str = "straight_through"
    patience: int = 3
    lr_schedule: str = "constant"  # or "plateau": lr x lr_factor after lr_patience epochs without improvement
    lr_factor: float = 0.5
    lr_patience: int = 1
    K: int | None = None
    eval_batch_size: int = 2048
    target_shares: list[float] | None = None
    threads: int | None = 1  # why 1 by default: BENCHMARKS.md, training throughput
    device: str = "cpu"
    model_options: dict = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> TrainConfig:
        """Read a JSON or TOML config; keys must be TrainConfig fields."""
        path = Path(path)
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            values = tomllib.loads(text)
        else:
            values = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown config keys {unknown}; known keys: {sorted(known)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def check(self) -> None:
        if self.history not in HISTORY_VIEWS:
            raise ValueError(f"history must be one of {HISTORY_VIEWS}, got {self.history!r}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], got {self.beta}")
        if self.batch_size < 1 or self.epochs < 1 or self.patience < 1:
            raise ValueError("batch_size, epochs and patience must be positive")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not 0.0 < self.lr_factor < 1.0 or self.lr_patience < 0:
            raise ValueError(
                f"lr_factor must lie in (0, 1) and lr_patience be >= 0, got {self.lr_factor}, {self.lr_patience}"
            )
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda' (or 'cuda:N'), got {self.device!r}")


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is left untouched."""


class RankFailure(RuntimeError):
    """A distributed run lost a rank; RUN/checkpoint.pt (the last finished epoch) is intact."""


def train(
    config: TrainConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool | None = None,
    distributed: bool = False,
    label: str = "",
    tensorboard: str | Path | None = None,
    on_epoch=None,
) -> dict:
    """Train, select on validation, evaluate the selected model on test; returns RUN/metrics.json.

    Data-parallel when started by torchrun; `distributed=True` makes it an error not to be. `label`
    starts every progress line (e.g. "dir device seed 2" in a grid); `tensorboard` is a folder for
    TensorBoard events (losses, validation metrics, learning rate per epoch). `on_epoch(row)` is called
    with each epoch's RUN/epochs.csv row once it is saved (tuning reports the validation metric there; an
    exception it raises ends the run, its checkpoint intact).
    """
    config.check()
    data = PreparedData(data_dir)
    with session(config.device, required=distributed) as ctx:
        with _EpochLog(label, tensorboard if ctx.is_main else None) as log:
            return _train(ctx, config, data, Path(run_dir), resume, progress, log, on_epoch)


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
        return cls(*values[:5], values[5:])


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
    The objective's gradient is this rank's part of the loss gradient times `world`, so DDP's average over ranks is the exact gradient: the utility and aux sums are divided by the global
    slot count, and the JS term is evaluated at the global shares with a gradient through this rank's
    exposures only (the other ranks' exposures enter as constants).
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


def _train(
    ctx: Context,
    config: TrainConfig,
    data: PreparedData,
    run_dir: Path,
    resume: bool,
    progress: bool | None,
    log: _EpochLog,
    on_epoch=None,
) -> dict:
    spec = data.spec
    shares = config.target_shares or spec.target_shares
    K = config.K or spec.K
    state = _on_main(ctx, _open_run, config, data, run_dir, resume, shares, K, ctx.world)

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    model = build_model(config.model, spec, **config.model_options).to(ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.l2)
    scheduler = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=config.lr_factor, patience=config.lr_patience
        )
        if config.lr_schedule == "plateau"
        else None
    )
    start_epoch, best, history_rows = 0, {"epoch": -1, "auc": -math.inf}, []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        start_epoch, best, history_rows = state["epoch"] + 1, state["best"], state["history_rows"]
        _restore_rng(state["rng"], ctx, config.seed)
    elif ctx.rank:
        torch.manual_seed(config.seed + ctx.rank)  # own Gumbel noise per rank; same initial weights (above)
    net = ctx.wrap(model)

    train_set = ListBatcher(data.item_tables(), data.split("train"), config.history, ctx.device)
    valid_set = train_set.split(data.split("valid"))
    target = torch.tensor(shares, dtype=torch.float32, device=ctx.device)
    use_exposure = model.uses_exposure_loss and config.beta < 1.0
    show = ctx.is_main and (sys.stderr.isatty() if progress is None else progress)
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(start_epoch):  # keep the shuffle order identical to an uninterrupted run
        torch.randperm(len(train_set), generator=generator)
    if ctx.is_main:
        log.references(evaluate_references(data, "valid", shares, K), K)

    # a run resumed after its patience ran out (crashed before metrics.json) trains no further epoch
    stop_reason = "patience" if start_epoch and start_epoch - best["epoch"] >= config.patience else "cap"
    for epoch in range(start_epoch, config.epochs if stop_reason == "cap" else start_epoch):
        model.begin_epoch(epoch, config.epochs)
        net.train()
        started, total, seen = time.perf_counter(), 0.0, 0
        batches = train_set.batches(
            config.batch_size, shuffle=True, generator=generator, rank=ctx.rank, world=ctx.world
        )
        steps = math.ceil(len(train_set) / config.batch_size)
        try:
            for step, batch in enumerate(_progress(batches, steps, f"epoch {epoch + 1}/{config.epochs}", show)):
                scores = net(batch)
                local = BatchSums.of(model, batch, scores, K, config.topk, use_exposure)
                sums = BatchSums.unpacked(ctx.all_reduce_sum(local.packed()))
                objective, loss = step_objective(
                    local, sums, target, config.beta, use_exposure, ctx.world, model.uses_utility_loss
                )
                if not math.isfinite(loss):
                    raise NonFiniteLoss(
                        f"loss became {loss} at epoch {epoch + 1}, step {step + 1}; lower --lr "
                        f"(now {config.lr}) or check the data; the last good checkpoint in {run_dir} is intact"
                    )
                optimizer.zero_grad(set_to_none=True)
                objective.backward()
                optimizer.step()
                lists = int(sums.lists.item())
                total += loss * lists
                seen += lists
            train_seconds = time.perf_counter() - started
            valid = _evaluate(ctx, model, valid_set, shares, K, config.eval_batch_size)
            rng = _rng_states(ctx)
        except RuntimeError as exc:
            if not is_peer_failure(exc):
                raise
            saved = (
                f"{run_dir / runs.CHECKPOINT} holds epoch {epoch}: run the same command again with --resume"
                if epoch
                else "no epoch had finished: start the run again"
            )
            raise RankFailure(
                f"rank {ctx.rank}: lost contact with another rank in epoch {epoch + 1} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0]}); {saved}"
            ) from exc
        row = {
            "epoch": epoch + 1,
            "train_loss": total / max(seen, 1),
            "lists_per_s": seen / train_seconds,
            "lr": optimizer.param_groups[0]["lr"],
            **{f"valid_{k}": v for k, v in valid.items()},
        }
        if scheduler is not None:
            scheduler.step(valid["auc"])
        history_rows.append(row)
        improved = valid["auc"] > best["auc"]
        if improved:
            best = {"epoch": epoch + 1, "auc": valid["auc"]}
        if ctx.is_main:
            log.epoch(row, K, optimizer.param_groups[0]["lr"])
            if improved:
                runs.atomic_torch_save(_cpu_state(model), run_dir / runs.MODEL)
            runs.atomic_torch_save(
                {
                    "model": _cpu_state(model),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch,
                    "best": best,
                    "history_rows": history_rows,
                    "config": dataclasses.asdict(config),
                    "rng": rng,
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                },
                run_dir / runs.CHECKPOINT,
            )
            _write_epochs(run_dir / runs.EPOCHS, history_rows)
        if on_epoch is not None:
            on_epoch(row)
        if epoch + 1 - best["epoch"] >= config.patience:
            stop_reason = "patience"
            break

    model.load_state_dict(_on_main(ctx, torch.load, run_dir / runs.MODEL, map_location="cpu", weights_only=True))
    test_set = train_set.split(data.split("test"))
    metrics = {
        "best_epoch": best["epoch"],
        "stopped_epoch": len(history_rows),
        "stop_reason": stop_reason,
        "valid": _evaluate(ctx, model, valid_set, shares, K, config.eval_batch_size),
        "test": _evaluate(ctx, model, test_set, shares, K, config.eval_batch_size),
        "embedding_version": runs.embedding_version(model),
    }
    if ctx.is_main:
        runs.atomic_write_json(run_dir / runs.METRICS, metrics)
        log.verdict(metrics["valid"], K)
    return metrics


def _open_run(
    config: TrainConfig, data: PreparedData, run_dir: Path, resume: bool, shares, K: int, world: int
) -> dict | None:
    """Create or reopen the run folder (rank 0); the checkpoint state to resume from, or None."""
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    state = None
    if resume and (run_dir / runs.CHECKPOINT).exists():
        state = _load_checkpoint(run_dir / runs.CHECKPOINT)
        _check_resume_config(state["config"], config, run_dir)
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


def _load_checkpoint(path: Path) -> dict:
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


def _on_main(ctx: Context, fn, *args, **kwargs):
    """fn(*args, **kwargs) run on rank 0; every rank returns its result or raises its error."""
    outcome = None
    if ctx.is_main:
        try:
            outcome = (fn(*args, **kwargs), None)
        except (ValueError, FileNotFoundError, FileExistsError) as exc:
            outcome = (None, exc)
    result, error = ctx.broadcast(outcome)
    if error is not None:
        raise error
    return result


def _evaluate(ctx: Context, model: torch.nn.Module, batcher: ListBatcher, shares, K: int, batch_size: int) -> dict:
    """Metrics on every list of the split; each rank scores a contiguous share, all ranks get all scores."""
    start, stop = ctx.shard_range(len(batcher))
    if stop > start:
        part = predict(model, batcher.subset(start, stop), batch_size)
    else:
        part = np.zeros((0, *batcher.cand_item.shape[1:]), dtype=np.float32)
    return evaluate_scores(np.concatenate(ctx.all_gather(part)), batcher, shares, K)


def _rng_states(ctx: Context):
    """The torch RNG state to checkpoint: one uint8 tensor, or one per rank in a distributed run (plain
    tensors, so the checkpoint loads with weights_only=True)."""
    states = ctx.all_gather(torch.get_rng_state())
    return states[0] if ctx.world == 1 else states


def _restore_rng(saved, ctx: Context, seed: int) -> None:
    states = saved if isinstance(saved, list) else [saved]
    if ctx.rank < len(states):
        torch.set_rng_state(states[ctx.rank])
    else:  # resumed with more ranks than the checkpoint had
        torch.manual_seed(seed + ctx.rank)


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}


def _check_resume_config(saved: dict, config: TrainConfig, run_dir: Path) -> None:
    current = dataclasses.asdict(config)
    differ = sorted(k for k in ("model", "history", "seed", "model_options") if saved.get(k) != current.get(k))
    if differ:
        raise ValueError(
            f"cannot resume {run_dir}: {differ} differ from the saved run; use the saved values or a new --out"
        )


def _progress(iterable, total: int, desc: str, show: bool):
    if not show:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, unit="batch")


class _EpochLog:
    """Progress on stderr (one line per epoch, after one line of reference orders on validation) and,
    with a folder, TensorBoard scalars: train/loss, valid/<metric>, train/lr, train/lists_per_s."""

    def __init__(self, label: str, tensorboard: str | Path | None):
        self.prefix = f"[{label}] " if label else ""
        self.baseline = -math.inf  # best reference NDCG@K on validation
        self.reference: dict[str, dict[str, float]] = {}
        self.writer = None
        if tensorboard is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # a ModuleNotFoundError naming the module: the CLI names the extra
                raise ModuleNotFoundError(
                    f"--tensorboard needs the tensorboard package: pip install -e '.[tensorboard]' ({exc})",
                    name="tensorboard",
                ) from None
            self.writer = SummaryWriter(str(tensorboard))

    def __enter__(self) -> _EpochLog:
        return self

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.close()

    def references(self, references: dict[str, dict[str, float]], K: int) -> None:
        text = "  ".join(f"{name} auc={m['auc']:.4f} ndcg@{K}={m[f'ndcg@{K}']:.4f}" for name, m in references.items())
        self._print(f"valid reference orders: {text}")
        self.reference = references
        self.baseline = max(m[f"ndcg@{K}"] for m in references.values())

    def epoch(self, row: dict, K: int, lr: float) -> None:
        keys = ("train_loss", "valid_auc", f"valid_ndcg@{K}", f"valid_js@{K}")
        text = "  ".join(f"{k}={row[k]:.4f}" for k in keys if k in row)
        below = row.get(f"valid_ndcg@{K}", math.inf) <= self.baseline
        self._print(
            f"epoch {row['epoch']}: {text}  lists_per_s={row['lists_per_s']:.0f}"
            + ("  (not above the best reference order yet)" if below else "")
        )
        if self.writer is not None:
            step = row["epoch"]
            self.writer.add_scalar("train/loss", row["train_loss"], step)
            self.writer.add_scalar("train/lr", lr, step)
            self.writer.add_scalar("train/lists_per_s", row["lists_per_s"], step)
            for key, value in row.items():
                if key.startswith("valid_") and key != "valid_lists":
                    self.writer.add_scalar(f"valid/{key[len('valid_') :]}", value, step)
            self.writer.flush()

    def verdict(self, valid: dict[str, float], K: int) -> None:
        """A warning when the selected model does not beat a reference order on validation."""
        for note in not_beaten(valid, self.reference, K) if self.reference else []:
            self._print(
                f"warning: the selected model does not beat a reference order on valid: {note}; it may not have learned"
            )

    def _print(self, text: str) -> None:
        print(self.prefix + text, file=sys.stderr, flush=True)


def _write_epochs(path: Path, rows: list[dict]) -> None:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[-1]))
    writer.writeheader()
    writer.writerows(rows)
    runs.atomic_write_bytes(path, buffer.getvalue().encode())
