"""Train a model on prepared data: `dir-cloud train --data DATA --model dir --history device --out RUN`.

Adam with L2, early stopping and checkpoint selection on the validation split, per-epoch loss and
metrics in RUN/epochs.csv, the config saved in RUN/config.json, test metrics in RUN/metrics.json.
A crash leaves RUN/checkpoint.pt and RUN/model.pt usable; `--resume` continues the run.

Data-parallel on several processes or machines: start the same command with torchrun, e.g.
`torchrun --nproc-per-node 2 -m cloud.cli train --data DATA --out RUN --threads 1` (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import json

# TrainConfig's defaults, shown in --help without importing torch (a test keeps them equal).
DEFAULTS = {
    "model": "dir",
    "history": "device",
    "seed": 0,
    "epochs": 100,
    "patience": 3,
    "lr_schedule": "constant",
    "lr": 2e-3,
    "l2": 1e-5,
    "beta": 0.5,
    "batch_size": 256,
    "topk": "straight_through",
}


def _default(name: str) -> str:
    return f"(default: the --config file's, else {DEFAULTS[name]})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared data folder (dir-cloud prepare)")
    parser.add_argument("--out", required=True, help="run folder to write")
    parser.add_argument("--model", default=None, help=f"registry name, e.g. dir, dir-isi, dir-js {_default('model')}")
    parser.add_argument(
        "--history",
        choices=["device", "cloud"],
        default=None,
        help="history view: device (fresh) or cloud (minus the newest `lag` behaviours) " + _default("history"),
    )
    parser.add_argument(
        "--config",
        help="JSON or TOML file with TrainConfig fields, e.g. docs/train-config.toml "
        "(default: none; flags given override the file)",
    )
    parser.add_argument("--seed", type=int, default=None, help=f"random seed {_default('seed')}")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epoch cap; runs normally end earlier by --patience {_default('epochs')}",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=None,
        help=f"stop after this many epochs without a better validation AUC {_default('patience')}",
    )
    parser.add_argument(
        "--lr-schedule",
        choices=["constant", "plateau"],
        default=None,
        help="plateau: halve the learning rate after an epoch without improvement " + _default("lr_schedule"),
    )
    parser.add_argument("--lr", type=float, default=None, help=f"Adam learning rate {_default('lr')}")
    parser.add_argument("--l2", type=float, default=None, help=f"Adam weight decay {_default('l2')}")
    parser.add_argument(
        "--beta", type=float, default=None, help=f"weight of the utility loss (1-beta: exposure) {_default('beta')}"
    )
    parser.add_argument("--batch-size", type=int, default=None, help=f"lists per step {_default('batch_size')}")
    parser.add_argument(
        "--topk",
        choices=["straight_through", "gumbel"],
        default=None,
        help=f"differentiable top-K of the exposure loss {_default('topk')}",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default 1; BENCHMARKS.md, training throughput, says why)",
    )
    parser.add_argument(
        "--device", default=None, help="cpu (default) or cuda; under torchrun rank i uses GPU i of its node"
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="fail unless started by torchrun (under torchrun training is data-parallel anyway)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument(
        "--tensorboard",
        metavar="DIR",
        default=None,
        help="write losses, validation metrics and the learning rate per epoch as TensorBoard "
        "events to DIR (default: none; needs the tensorboard extra)",
    )


def config_from_args(args: argparse.Namespace):
    from cloud.training.config import TrainConfig

    overrides = {
        "model": args.model,
        "history": args.history,
        "seed": args.seed,
        "epochs": args.epochs,
        "patience": args.patience,
        "lr_schedule": args.lr_schedule,
        "lr": args.lr,
        "l2": args.l2,
        "beta": args.beta,
        "batch_size": args.batch_size,
        "topk": args.topk,
        "threads": args.threads,
        "device": args.device,
    }
    if args.config:
        return TrainConfig.from_file(args.config, **overrides)
    return TrainConfig(**{k: v for k, v in overrides.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    import sys

    from cloud.training.distributed import launch_rank
    from cloud.training.trainer import RankFailure, train

    try:
        metrics = train(
            config_from_args(args),
            args.data,
            args.out,
            resume=args.resume,
            distributed=args.distributed,
            tensorboard=args.tensorboard,
        )
    except RankFailure as exc:
        print(f"dir-cloud train: error: {exc}", file=sys.stderr)
        return 1
    if launch_rank() == 0:
        print(json.dumps({"run": args.out, **metrics}, indent=2))
    return 0
