"""Evaluate a finished run on a split: `dir-cloud evaluate --run RUN [--split test] [--json]`.

Every list of the split is scored (no dropped tail). The same metrics are shown for three reference
orders: random, the logged (upstream) order and item popularity in the training split; a model that
does not beat them on AUC or NDCG@K gets a warning on stderr. The run's own history view is used; evaluating a
model on the other view needs `--history` together with `--cross-view`, since it mixes two setups.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder written by dir-cloud train")
    parser.add_argument("--split", choices=["train", "valid", "test"], default="test", help="split to score")
    parser.add_argument("--data", help="prepared data folder (default: the one the run was trained on)")
    parser.add_argument("--history", choices=["device", "cloud"], help="history view (default: the run's)")
    parser.add_argument(
        "--cross-view", action="store_true", help="allow evaluating on a history view the run was not trained on"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from cloud.evaluation.report import evaluate_run, format_metrics

    metrics = evaluate_run(args.run, args.split, data_dir=args.data, history=args.history, cross_view=args.cross_view)
    print(json.dumps(metrics, indent=2) if args.json else format_metrics(metrics))
    for note in metrics["warnings"]:
        print(f"warning: the model does not beat a reference order: {note}; it may not have learned", file=sys.stderr)
    return 0
