"""Write the candidate slate of a prepared list, with vectors from a run's ItemEncoder.

    dir-cloud slate --run RUN --split test --row 0 --out SLATE_DIR

Writes SLATE_DIR/slate.json (a CandidateSlate for `dir-device rerank --slate`) and
SLATE_DIR/history.jsonl (that user's device-view behaviours with vectors, for `dir-device record --events`).
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


def run(args: argparse.Namespace) -> int:
    from cloud.data.prepared import PreparedData
    from cloud.runs import load_run
    from cloud.slates import slate_for_list

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
