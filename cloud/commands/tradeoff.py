"""Utility-fairness trade-off of DIR (paper Fig. 4) and the effect of the target shares (Fig. 5), over seeds.

    dir-cloud tradeoff --data DATA --betas 0.1,0.3,0.5,0.7,0.9,1.0 --seeds 3 --out DIR
    dir-cloud tradeoff --data DATA --betas 0.1,0.5,0.9,1.0 --targets "0.6/0.3/0.1" --seeds 5 --tuned TUNED --out DIR
    dir-cloud tradeoff --data DATA --betas 0.5,1.0 --seeds 3 --pages 1000 --out DIR

Trains DIR once per (beta, seed) and once per (alternative target distribution given with --targets, e.g.
"0.6/0.3/0.1;0.33/0.33/0.34", seed) into DIR/runs/beta-B-sS and DIR/runs/target-SHARES-sS; each run ends
by the patience rule on validation. A finished run is reused only when its saved config equals the
requested one (config hash); interrupted, the same command continues where it stopped. A run of the
single-seed layout (DIR/runs/beta-B, before --seeds) moves to beta-B-sS, S its saved seed. Writes
DIR/tradeoff.csv and DIR/targets.csv (one row per run), DIR/tradeoff-summary.csv and
DIR/targets-summary.csv (per beta / target: mean and 95% Student-t half-width over seeds of every test
metric, runs the epoch cap ended) and PNG plots of the means with 95% CI error bars (one seed: no interval).
--pages USERS also scores each run by the true clicks of its device pages on USERS fresh users of the
synthetic world (as `dir-cloud benchmark --pages`), adding clicks_per_page and page_js@K to the tables.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared data folder")
    parser.add_argument("--betas", default="0.1,0.3,0.5,0.7,0.9,1.0", help="comma-separated utility weights")
    parser.add_argument("--targets", default="", help="';'-separated target distributions, '/'-separated shares")
    parser.add_argument("--model", default="dir", help="registry name of the model to train")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", default="3", help="number of seeds (0..N-1), or comma-separated seeds (e.g. 3,4)")
    seeds.add_argument(
        "--seed",
        type=int,
        default=None,
        help="a single seed number, the same as --seeds SEED, (default: none, --seeds decides)",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="epoch cap (default: the trainer's, 100; runs end by patience)"
    )
    parser.add_argument(
        "--tuned",
        help="folder written by `dir-cloud tune --out`: train with the model's best parameters, except beta, "
        "which the sweep sets (target runs keep the tuned beta; default: none, TrainConfig's, beta 0.5)",
    )
    parser.add_argument(
        "--pages",
        type=int,
        default=0,
        metavar="USERS",
        help="also score each run's device pages by their true clicks on USERS fresh simulated users "
        "(synthetic data; default: 0, off)",
    )
    parser.add_argument("--out", required=True, help="folder for the CSVs, PNG plots and runs/")
    parser.add_argument(
        "--json", action="store_true", help="print the per-run rows and the summaries as JSON instead of the table"
    )


def run(args: argparse.Namespace) -> int:
    from cloud.commands.benchmark import parse_seeds
    from cloud.evaluation.tradeoff import format_summary, run_tradeoff

    if args.pages < 0:
        raise ValueError(f"--pages: expected a number of simulated users >= 0 (0: off), got {args.pages}")
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs: expected a positive epoch cap, got {args.epochs}")
    result = run_tradeoff(
        args.data,
        parse_betas(args.betas),
        parse_targets(args.targets),
        args.out,
        model=args.model,
        seeds=[args.seed] if args.seed is not None else parse_seeds(args.seeds),
        epochs=args.epochs,
        tuned=args.tuned,
        page_users=args.pages,
    )
    if args.json:
        print(json.dumps({"out": args.out, **result}, indent=2))
    else:
        print(format_summary(result))
    return 0


def parse_betas(text: str) -> list[float]:
    try:
        betas = [float(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ValueError(
            f"--betas: expected comma-separated numbers in [0, 1] (e.g. 0.1,0.5,1.0), got {text!r}"
        ) from None
    if not betas or not all(0.0 <= b <= 1.0 for b in betas):
        raise ValueError(f"--betas: expected at least one beta, each in [0, 1], got {text!r}")
    return betas


def parse_targets(text: str) -> list[list[float]]:
    try:
        return [[float(x) for x in t.split("/")] for t in text.split(";") if t.strip()]
    except ValueError:
        raise ValueError(
            f"--targets: expected ';'-separated distributions of '/'-separated shares (e.g. 0.6/0.3/0.1), got {text!r}"
        ) from None
