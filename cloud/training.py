"""Train a reranker on prepared data with validation-based checkpoint selection.

    config = TrainConfig(model="dir", history="device", seed=0)
    train(config, data_dir="out/data", run_dir="out/run")   # writes the run folder of cloud.runs

Adam with L2 (weight decay), early stopping on validation AUC, the best epoch's weights kept as
model.pt, the last epoch's full state as checkpoint.pt (so `resume=True` continues after a crash).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cloud import runs
from cloud.batches import HISTORY_VIEWS, ListBatcher
from cloud.data.prepared import PreparedData
from cloud.evaluation import evaluate_model
from cloud.losses import exposure_loss, utility_loss
from cloud.models import build_model


@dataclass
class TrainConfig:
    """Everything that determines a run; saved in RUN/config.json so it can be reproduced."""

    model: str = "dir"
    history: str = "device"
    seed: int = 0
    epochs: int = 15
    batch_size: int = 256
    lr: float = 2e-3
    l2: float = 1e-5
    beta: float = 0.5
    topk: str = "straight_through"
    patience: int = 3
    K: int | None = None
    eval_batch_size: int = 2048
    target_shares: list[float] | None = None
    threads: int | None = None
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
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be positive")


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is left untouched."""


def train(config: TrainConfig, data_dir: str | Path, run_dir: str | Path, resume: bool = False,
          progress: bool | None = None) -> dict:
    """Train, select on validation, evaluate the selected model on test; returns RUN/metrics.json."""
    config.check()
    data = PreparedData(data_dir)
    spec = data.spec
    shares = config.target_shares or spec.target_shares
    K = config.K or spec.K
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    model = build_model(config.model, spec, **config.model_options)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.l2)
    start_epoch, best, history_rows = 0, {"epoch": -1, "auc": -math.inf}, []
    if resume and (run_dir / runs.CHECKPOINT).exists():
        state = torch.load(run_dir / runs.CHECKPOINT, map_location="cpu", weights_only=False)
        _check_resume_config(state["config"], config, run_dir)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best, history_rows = state["epoch"] + 1, state["best"], state["history_rows"]
        torch.set_rng_state(state["rng"])
    runs.atomic_write_json(run_dir / runs.CONFIG, {
        **dataclasses.asdict(config), "data": str(Path(data_dir).resolve()),
        "spec": spec.model_dump(mode="json"), "target_shares": shares, "K": K,
    })

    train_set = ListBatcher(data.item_tables(), data.split("train"), config.history)
    valid_set = ListBatcher(data.item_tables(), data.split("valid"), config.history)
    target = torch.tensor(shares, dtype=torch.float32)
    use_exposure = model.uses_exposure_loss and config.beta < 1.0
    show = sys.stderr.isatty() if progress is None else progress
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(start_epoch):  # keep the shuffle order identical to an uninterrupted run
        torch.randperm(len(train_set), generator=generator)

    for epoch in range(start_epoch, config.epochs):
        model.train()
        started, total, seen = time.perf_counter(), 0.0, 0
        batches = train_set.batches(config.batch_size, shuffle=True, generator=generator)
        steps = math.ceil(len(train_set) / config.batch_size)
        for step, batch in enumerate(_progress(batches, steps, f"epoch {epoch + 1}/{config.epochs}", show)):
            scores = model(batch)
            loss = utility_loss(scores, batch["label"], batch["mask"])
            if use_exposure:
                js = exposure_loss(scores, batch["mask"], target, K, method=config.topk)
                loss = config.beta * loss + (1.0 - config.beta) * js
            if not torch.isfinite(loss):
                raise NonFiniteLoss(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; lower --lr "
                    f"(now {config.lr}) or check the data; the last good checkpoint in {run_dir} is intact"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch["label"])
            seen += len(batch["label"])
        train_seconds = time.perf_counter() - started
        valid = evaluate_model(model, valid_set, shares, K, config.eval_batch_size)
        row = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), "lists_per_s": seen / train_seconds,
               **{f"valid_{k}": v for k, v in valid.items()}}
        history_rows.append(row)
        _log(row)
        if valid["auc"] > best["auc"]:
            best = {"epoch": epoch + 1, "auc": valid["auc"]}
            runs.atomic_torch_save(model.state_dict(), run_dir / runs.MODEL)
        runs.atomic_torch_save({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
            "best": best, "history_rows": history_rows, "config": dataclasses.asdict(config),
            "rng": torch.get_rng_state(),
        }, run_dir / runs.CHECKPOINT)
        _write_epochs(run_dir / runs.EPOCHS, history_rows)
        if epoch + 1 - best["epoch"] >= config.patience:
            break

    model.load_state_dict(torch.load(run_dir / runs.MODEL, map_location="cpu", weights_only=True))
    test_set = ListBatcher(data.item_tables(), data.split("test"), config.history)
    metrics = {
        "best_epoch": best["epoch"],
        "valid": evaluate_model(model, valid_set, shares, K, config.eval_batch_size),
        "test": evaluate_model(model, test_set, shares, K, config.eval_batch_size),
        "embedding_version": runs.embedding_version(model),
    }
    runs.atomic_write_json(run_dir / runs.METRICS, metrics)
    return metrics


def _check_resume_config(saved: dict, config: TrainConfig, run_dir: Path) -> None:
    current = dataclasses.asdict(config)
    differ = sorted(k for k in ("model", "history", "seed", "model_options") if saved.get(k) != current.get(k))
    if differ:
        raise ValueError(f"cannot resume {run_dir}: {differ} differ from the saved run; use the saved values or a new --out")


def _progress(iterable, total: int, desc: str, show: bool):
    if not show:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, unit="batch")


def _log(row: dict) -> None:
    keys = ("train_loss", "valid_auc", "valid_ndcg@5", "valid_js@5", "lists_per_s")
    text = "  ".join(f"{k}={row[k]:.4f}" if k != "lists_per_s" else f"{k}={row[k]:.0f}" for k in keys if k in row)
    print(f"epoch {row['epoch']}: {text}", file=sys.stderr, flush=True)


def _write_epochs(path: Path, rows: list[dict]) -> None:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[-1]))
    writer.writeheader()
    writer.writerows(rows)
    runs.atomic_write_bytes(path, buffer.getvalue().encode())
