"""Write an offline slate pool for the feed app from a trained run (cloud side: needs torch).

    python -m examples.feed_app.build_pool --run out/run --out out/feed_app/pool [--user u00042]

One user's logged lists, in time order over all splits, become POOL/000/slate.json, POOL/001/slate.json...
(the format of `dir-cloud slate`), with the item vectors of the run's ItemEncoder; POOL/000/history.jsonl
holds that user's behaviours before the first list, which the app loads into an empty history store.
POOL/catalog.csv gives every candidate a title and a short description for the feed's cards: from
`--titles movies.csv` (a CSV with a `title` column, an `item_id` or `movieId` column and optionally
`genres`, as MovieLens has), else generated from the item's source and its first categorical feature
(synthetic items: "Travel video #0123", "an article about travel").
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from shared_schema.files import replace_dir

SPLITS = ("train", "valid", "test")
CATALOG = "catalog.csv"
TOPICS = (
    "Travel",
    "Cooking",
    "Football",
    "Jazz",
    "Gardening",
    "Astronomy",
    "Chess",
    "Photography",
    "Cycling",
    "Baking",
    "History",
    "Robotics",
    "Fashion",
    "Hiking",
    "Climate",
    "Cinema",
    "Poetry",
    "Startups",
    "Tennis",
    "Architecture",
    "Wildlife",
    "Gaming",
    "Medicine",
    "Sailing",
)
"""Readable names for categorical values: value v is TOPICS[(v - 1) % len(TOPICS)] (0 = unknown)."""


def build_pool(
    run_dir: str | Path,
    out: str | Path,
    data_dir: str | Path | None = None,
    user: str | None = None,
    max_slates: int = 30,
    titles: str | Path | None = None,
    force: bool = False,
) -> dict:
    """Write the pool folder atomically; returns {"user", "slates", "history"} counts."""
    from cloud.data.prepared import PreparedData
    from cloud.service.slates import slate_for_list
    from cloud.training.runs import load_run

    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out}: already exists; pass --force to replace it or choose another --out")
    if max_slates < 1:
        raise ValueError(f"max_slates must be >= 1, got {max_slates}")
    run = load_run(run_dir)
    data = PreparedData(data_dir or run.config["data"])
    lists = _user_lists(data, user)[:max_slates]
    names = read_titles(Path(titles)) if titles else {}
    rows = {
        source: {item_id: i for i, item_id in enumerate(data.items(source).ids)} for source in data.spec.source_names
    }
    catalog: dict[tuple[str, str], tuple[str, str]] = {}
    with replace_dir(out, force) as tmp:
        for number, (_, split, row) in enumerate(lists):
            slate, history = slate_for_list(run.model, data, split, row, run.embedding_version)
            for entry in slate.sources:
                for item in entry.items:
                    key = (entry.source, item.item_id)
                    if key not in catalog:
                        catalog[key] = names.get(item.item_id) or generated_title(
                            data, entry.source, rows[entry.source][item.item_id]
                        )
                entry.items = [
                    item.model_copy(update={"title": catalog[entry.source, item.item_id][0]}) for item in entry.items
                ]
            folder = tmp / f"{number:03d}"
            folder.mkdir()
            (folder / "slate.json").write_text(slate.model_dump_json(indent=1), encoding="utf-8")
            if number == 0:
                (folder / "history.jsonl").write_text(
                    "".join(e.model_dump_json() + "\n" for e in history), encoding="utf-8"
                )
                seeded = len(history)
        with open(tmp / CATALOG, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["source", "item_id", "title", "description"])
            writer.writerows([source, item_id, title, text] for (source, item_id), (title, text) in catalog.items())
    return {"user": slate.user_id, "slates": len(lists), "history": seeded}


def _user_lists(data, user: str | None) -> list[tuple[float, str, int]]:
    """(ts, split, row) of one user's lists in time order: `user`, or the user with the most lists."""
    users = np.asarray(data.users())
    per_split = {split: np.asarray(data.split(split)["user"]) for split in SPLITS}
    if user is None:
        counts = np.bincount(np.concatenate(list(per_split.values())), minlength=len(users))
        index = int(np.argmax(counts))
    else:
        found = np.flatnonzero(users == user)
        if not len(found):
            raise ValueError(f"user {user!r} is not in the prepared data (e.g. {', '.join(map(str, users[:3]))})")
        index = int(found[0])
    lists = [
        (float(data.split(split)["ts"][row]), split, int(row))
        for split, column in per_split.items()
        for row in np.flatnonzero(column == index)
    ]
    if not lists:
        raise ValueError(f"user {users[index]!r} has no logged lists; pick another --user")
    return sorted(lists)


def generated_title(data, source: str, row: int) -> tuple[str, str]:
    """(title, description) of item `row` of `source` from its source and first categorical feature."""
    spec = data.spec.sources[data.spec.source_names.index(source)]
    item_id = str(data.items(source).ids[row])
    number = "".join(ch for ch in item_id if ch.isdigit()) or item_id
    if not spec.categorical:
        return f"{source.capitalize()} #{number}", f"a {source} item ({item_id})"
    value = int(data.items(source).categorical[row, 0])
    topic = TOPICS[(value - 1) % len(TOPICS)] if value > 0 else "Something new"
    return (
        f"{topic} {source} #{number}",
        f"{'an' if source[0] in 'aeiou' else 'a'} {source} about {topic.lower()} ({spec.categorical[0].name} {value})",
    )


def read_titles(path: Path) -> dict[str, tuple[str, str]]:
    """item id -> (title, description) from a CSV with a `title` column and an `item_id` (or MovieLens
    `movieId`) column; the description is the `genres` column (MovieLens: "Comedy|Drama") if there is one."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        key = next((k for k in ("item_id", "movieId") if k in fields), None)
        if key is None or "title" not in fields:
            raise ValueError(f"{path}: needs a `title` column and an `item_id` or `movieId` column, has {fields}")
        return {row[key]: (row["title"], " · ".join((row.get("genres") or "").split("|"))) for row in reader}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.feed_app.build_pool", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder written by `dir-cloud train`")
    parser.add_argument("--out", required=True, help="pool folder to write")
    parser.add_argument("--data", help="prepared data folder (default: the run's)")
    parser.add_argument("--user", help="user id (default: the user with the most lists)")
    parser.add_argument("--max-slates", type=int, default=30)
    parser.add_argument("--titles", help="CSV with item titles (e.g. MovieLens movies.csv)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    try:
        summary = build_pool(args.run, args.out, args.data, args.user, args.max_slates, args.titles, args.force)
    except (OSError, ValueError, KeyError) as exc:
        print(f"build_pool: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {summary['slates']} slates of user {summary['user']} and {summary['history']} history "
        f"behaviours to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
