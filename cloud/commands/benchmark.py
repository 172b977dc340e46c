"""Train and evaluate a grid of models x history views x seeds; write a paper-style table.

    dir-cloud benchmark --data DATA --models dir,dir-isi,dir-js --histories device,cloud --seeds 3 --out DIR

Writes DIR/results.csv (one row per run), DIR/table.csv and DIR/table.md (mean and std over seeds,
test split, model selected on validation), and the runs themselves under DIR/runs/.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared data folder")
    parser.add_argument("--models", default="dir", help="comma-separated registry names")
    parser.add_argument("--histories", default="device,cloud", help="comma-separated: device, cloud")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", help="JSON or TOML TrainConfig applied to every run")
    parser.add_argument("--epochs", type=int, default=None)


def run(args: argparse.Namespace) -> int:
    from cloud.experiments import run_grid

    table = run_grid(args.data, _names(args.models), _names(args.histories), args.seeds, args.out,
                     config_file=args.config, epochs=args.epochs)
    print(table)
    return 0


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
