"""Convert MovieLens ratings into a LOGS folder with genre-grouped sources.

    dir-cloud movielens --ratings ml-latest-small/ratings.csv --movies ml-latest-small/movies.csv --out logs
    dir-cloud movielens --ratings ml-100k/u.data --movies ml-100k/u.item --out logs --sources 4
    dir-cloud movielens --ratings ml-1m/ratings.dat --movies ml-1m/movies.dat --out logs --threshold 5

Reads ml-latest(-small), ML-100K and ML-1M (told apart by file name or first line). Every rating is an
event with label = rating >= --threshold; lists are sampled (1 click + 9 negatives). A movie's source
is that of its first genre; genres are grouped into --sources sources with balanced rating counts, and
the target shares are the sources' shares of ratings (rules: docs/movielens.md). The MovieLens license
allows research use only and no redistribution outside its terms: keep the output out of the repository.
"""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ratings", required=True, help="ratings.csv, u.data or ratings.dat")
    parser.add_argument("--movies", required=True, help="movies.csv, u.item or movies.dat")
    parser.add_argument("--out", required=True, help="LOGS folder to write (must not exist or be empty)")
    parser.add_argument("--sources", type=int, default=3, help="number of sources (default %(default)s)")
    parser.add_argument(
        "--threshold", type=float, default=4.0, help="a rating >= this is a click (default %(default)s)"
    )
    parser.add_argument("--name", default="", help="dataset name (default: movielens-<format>)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")


def run(args: argparse.Namespace) -> int:
    from cloud.data.logs_writer import check_out
    from cloud.data.movielens import convert, detect_format, read_movies, read_ratings, write_logs

    check_out(args.out, args.force)
    start = time.perf_counter()
    ratings, movies = read_ratings(args.ratings), read_movies(args.movies)
    name = args.name or f"movielens-{detect_format(args.ratings)}"
    tables = convert(
        ratings, movies, sources=args.sources, threshold=args.threshold, name=name, ratings_name=str(args.ratings)
    )
    out = write_logs(tables, args.out, force=args.force)
    shares = ", ".join(f"{s.name} {s.target_share:.3f}" for s in tables.spec.sources)
    print(
        f"wrote {out}: {len(tables.items)} movies, {tables.events['user_id'].nunique()} users, "
        f"{len(tables.events)} events ({tables.events['label'].mean():.3f} clicks); "
        f"sources: {shares} ({time.perf_counter() - start:.1f} s)"
    )
    return 0
