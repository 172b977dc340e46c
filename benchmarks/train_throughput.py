"""Training throughput of every model side by side: lists/s, FLOPs per list and achieved FLOP/s vs DIR.

    python benchmarks/train_throughput.py --models all [--users 1000] [--epochs 2] [--threads 1]
    python benchmarks/train_throughput.py --models dir,din --profile din     # + torch.profiler top ops

Each model trains through the real trainer (cloud.training.trainer.train: batching from disk, the model's own
losses, Adam, validation) on the same synthetic data (m=3, n=10, t=20), batch 256, one torch thread;
lists/s is the trainer's own per-epoch figure (training steps only) over `--epochs` epochs.
FLOPs per list are counted with torch.utils.flop_counter.FlopCounterMode over one training step
(forward, loss, backward) divided by the batch, on each model's plain formulation: DIN trains its activation
unit through a chunked function that recomputes the pair-sized pre-activations in backward
(cloud.models.din.RectifiedPairs), and that recompute is not the model's work, so its FLOPs are counted
with `chunked = False`, the formulation inference and export use. Achieved FLOP/s = FLOPs per list x
lists/s. DIR is
measured first and again last in the same run, and every figure is also given as a ratio to the mean of
DIR's two measurements, so a load shared with other processes largely cancels out of the comparison.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from cloud.data.batches import ListBatcher
from cloud.data.prepare import prepare
from cloud.data.prepared import PreparedData
from cloud.data.synth import SynthConfig, generate, write_logs
from cloud.models import MODELS, build_model
from cloud.models.din import ActivationUnit
from cloud.training.config import TrainConfig
from cloud.training.objective import BatchSums, step_objective
from cloud.training.trainer import train


def step_flops(model_name: str, data: PreparedData, batch_size: int) -> float:
    """FLOPs of one training step (forward, the trainer's objective, backward) per list, on the model's plain
    formulation (without DIN's recompute in backward)."""
    torch.manual_seed(0)
    model = build_model(model_name, data.spec)
    for module in model.modules():
        if isinstance(module, ActivationUnit):
            module.chunked = False
    batcher = ListBatcher(data.item_tables(), data.split("train"), "device")
    batch = next(batcher.batches(batch_size))
    target = torch.tensor(data.spec.target_shares)
    exposure = model.uses_exposure_loss
    with FlopCounterMode(display=False) as counter:
        scores = model(batch)
        sums = BatchSums.of(model, batch, scores, data.spec.K, "straight_through", exposure)
        objective, _ = step_objective(sums, sums, target, 0.5, exposure, 1, model.uses_utility_loss)
        objective.backward()
    return counter.get_total_flops() / batch_size


def trainer_rate(model_name: str, data_dir: Path, run_dir: Path, epochs: int, batch_size: int, threads: int) -> float:
    """Training lists/s over all epochs (the harmonic mean of the trainer's per-epoch figures in
    RUN/epochs.csv, every epoch having the same lists), so CRUM's two stages both count."""
    config = TrainConfig(model=model_name, epochs=epochs, patience=epochs, batch_size=batch_size, threads=threads)
    train(config, data_dir, run_dir, progress=False)
    with open(run_dir / "epochs.csv") as handle:
        rates = [float(row["lists_per_s"]) for row in csv.DictReader(handle)]
    return len(rates) / sum(1.0 / r for r in rates)


def profile(model_name: str, data: PreparedData, batch_size: int, steps: int = 5, rows: int = 15) -> str:
    """torch.profiler table (self CPU time) of a few training steps."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.manual_seed(0)
    model = build_model(model_name, data.spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batcher = ListBatcher(data.item_tables(), data.split("train"), "device")
    batches = list(zip(range(steps + 2), batcher.batches(batch_size), strict=False))
    target = torch.tensor(data.spec.target_shares)
    exposure = model.uses_exposure_loss

    def step(batch):
        scores = model(batch)
        sums = BatchSums.of(model, batch, scores, data.spec.K, "straight_through", exposure)
        objective, _ = step_objective(sums, sums, target, 0.5, exposure, 1, model.uses_utility_loss)
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()

    for _, batch in batches[:2]:
        step(batch)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _, batch in batches[2:]:
            step(batch)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", "--model", default="all", help="comma-separated registry names, or all")
    parser.add_argument("--users", type=int, default=1000, help="synthetic users (about 9 training lists each)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", default="", help="comma-separated models to profile with torch.profiler")
    args = parser.parse_args()
    names = list(MODELS) if args.models == "all" else [n.strip() for n in args.models.split(",") if n.strip()]
    names = ["dir", *(n for n in dict.fromkeys(names) if n != "dir")]  # DIR first (and again last), once each
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        write_logs(generate(SynthConfig(users=args.users)), tmp / "logs")
        prepare(tmp / "logs", tmp / "data")
        data = PreparedData(tmp / "data")
        spec = data.spec
        print(
            f"m={spec.m} n={spec.n} t={spec.t}, batch {args.batch_size}, {args.threads} thread(s), "
            f"{len(data.split('train')['cand_item'])} training lists, torch {torch.__version__}, "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        rows: list[tuple[str, float, float, float]] = []
        for label, name in [(n, n) for n in names] + [("dir (again)", "dir")]:
            flops = step_flops(name, data, args.batch_size)
            rate = trainer_rate(name, tmp / "data", tmp / "runs" / label, args.epochs, args.batch_size, args.threads)
            rows.append((label, rate, flops, rate * flops))
        # DIR is measured first and last; the ratios are to the mean of both, which a drifting load
        # from other processes shifts least
        dirs = [(rate, flops, achieved) for label, rate, flops, achieved in rows if label in ("dir", "dir (again)")]
        base_rate, base_flops, base_achieved = (sum(column) / 2 for column in zip(*dirs, strict=True))
        print(f"{'model':<11} {'lists/s':>8} {'x DIR':>6} {'kFLOP/list':>11} {'x DIR':>6} {'GFLOP/s':>8} {'x DIR':>6}")
        for name, rate, flops, achieved in rows:
            print(
                f"{name:<11} {rate:>8.0f} {rate / base_rate:>6.2f} {flops / 1e3:>11.0f} {flops / base_flops:>6.2f} "
                f"{achieved / 1e9:>8.2f} {achieved / base_achieved:>6.2f}"
            )
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for name in [n.strip() for n in args.profile.split(",") if n.strip()]:
            print(f"\nprofile of {name} ({args.batch_size} lists per step):")
            print(profile(name, data, args.batch_size))


if __name__ == "__main__":
    main()
