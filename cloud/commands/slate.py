"""Write the candidate slate of a prepared list, or of chosen items, with vectors from a run's ItemEncoder.

    dir-cloud slate --run RUN --split test --row 0 --out SLATE_DIR
    dir-cloud slate --run RUN --items ids.json --user u000042 --out SLATE_DIR

Writes SLATE_DIR/slate.json (a CandidateSlate for `dir-device rerank --slate`) and, for a prepared list,
SLATE_DIR/history.jsonl (that user's device-view behaviours with vectors, for `dir-device record --events`).
With --items, the slate holds exactly the item ids of the file per source, in its order
(`{"video": ["v1", "v2"], "article": ["a7"]}`, as for `dir-cloud vectors`); unknown ids are an error.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder written by dir-cloud train")
    parser.add_argument("--split", choices=["train", "valid", "test"], default="test", help="split of the list")
    parser.add_argument("--row", type=int, default=0, help="list index within the split")
    parser.add_argument("--data", help="prepared data folder (default: the run's)")
    parser.add_argument("--out", required=True, help="folder for slate.json and history.jsonl")
    parser.add_argument(
        "--items",
        metavar="FILE",
        help="JSON item ids per source to put in the slate (default: none, the prepared list --split/--row)",
    )
    parser.add_argument("--user", default="user", help="user_id of an --items slate (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from cloud.data.prepared import PreparedData
    from cloud.service.slates import slate_for_list
    from cloud.training.runs import load_run

    if args.items:
        return _items_slate(args)
    run = load_run(args.run)
    data = PreparedData(args.data or run.config["data"])
    slate, history = slate_for_list(run.model, data, args.split, args.row, run.embedding_version)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "slate.json").write_text(slate.model_dump_json(indent=1))
    (out / "history.jsonl").write_text("".join(event.model_dump_json() + "\n" for event in history))
    counts = {s.source: len(s.items) for s in slate.sources}
    print(f"slate for user {slate.user_id}: candidates per source {counts}, {len(history)} history behaviours -> {out}")
    return 0


def _items_slate(args: argparse.Namespace) -> int:
    from cloud.commands.vectors import read_item_ids
    from cloud.service.state import CloudService

    slate = CloudService.load(args.run, args.data).items_slate(args.user, read_item_ids(args.items))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "slate.json").write_text(slate.model_dump_json(indent=1))
    counts = {s.source: len(s.items) for s in slate.sources}
    print(f"slate of the chosen items for user {slate.user_id}: candidates per source {counts} -> {out}")
    return 0
