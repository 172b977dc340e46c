"""TrainConfig: everything that determines a training run, read from TOML/JSON and checked; LR_SCHEDULES.

config = TrainConfig.from_file("train.toml", seed=2)    # overrides that are None are ignored
config.check()                                          # ValueError naming the field and its range
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from cloud.data.batches import HISTORY_VIEWS

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
