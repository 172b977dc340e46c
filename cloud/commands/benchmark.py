"""Train and evaluate a grid of models x history views x seeds; write a paper-style table.

    dir-cloud benchmark --data DATA --models dir,dir-isi,dir-js --histories device,cloud --seeds 3 --out DIR

Writes DIR/results.csv (one row per run), DIR/table.csv and DIR/table.md (mean and std over seeds,
test split, model selected on validation), and the runs themselves under DIR/runs/.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared data folder")
    parser.add_argument("--models", default="dir", help="comma-separated registry names")
    parser.add_argument("--histories", default="device,cloud", help="comma-separated: device, cloud")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", help="JSON or TOML TrainConfig applied to every run, e.g. docs/train-config.toml "
                                         "(default: none)")
    parser.add_argument("--epochs", type=int, default=None, help="most epochs per run (default: the config's, else 15)")
    parser.add_argument("--json", action="store_true",
                        help="print the per-run results and the summary as JSON instead of the table")


def run(args: argparse.Namespace) -> int:
    from cloud.experiments import run_grid

    table = run_grid(args.data, _names(args.models), _names(args.histories), args.seeds, args.out,
                     config_file=args.config, epochs=args.epochs)
    if args.json:
        from cloud.experiments import read_csv_rows

        print(json.dumps({"out": args.out, "results": read_csv_rows(f"{args.out}/results.csv"),
                          "summary": read_csv_rows(f"{args.out}/table.csv")}, indent=2))
    else:
        print(table)
    return 0


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
