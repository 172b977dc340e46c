"""Training throughput of `dir-cloud train` with 1 process and with N processes under torchrun (DDP).

    .venv/bin/python benchmarks/train_scaling.py --work /tmp/scaling --layouts 1x1,1x2,2x1

A layout PxT runs P processes of T torch threads each: 1x2 is one process using two cores through
intra-op threads, 2x1 two data-parallel processes (gloo, loopback) of one thread each, the same cores.
Every layout trains the same model on the same synthetic data with the same global batch, so the
runs take identical steps (tests/cloud/training/test_distributed.py); lists/s is RUN/epochs.csv's training throughput
(global lists over training time, validation excluded), averaged over the epochs after the first.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_data(work: Path, users: int) -> Path:
    """Synthetic logs (cloud.data.synth) prepared into work/data-<users>, reused when present."""
    from cloud.data.prepare import prepare
    from cloud.data.synth import SynthConfig, generate, write_logs

    data = work / f"data-{users}"
    if not data.exists():
        write_logs(generate(SynthConfig(users=users, seed=1)), work / f"logs-{users}")
        prepare(work / f"logs-{users}", data)
    return data


def run_layout(data: Path, run: Path, processes: int, threads: int, config: dict, device: str) -> dict:
    """Train with `processes` ranks of `threads` threads; training lists/s and wall time."""
    config_path = run.with_suffix(".json")
    config_path.write_text(json.dumps({**config, "threads": threads, "device": device}))
    train = ["-m", "cloud.cli", "train", "--data", str(data), "--out", str(run), "--config", str(config_path)]
    if processes > 1:
        launcher = [
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(processes),
            "--master-port",
            str(_free_port()),
        ]
        command = [sys.executable, *launcher, *train]
    else:
        command = [sys.executable, *train]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{processes}x{threads} failed:\n{done.stderr[-3000:]}")
    with open(run / "epochs.csv") as handle:
        speeds = [float(row["lists_per_s"]) for row in csv.DictReader(handle)]
    steady = speeds[1:] or speeds
    return {"lists_per_s": sum(steady) / len(steady), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the data and the runs")
    parser.add_argument("--layouts", default="1x1,1x2,2x1", help="PxT: P processes of T threads, comma-separated")
    parser.add_argument("--users", type=int, default=600, help="synthetic users (600: about 5,800 train lists)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256, help="global batch (split across processes)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per process)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = make_data(args.work, args.users)
    config = {"epochs": args.epochs, "patience": args.epochs, "batch_size": args.batch_size}
    print(f"cpu cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.1f}, device: {args.device}")
    print("| layout | processes | threads each | train lists/s | speed-up vs first | wall (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    first = None
    for layout in args.layouts.split(","):
        processes, threads = (int(x) for x in layout.split("x"))
        run = args.work / f"run-{layout}-{time.strftime('%H%M%S')}"
        result = run_layout(data, run, processes, threads, config, args.device)
        first = first or result["lists_per_s"]
        print(
            f"| {layout} | {processes} | {threads} | {result['lists_per_s']:.0f} | "
            f"{result['lists_per_s'] / first:.2f} | {result['wall_s']:.0f} |",
            flush=True,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
