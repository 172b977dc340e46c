"""Prepare a LOGS folder for training: `dir-cloud prepare --logs LOGS --out DATA`.

Validates dataset.toml, items, events (and users if present; CSV or Parquet), builds lists with
per-source candidates and device/cloud histories, splits them by time into train/valid/test and
writes DATA atomically (see docs/data.md). An existing DATA is refused unless --force. Small logs are
prepared in memory, large ones out of core with DuckDB (--memory-limit bounds it), and --ray runs the
shards on a Ray cluster (docs/distributed.md); every path writes the same DATA.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--logs", required=True, help="LOGS folder (dataset.toml, items, events: .csv or .parquet)")
    parser.add_argument("--out", required=True, help="prepared DATA folder to write")
    parser.add_argument("--force", action="store_true", help="replace an existing DATA folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the negative sampling (list_mode sampled)")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON instead of a summary")
    parser.add_argument(
        "--engine",
        choices=("auto", "memory", "duckdb"),
        default="auto",
        help="in memory, out of core with DuckDB, or auto: by the size of the events file (default %(default)s)",
    )
    parser.add_argument(
        "--memory-limit",
        default=None,
        help="memory prepare may use, e.g. 4GB: picks the path, bounds DuckDB and the shard size, "
        "and in memory caps the lists, refused before building them if over (default: half "
        "the machine's memory for the path and DuckDB, the memory available for the lists)",
    )
    parser.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run the shards as Ray tasks on the cluster at ADDRESS (or auto); the nodes must "
        "share the LOGS and DATA paths (default: none, shards run on this machine)",
    )
    parser.add_argument(
        "--shards", type=int, default=None, help="number of user shards out of core (default: from the memory limit)"
    )


def run(args: argparse.Namespace) -> int:
    from cloud.data.prepare_scale import parse_size, prepare_logs

    limit = parse_size(args.memory_limit) if args.memory_limit else None
    stats, how = prepare_logs(
        args.logs,
        args.out,
        force=args.force,
        seed=args.seed,
        engine=args.engine,
        memory_limit=limit,
        ray=args.ray,
        shards=args.shards,
    )
    if args.json:
        print(json.dumps({"out": args.out, "path": how, **stats}, indent=2))
        return 0
    lists = ", ".join(f"{name} {count}" for name, count in stats["lists"].items())
    print(f"prepared {how}")
    print(f"wrote {args.out}: {stats['events']} events, {stats['clicks']} clicks -> lists: {lists}")
    return 0
