"""Tune a model's learning rate, L2, widths (and beta) with Optuna on the validation split.

    dir-cloud tune --data DATA --model din --history device --trials 16 --out TUNED
    dir-cloud tune ... --storage postgresql://user@host/db      # start the same command on several machines

TPE sampler, median pruner on the per-epoch validation AUC (from epoch 4), every trial a real training run
ending by patience (cloud/training/tuning.py). The study is kept in --storage (default TUNED/study.db, SQLite); workers
with the same --storage and --study-name share it, and an interrupted study keeps every finished
trial. Writes TUNED/MODEL.json (the best trial), which `dir-cloud benchmark --tuned TUNED` uses.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared data folder")
    parser.add_argument("--model", required=True, help="registry name, e.g. dir, din")
    parser.add_argument(
        "--history",
        choices=["device", "cloud"],
        default="device",
        help="history view the trials train on (default: %(default)s)",
    )
    parser.add_argument("--trials", type=int, required=True, help="finished + pruned trials of the study, all workers")
    parser.add_argument("--out", required=True, help="folder for MODEL.json, the trial runs and the default study.db")
    parser.add_argument("--storage", help="database URL of the study (default sqlite:///OUT/study.db)")
    parser.add_argument("--study-name", help="default MODEL-HISTORY")
    parser.add_argument("--params", help="comma-separated subset of the search space to tune (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every trial and the sampler's seed")
    parser.add_argument("--epochs", type=int, default=None, help="epoch cap per trial (default the trainer's)")
    parser.add_argument(
        "--patience",
        type=int,
        default=None,
        help="epochs without a better validation AUC before a trial stops (default the trainer's)",
    )
    parser.add_argument("--json", action="store_true", help="print the best trial as JSON instead of a summary")


def run(args: argparse.Namespace) -> int:
    from cloud.training.tuning import tune

    params = [p.strip() for p in args.params.split(",")] if args.params is not None else None
    result = tune(
        args.data,
        args.model,
        args.history,
        args.trials,
        args.out,
        storage=args.storage,
        study_name=args.study_name,
        params=[p for p in params if p] if params is not None else None,
        seed=args.seed,
        epochs=args.epochs,
        patience=args.patience,
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"best trial {result['best_trial']}: valid AUC {result['best_valid_auc']:.4f} with {result['params']}; "
            f"written to {args.out}/{args.model}.json (`dir-cloud benchmark --tuned {args.out}`)"
        )
    return 0
