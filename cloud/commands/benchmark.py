"""Train and evaluate a grid of models x history views x seeds; write the benchmark tables.

    dir-cloud benchmark --data DATA --models dir,dir-isi,dir-js --histories device,cloud --seeds 3 --out DIR
    dir-cloud benchmark --data DATA --models dir,din --seeds 0,1,2,3,4 --tuned TUNED --pages 500 --out DIR
    dir-cloud benchmark --data DATA --models dir --tuned TUNED --set hidden=64 --set beta=1.0 --out DIR

Each run lives in DIR/runs/MODEL-HISTORY-sSEED and ends by the patience rule on validation. A finished run is
reused only when its saved config equals the requested one (config hash); a run of another config is retrained
(the old one moved to DIR/replaced/), or with --reuse-only the command refuses and names the run and the
fields that differ. Interrupted, the same command continues where it stopped. --tuned TUNED trains each model
with the parameters `dir-cloud tune --out TUNED` found (a DIR ablation with DIR's, so that only the removed
component differs); --set KEY=VALUE changes one training field or model option on top of them (an experiment
on the tuned model); --pages USERS also scores every run by the true clicks of its device pages on USERS fresh
users of the synthetic world (cloud/evaluation/page_clicks.py; synthetic data only), each page built by the
model's own decoder or, with --page-merge, by another merge (score, quota, controller, beam_search). Writes
DIR/results.csv (one row per run), DIR/table.csv and DIR/table.md (cloud/evaluation/results.py: 95% CIs over
seeds, paired marks against dir).
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared data folder")
    parser.add_argument("--models", default="dir", help="comma-separated registry names")
    parser.add_argument("--histories", default="device,cloud", help="comma-separated: device, cloud")
    parser.add_argument("--seeds", default="3", help="number of seeds (0..N-1), or comma-separated seeds (e.g. 3,4)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--config", help="JSON or TOML TrainConfig applied to every run, e.g. docs/train-config.toml (default: none)"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="epoch cap (default: the config's, else 100; runs end by patience)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the per-run results and the summary as JSON instead of the table"
    )
    parser.add_argument(
        "--tuned",
        help="folder written by `dir-cloud tune --out`: each model's best parameters (default: none, the config's)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training field (lr, beta, ...) or model option (hidden, ...) over --tuned and --config, VALUE "
        "read as JSON, else text; repeatable (default: none)",
    )
    parser.add_argument(
        "--reuse-only",
        action="store_true",
        help="train nothing: fail, naming the run and fields, unless every run exists with this config",
    )
    parser.add_argument(
        "--pages",
        type=int,
        default=0,
        metavar="USERS",
        help="also score the device pages on USERS fresh simulated users (synthetic data; 0: off)",
    )
    parser.add_argument(
        "--page-merge",
        default="score",
        help="how --pages builds the page of a model whose decoder is the merge: the runtime's merge modes, or "
        "beam_search, SVR's decoder on its scores (an experiment; default: score, the runtime's default)",
    )
    parser.add_argument(
        "--page-block",
        type=int,
        default=0,
        metavar="B",
        help="which USERS fresh users --pages shows the pages to: 0, the first; 1, 2, ...: disjoint later sets of "
        "the same world, to confirm on new users what set 0 found (default: 0)",
    )
    parser.add_argument("--world-seed", type=int, default=0, help="--seed given to `dir-cloud synth` for DATA")


def run(args: argparse.Namespace) -> int:
    from cloud.evaluation.grids import run_grid

    if args.page_merge != "score" and not args.pages:
        raise ValueError("--page-merge: it builds the pages --pages USERS scores; give --pages too")
    if args.page_block and not args.pages:
        raise ValueError("--page-block: it picks the users --pages USERS shows pages to; give --pages too")
    if args.page_block < 0:
        raise ValueError(f"--page-block: expected 0 or more, got {args.page_block}")
    table = run_grid(
        args.data,
        _names(args.models),
        _names(args.histories),
        parse_seeds(args.seeds),
        args.out,
        config_file=args.config,
        epochs=args.epochs,
        reuse_only=args.reuse_only,
        tuned=args.tuned,
        page_users=args.pages,
        world_seed=args.world_seed,
        settings=parse_settings(args.set),
        page_merge=args.page_merge,
        page_block=args.page_block,
    )
    if args.json:
        from cloud.evaluation.csv_rows import read_csv_rows

        print(
            json.dumps(
                {
                    "out": args.out,
                    "results": read_csv_rows(f"{args.out}/results.csv"),
                    "summary": read_csv_rows(f"{args.out}/table.csv"),
                },
                indent=2,
            )
        )
    else:
        print(table)
    return 0


def parse_seeds(text: str) -> int | list[int]:
    try:
        parts = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"--seeds: expected a count (3) or seeds (0,1,2), got {text!r}") from None
    if not parts or min(parts) < 0 or ("," not in text and parts[0] < 1):
        raise ValueError(f"--seeds: expected a positive count or seeds >= 0, got {text!r}")
    return parts[0] if "," not in text else parts


def split_pair(item: str, option: str, form: str, example: str) -> tuple[str, str]:
    """The two stripped sides of an `option` item in the `form` KEY=VALUE; ValueError naming the option and
    the form unless both sides are there."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ValueError(f"{option}: expected {form} (e.g. {example}), got {item!r}")
    return key.strip(), value.strip()


def parse_settings(items: list[str], option: str = "--set") -> dict:
    """{KEY: VALUE} of KEY=VALUE items, VALUE read as JSON (64, 1.0, true, [0.5, 0.5]) or else as text; a
    malformed item's error names `option`."""
    settings = {}
    for item in items:
        key, value = split_pair(item, option, "KEY=VALUE", "hidden=64")
        try:
            settings[key] = json.loads(value)
        except ValueError:
            settings[key] = value
    return settings


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
