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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared data folder (dir-cloud prepare)")
    parser.add_argument("--out", required=True, help="run folder to write")
    parser.add_argument("--model", default=None, help="registry name, e.g. dir, dir-isi, dir-js (default dir)")
    parser.add_argument("--history", choices=["device", "cloud"], default=None,
                        help="history view: device (fresh) or cloud (minus the newest `lag` behaviours)")
    parser.add_argument("--config", help="JSON or TOML file with TrainConfig fields")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None,
                        help="epoch cap (default 100); runs normally end earlier by --patience")
    parser.add_argument("--patience", type=int, default=None,
                        help="stop after this many epochs without a better validation AUC (default 3)")
    parser.add_argument("--lr-schedule", choices=["constant", "plateau"], default=None,
                        help="plateau: halve the learning rate after an epoch without improvement (default constant)")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--l2", type=float, default=None)
    parser.add_argument("--beta", type=float, default=None, help="weight of the utility loss (1-beta: exposure)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--topk", choices=["straight_through", "gumbel"], default=None,
                        help="differentiable top-K of the exposure loss")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default 1: as fast as 2 on an idle 2-core machine, and 2 collapse when the cores are shared; BENCHMARKS.md)")
    parser.add_argument("--device", default=None, help="cpu (default) or cuda; under torchrun rank i uses GPU i of its node")
    parser.add_argument("--distributed", action="store_true",
                        help="fail unless started by torchrun (under torchrun training is data-parallel anyway)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")


def config_from_args(args: argparse.Namespace):
    from cloud.training import TrainConfig

    overrides = {"model": args.model, "history": args.history, "seed": args.seed, "epochs": args.epochs,
                 "patience": args.patience, "lr_schedule": args.lr_schedule, "lr": args.lr, "l2": args.l2,
                 "beta": args.beta, "batch_size": args.batch_size,
                 "topk": args.topk, "threads": args.threads, "device": args.device}
    if args.config:
        return TrainConfig.from_file(args.config, **overrides)
    return TrainConfig(**{k: v for k, v in overrides.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    import sys

    from cloud.distributed import launch_rank
    from cloud.training import RankFailure, train

    try:
        metrics = train(config_from_args(args), args.data, args.out, resume=args.resume, distributed=args.distributed)
    except RankFailure as exc:
        print(f"dir-cloud train: error: {exc}", file=sys.stderr)
        return 1
    if launch_rank() == 0:
        print(json.dumps({"run": args.out, **metrics}, indent=2))
    return 0
