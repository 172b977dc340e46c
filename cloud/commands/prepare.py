"""Prepare a LOGS folder for training: `dir-cloud prepare --logs LOGS --out DATA`.

Validates dataset.toml, items.csv, events.csv (and users.csv if present), builds lists with
per-source candidates and device/cloud histories, splits them by time into train/valid/test and
writes DATA atomically (see docs/data.md). An existing DATA is refused unless --force.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--logs", required=True, help="LOGS folder (dataset.toml, items.csv, events.csv)")
    parser.add_argument("--out", required=True, help="prepared DATA folder to write")
    parser.add_argument("--force", action="store_true", help="replace an existing DATA folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the negative sampling (list_mode sampled)")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON instead of a summary")


def run(args: argparse.Namespace) -> int:
    from cloud.data.prepare import prepare

    stats = prepare(args.logs, args.out, force=args.force, seed=args.seed)
    if args.json:
        print(json.dumps({"out": args.out, **stats}, indent=2))
        return 0
    lists = ", ".join(f"{name} {count}" for name, count in stats["lists"].items())
    print(f"wrote {args.out}: {stats['events']} events, {stats['clicks']} clicks -> lists: {lists}")
    return 0
