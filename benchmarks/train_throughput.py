"""Training and evaluation throughput of a model on synthetic lists (lists per second).

    python benchmarks/train_throughput.py [--model dir] [--users 1000] [--steps 40]

Times forward + backward + loss (utility + exposure) + Adam on real prepared batches, and batched
evaluation (scoring + metrics), for batch sizes 128/256 and 1/2 torch threads, in one process.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cloud.batches import ListBatcher
from cloud.data.prepare import prepare
from cloud.data.prepared import PreparedData
from cloud.data.synth import SynthConfig, generate, write_logs
from cloud.evaluation import evaluate_model
from cloud.losses import exposure_loss, utility_loss
from cloud.models import build_model


def train_rate(model, batcher: ListBatcher, target: torch.Tensor, K: int, batch_size: int, steps: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = [batcher.batch(np.random.default_rng(i).choice(len(batcher), batch_size)) for i in range(steps + 5)]
    for i, batch in enumerate(batches):
        if i == 5:  # warm-up done
            start = time.perf_counter()
        scores = model(batch)
        loss = 0.5 * utility_loss(scores, batch["label"], batch["mask"]) + 0.5 * exposure_loss(
            scores, batch["mask"], target, K)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dir")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_logs(generate(SynthConfig(users=args.users)), Path(tmp) / "logs")
        prepare(Path(tmp) / "logs", Path(tmp) / "data")
        data = PreparedData(Path(tmp) / "data")
        train = ListBatcher(data.item_tables(), data.split("train"), "device")
        test = ListBatcher(data.item_tables(), data.split("test"), "device")
        target = torch.tensor(data.spec.target_shares)
        print(f"model {args.model}, m={data.spec.m} n={data.spec.n} t={data.spec.t}, torch {torch.__version__}")
        print(f"{'what':<10} {'batch':>6} {'threads':>8} {'lists/s':>10}")
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for batch_size in (128, 256):
                torch.manual_seed(0)
                model = build_model(args.model, data.spec)
                rate = train_rate(model, train, target, data.spec.K, batch_size, args.steps)
                print(f"{'train':<10} {batch_size:>6} {threads:>8} {rate:>10.0f}")
            start = time.perf_counter()
            evaluate_model(model.eval(), test, data.spec.target_shares, data.spec.K, 2048)
            print(f"{'evaluate':<10} {2048:>6} {threads:>8} {len(test) / (time.perf_counter() - start):>10.0f}")


if __name__ == "__main__":
    main()
