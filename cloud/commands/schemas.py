"""Write the JSON Schema files of the wire messages (CandidateSlate, BehaviorEvent, RerankResult, ...).

    dir-cloud schemas --out docs/schemas           # regenerate after changing shared_schema
    dir-cloud schemas --out docs/schemas --check   # exit 1 if a committed file is out of date

The fields are explained in docs/slate.md.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="docs/schemas", help="folder for <Message>.json (default: %(default)s)")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 and name the files that are missing or out of date"
    )


def run(args: argparse.Namespace) -> int:
    from shared_schema.schemas import stale_schemas, write_schemas

    if args.check:
        stale = stale_schemas(args.out)
        if stale:
            print(
                f"{args.out}: out of date: {', '.join(stale)}; run `dir-cloud schemas --out {args.out}`",
                file=sys.stderr,
            )
            return 1
        print(f"{args.out}: every schema is current")
        return 0
    for path in write_schemas(args.out):
        print(path)
    return 0
