"""Write the benchmark tables of a grid folder (label metrics, true clicks, stopping epochs, CIs, paired marks).

    dir-cloud results --grid DIR [--out DIR/table.md] [--tuned TUNED]
    dir-cloud results --grid DIR --variant dir-w64=EXP --reference pear --out exp.md

Reads the finished runs of `dir-cloud benchmark --out DIR` (cloud/evaluation/results.py); trains nothing.
--variant NAME=FOLDER adds the runs of another benchmark folder, one model trained with changed settings
(`dir-cloud benchmark --set`), as rows named NAME; --reference MODEL pairs every row with MODEL, not dir.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grid", required=True, help="folder written by `dir-cloud benchmark --out`")
    parser.add_argument("--out", help="markdown file to write (default GRID/table.md)")
    parser.add_argument(
        "--data", help="prepared data for the reference orders' rows (default: the runs' own data folder)"
    )
    parser.add_argument(
        "--tuned", help="folder of `dir-cloud tune --out`: add the tuned parameters' table (default: none)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="add the runs of another `dir-cloud benchmark --out` folder as the model NAME; repeatable (default: none)",
    )
    parser.add_argument(
        "--reference", default="dir", help="the model every paired comparison is against (default: dir)"
    )


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from cloud.commands.benchmark import split_pair
    from cloud.evaluation.grids import reference_rows
    from cloud.evaluation.results import grid_rows, write_results

    rows = grid_rows(args.grid)
    data = args.data or (
        json.loads((Path(args.grid) / "runs" / rows[0]["run"] / "config.json").read_text())["data"] if rows else None
    )
    references = reference_rows(data) if data and Path(data).exists() else None
    variants = dict(split_pair(item, "--variant", "NAME=FOLDER", "dir-w64=exp/w64") for item in args.variant)
    print(
        write_results(
            args.grid,
            references=references,
            out=args.out,
            tuned=args.tuned,
            variants=variants,
            reference=args.reference,
        )
    )
    return 0
