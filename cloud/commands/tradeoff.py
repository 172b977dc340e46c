"""Utility-fairness trade-off of DIR (paper Fig. 4) and the effect of the target shares (Fig. 5).

    dir-cloud tradeoff --data DATA --betas 0.1,0.3,0.5,0.7,0.9,1.0 --out DIR

Trains DIR once per beta (and once per alternative target distribution given with --targets, e.g.
"0.6/0.3/0.1;0.33/0.33/0.34"), writes DIR/tradeoff.csv, DIR/targets.csv and PNG plots.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared data folder")
    parser.add_argument("--betas", default="0.1,0.3,0.5,0.7,0.9,1.0", help="comma-separated utility weights")
    parser.add_argument("--targets", default="", help="';'-separated target distributions, '/'-separated shares")
    parser.add_argument("--model", default="dir", help="registry name of the model to train")
    parser.add_argument("--seed", type=int, default=0, help="random seed of every run")
    parser.add_argument("--epochs", type=int, default=None, help="most epochs per run (default: 15)")
    parser.add_argument("--out", required=True, help="folder for the CSVs, PNG plots and runs/")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of CSV")


def run(args: argparse.Namespace) -> int:
    from cloud.evaluation.tradeoff import run_tradeoff

    betas = [float(b) for b in args.betas.split(",") if b.strip()]
    targets = [[float(x) for x in t.split("/")] for t in args.targets.split(";") if t.strip()]
    text = run_tradeoff(args.data, betas, targets, args.out, model=args.model, seed=args.seed, epochs=args.epochs)
    if args.json:
        from pathlib import Path

        from cloud.evaluation.csv_rows import read_csv_rows

        targets_csv = Path(args.out) / "targets.csv"
        print(
            json.dumps(
                {
                    "out": args.out,
                    "betas": read_csv_rows(Path(args.out) / "tradeoff.csv"),
                    "targets": read_csv_rows(targets_csv) if targets else [],
                },
                indent=2,
            )
        )
    else:
        print(text)
    return 0
