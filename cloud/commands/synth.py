"""Write a synthetic multi-source LOGS folder with a known click model.

    dir-cloud synth --out logs --seed 0                  # 3,000 users, ~470k events, 36,000 lists, seconds
    dir-cloud synth --out big --seed 1 --users 15000     # ~2.3M events
    dir-cloud synth --out huge --users 640000 --format parquet   # ~100M events, streamed, bounded memory

Three heterogeneous sources (video, article, ad) share a latent topic space; users' interests drift,
30% of users have a cold source, clicks follow position bias and a listwise context effect, and
events.csv carries the true click probability. The world model is described in docs/synthetic.md.
"""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cloud.data.synth import SynthConfig  # light: numpy and pandas only

    defaults = SynthConfig()
    parser.add_argument("--out", required=True, help="LOGS folder to write (must not exist or be empty)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    parser.add_argument("--users", type=int, default=defaults.users, help="number of users (default %(default)s)")
    parser.add_argument(
        "--lists-per-user",
        type=int,
        default=defaults.lists_per_user,
        help="requests per user logged as full lists (default %(default)s)",
    )
    parser.add_argument(
        "--requests-per-user",
        type=int,
        default=defaults.requests_per_user,
        help="requests per user; unlogged ones leave only their clicks (default %(default)s)",
    )
    parser.add_argument(
        "--cold-fraction",
        type=float,
        default=defaults.cold_fraction,
        help="share of users with a cold source (default %(default)s)",
    )
    parser.add_argument("--name", default=defaults.name, help="dataset name in dataset.toml (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")
    parser.add_argument(
        "--format",
        choices=("csv", "parquet"),
        default="csv",
        help="csv: generated in memory; parquet: streamed in chunks of users with bounded memory, "
        "resumable (needs the scale extra) (default %(default)s)",
    )
    parser.add_argument(
        "--chunk-users",
        type=int,
        default=4096,
        help="--format parquet: users generated per chunk, a multiple of 512; the result does not "
        "depend on it (default %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    from cloud.data.logs_writer import check_out
    from cloud.data.synth import SynthConfig, generate, stream_parquet_logs, write_logs

    check_out(args.out, args.force)
    config = SynthConfig(
        seed=args.seed,
        users=args.users,
        lists_per_user=args.lists_per_user,
        requests_per_user=args.requests_per_user,
        cold_fraction=args.cold_fraction,
        name=args.name,
    )
    start = time.perf_counter()
    if args.format == "parquet":
        counts = stream_parquet_logs(config, args.out, force=args.force, chunk_users=args.chunk_users)
        print(
            f"wrote {args.out}: {counts['items']} items, {counts['users']} users, {counts['events']} events "
            f"as Parquet ({time.perf_counter() - start:.1f} s)"
        )
        return 0
    tables = generate(config)
    out = write_logs(tables, args.out, force=args.force)
    events = tables.events
    shown = events[events["list_id"] != ""]
    print(
        f"wrote {out}: {len(tables.items)} items, {len(tables.users)} users, {len(events)} events, "
        f"{shown['list_id'].nunique()} logged lists, click rate {shown['label'].mean():.3f} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    return 0
