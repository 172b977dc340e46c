"""What a training run shows and writes per epoch: progress lines on stderr, TensorBoard scalars, RUN/epochs.csv.

with EpochLog("dir device seed 2", tensorboard=None) as log:
    log.references(references, K)          # one line of reference orders on validation
    for batch in progress_bar(batches, steps, "epoch 1/100", show): ...
    log.epoch(row, K, lr)                  # one line per epoch
    write_epochs(run_dir / runs.EPOCHS, rows)
    log.verdict(valid, K)                  # a warning when no reference order is beaten
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

from cloud.evaluation.scoring import not_beaten
from cloud.training import runs


class EpochLog:
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

    def __enter__(self) -> EpochLog:
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


def progress_bar(iterable, total: int, desc: str, show: bool):
    """A tqdm bar over `iterable` when `show`, else `iterable` itself."""
    if not show:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, unit="batch")


def write_epochs(path: Path, rows: list[dict]) -> None:
    """RUN/epochs.csv: one row per finished epoch, written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[-1]))
    writer.writeheader()
    writer.writerows(rows)
    runs.atomic_write_bytes(path, buffer.getvalue().encode())
