"""Item vectors from a run's ItemEncoder, without starting the service (what POST /v1/vectors answers).

    dir-cloud vectors --run RUN --items ids.json [--out vectors.json]

ids.json maps source names to item ids, `{"video": ["v1", "v2"], "article": ["a7"]}`, or is a POST
/v1/vectors body `{"ids": {...}}`. Prints (or writes to --out) an ItemVectors message: the known ids'
vectors per source, the unknown ids, the embedding version. For a slate of chosen items, see
`dir-cloud slate --items`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder written by `dir-cloud train`")
    parser.add_argument("--data", help="prepared data folder (default: the run's)")
    parser.add_argument(
        "--items", required=True, metavar="FILE", help='JSON: {"SOURCE": [ITEM_ID, ...], ...} or {"ids": {...}}'
    )
    parser.add_argument("--out", help="file for the ItemVectors JSON (default: print it)")


def read_item_ids(path: str | Path) -> dict[str, list[str]]:
    """Item ids per source from a JSON file (a bare mapping or a VectorRequest body), checked."""
    from shared_schema.service import VectorRequest

    try:
        raw = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    body = raw if isinstance(raw, dict) and set(raw) == {"ids"} else {"ids": raw}
    try:
        return VectorRequest.model_validate(body).ids
    except ValueError as exc:
        raise ValueError(f'{path}: expected {{"SOURCE": [ITEM_ID, ...]}}: {exc}') from None


def run(args: argparse.Namespace) -> int:
    from cloud.service.state import CloudService

    ids = read_item_ids(args.items)
    answer = CloudService.load(args.run, args.data).vectors(ids)
    text = answer.model_dump_json(indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
        counts = {s.source: len(s.items) for s in answer.sources}
        print(f"vectors per source {counts}, unknown {answer.unknown or 'none'} -> {args.out}")
    else:
        print(text)
    return 0
