"""train(): a reranker trained on prepared data, the epoch selected on validation, then scored on test.

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

The loop, as _Trainer's steps: per `_epoch`, `_fit_epoch` (the optimiser steps), `_validate` (metrics of a
split, sharded over ranks), `_select` and `_save_checkpoint` (model.pt when validation improved,
checkpoint.pt and epochs.csv every epoch); then `_test` (the selected weights on valid and test,
RUN/metrics.json). Beside it: the config (config.py), the objective (objective.py), the run folder and
checkpoint (checkpoint.py) and what is printed per epoch (epoch_log.py).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cloud.data.batches import ListBatcher
from cloud.data.prepared import PreparedData
from cloud.evaluation.scoring import evaluate_references, evaluate_scores, predict
from cloud.models import build_model
from cloud.training import runs
from cloud.training.checkpoint import cpu_state, open_run, restore_rng, rng_states, save_checkpoint
from cloud.training.config import TrainConfig
from cloud.training.distributed import Context, is_peer_failure, session
from cloud.training.epoch_log import EpochLog, progress_bar, write_epochs
from cloud.training.objective import BatchSums, step_objective


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
    run_dir = Path(run_dir)
    with session(config.device, required=distributed) as ctx:
        with EpochLog(label, tensorboard if ctx.is_main else None) as log:
            shares = config.target_shares or data.spec.target_shares
            K = config.K or data.spec.K
            state = _on_main(ctx, open_run, config, data, run_dir, resume, shares, K, ctx.world)
            show = ctx.is_main and (sys.stderr.isatty() if progress is None else progress)
            return _Trainer(ctx, config, data, run_dir, log, show).fit(state, on_epoch)


class _Trainer:
    """One run on this rank: the model, its optimiser and batches, and the epoch selected so far."""

    def __init__(self, ctx: Context, config: TrainConfig, data: PreparedData, run_dir: Path, log: EpochLog, show: bool):
        self.ctx, self.config, self.data, self.run_dir, self.log, self.show = ctx, config, data, run_dir, log, show
        self.shares = config.target_shares or data.spec.target_shares
        self.K = config.K or data.spec.K
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        self.model = build_model(config.model, data.spec, **config.model_options).to(ctx.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.l2)
        self.scheduler = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="max", factor=config.lr_factor, patience=config.lr_patience
            )
            if config.lr_schedule == "plateau"
            else None
        )
        self.target = torch.tensor(self.shares, dtype=torch.float32, device=ctx.device)
        self.use_exposure = self.model.uses_exposure_loss and config.beta < 1.0
        self.start_epoch = 0
        self.best: dict[str, float] = {"epoch": -1, "auc": -math.inf}
        self.history_rows: list[dict] = []

    def fit(self, state: dict | None, on_epoch=None) -> dict:
        """Epochs from the checkpoint `state` (or the start) until patience runs out or the cap; then _test."""
        self._resume(state)
        net = self.ctx.wrap(self.model)
        train_set = ListBatcher(self.data.item_tables(), self.data.split("train"), self.config.history, self.ctx.device)
        valid_set = train_set.split(self.data.split("valid"))
        generator = torch.Generator().manual_seed(self.config.seed)
        for _ in range(self.start_epoch):  # keep the shuffle order identical to an uninterrupted run
            torch.randperm(len(train_set), generator=generator)
        if self.ctx.is_main:
            self.log.references(evaluate_references(self.data, "valid", self.shares, self.K), self.K)

        # a run resumed after its patience ran out (crashed before metrics.json) trains no further epoch
        stop_reason = "patience" if self.start_epoch and self._patience_spent(self.start_epoch) else "cap"
        for epoch in range(self.start_epoch, self.config.epochs if stop_reason == "cap" else self.start_epoch):
            row = self._epoch(epoch, net, train_set, valid_set, generator)
            if on_epoch is not None:
                on_epoch(row)
            if self._patience_spent(epoch + 1):
                stop_reason = "patience"
                break
        return self._test(train_set.split(self.data.split("test")), valid_set, stop_reason)

    def _epoch(
        self, epoch: int, net: torch.nn.Module, train_set: ListBatcher, valid_set: ListBatcher, generator
    ) -> dict:
        """Fit, validate, select and save one epoch; its RUN/epochs.csv row. A lost rank raises RankFailure."""
        try:
            row = self._fit_epoch(epoch, net, train_set, generator)
            valid = self._validate(valid_set)
            rng = rng_states(self.ctx)
        except RuntimeError as exc:
            if not is_peer_failure(exc):
                raise
            raise self._rank_failure(epoch, exc) from exc
        row.update({f"valid_{k}": v for k, v in valid.items()})
        improved = self._select(row, valid["auc"])
        if self.ctx.is_main:
            self.log.epoch(row, self.K, self.optimizer.param_groups[0]["lr"])
            self._save_checkpoint(epoch, improved, rng)
        return row

    def _resume(self, state: dict | None) -> None:
        """Weights, optimiser, scheduler, selection and RNG from a checkpoint; without one, each rank's own noise."""
        if state is None:
            if self.ctx.rank:  # own Gumbel noise per rank; same initial weights (seeded before build_model)
                torch.manual_seed(self.config.seed + self.ctx.rank)
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.start_epoch, self.best, self.history_rows = state["epoch"] + 1, state["best"], state["history_rows"]
        restore_rng(state["rng"], self.ctx, self.config.seed)

    def _fit_epoch(self, epoch: int, net: torch.nn.Module, train_set: ListBatcher, generator) -> dict:
        """One epoch of optimiser steps over this rank's share of each global batch; the start of its row."""
        config = self.config
        self.model.begin_epoch(epoch, config.epochs)
        net.train()
        started, total, seen = time.perf_counter(), 0.0, 0
        batches = train_set.batches(
            config.batch_size, shuffle=True, generator=generator, rank=self.ctx.rank, world=self.ctx.world
        )
        steps = math.ceil(len(train_set) / config.batch_size)
        for step, batch in enumerate(progress_bar(batches, steps, f"epoch {epoch + 1}/{config.epochs}", self.show)):
            loss, lists = self._step(net, batch, epoch, step)
            total += loss * lists
            seen += lists
        train_seconds = time.perf_counter() - started
        return {
            "epoch": epoch + 1,
            "train_loss": total / max(seen, 1),
            "lists_per_s": seen / train_seconds,
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    def _step(self, net: torch.nn.Module, batch: dict[str, torch.Tensor], epoch: int, step: int) -> tuple[float, int]:
        """One optimiser step on the global batch; (its loss, its lists)."""
        scores = net(batch)
        local = BatchSums.of(self.model, batch, scores, self.K, self.config.topk, self.use_exposure)
        sums = BatchSums.unpacked(self.ctx.all_reduce_sum(local.packed()))
        objective, loss = step_objective(
            local, sums, self.target, self.config.beta, self.use_exposure, self.ctx.world, self.model.uses_utility_loss
        )
        if not math.isfinite(loss):
            raise NonFiniteLoss(
                f"loss became {loss} at epoch {epoch + 1}, step {step + 1}; lower --lr (now {self.config.lr}) "
                f"or check the data; the last good checkpoint in {self.run_dir} is intact"
            )
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizer.step()
        return loss, int(sums.lists.item())

    def _validate(self, batcher: ListBatcher) -> dict:
        """Metrics on every list of the split; each rank scores a contiguous share, all ranks get all scores."""
        start, stop = self.ctx.shard_range(len(batcher))
        if stop > start:
            part = predict(self.model, batcher.subset(start, stop), self.config.eval_batch_size)
        else:
            part = np.zeros((0, *batcher.cand_item.shape[1:]), dtype=np.float32)
        return evaluate_scores(np.concatenate(self.ctx.all_gather(part)), batcher, self.shares, self.K)

    def _select(self, row: dict, auc: float) -> bool:
        """Record the epoch's row, step the LR schedule; keep the epoch (True) when validation AUC improved."""
        if self.scheduler is not None:
            self.scheduler.step(auc)
        self.history_rows.append(row)
        improved = auc > self.best["auc"]
        if improved:
            self.best = {"epoch": row["epoch"], "auc": auc}
        return improved

    def _patience_spent(self, epochs_done: int) -> bool:
        return epochs_done - self.best["epoch"] >= self.config.patience

    def _save_checkpoint(self, epoch: int, improved: bool, rng) -> None:
        """model.pt when this epoch improved; checkpoint.pt and epochs.csv every epoch (rank 0)."""
        if improved:
            runs.atomic_torch_save(cpu_state(self.model), self.run_dir / runs.MODEL)
        save_checkpoint(
            self.run_dir / runs.CHECKPOINT,
            self.model,
            self.optimizer,
            self.scheduler,
            epoch=epoch,
            best=self.best,
            history_rows=self.history_rows,
            config=self.config,
            rng=rng,
        )
        write_epochs(self.run_dir / runs.EPOCHS, self.history_rows)

    def _rank_failure(self, epoch: int, exc: RuntimeError) -> RankFailure:
        saved = (
            f"{self.run_dir / runs.CHECKPOINT} holds epoch {epoch}: run the same command again with --resume"
            if epoch
            else "no epoch had finished: start the run again"
        )
        return RankFailure(
            f"rank {self.ctx.rank}: lost contact with another rank in epoch {epoch + 1} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]}); {saved}"
        )

    def _test(self, test_set: ListBatcher, valid_set: ListBatcher, stop_reason: str) -> dict:
        """The selected weights (model.pt) on valid and test; RUN/metrics.json."""
        path = self.run_dir / runs.MODEL
        self.model.load_state_dict(_on_main(self.ctx, torch.load, path, map_location="cpu", weights_only=True))
        valid = self._validate(valid_set)
        metrics = {
            "best_epoch": self.best["epoch"],
            "stopped_epoch": len(self.history_rows),
            "stop_reason": stop_reason,
            "valid": valid,
            "test": self._validate(test_set),
            "embedding_version": runs.embedding_version(self.model),
        }
        if self.ctx.is_main:
            runs.atomic_write_json(self.run_dir / runs.METRICS, metrics)
            self.log.verdict(valid, self.K)
        return metrics


def _on_main(ctx: Context, fn, *args, **kwargs):
    """fn(*args, **kwargs) run on rank 0; every rank returns its result or raises its error."""
    outcome: tuple[object, Exception | None] | None = None
    if ctx.is_main:
        try:
            outcome = (fn(*args, **kwargs), None)
        except (ValueError, FileNotFoundError, FileExistsError) as exc:
            outcome = (None, exc)
    result, error = ctx.broadcast(outcome)
    if error is not None:
        raise error
    return result
