"""MovieLens ratings -> a LOGS folder whose sources are groups of genres (rule: docs/movielens.md).

    ratings, movies = read_ratings("ml/ratings.csv"), read_movies("ml/movies.csv")
    tables = convert(ratings, movies, sources=3, threshold=4.0)
    write_logs(tables, "logs")

Reads ml-latest(-small) (`ratings.csv`, `movies.csv`), ML-100K (`u.data`, `u.item`) and ML-1M
(`ratings.dat`, `movies.dat`); the format is told by the file name, else by the first line. Every rating
is an event (label = rating >= threshold); lists are sampled (1 click + 9 negatives), as DIR does for
datasets without logged lists. A movie belongs to the source of its first listed genre; genres are
grouped into sources so that the sources' rating counts are balanced.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cloud.data.logs_writer import write_logs_folder
from shared_schema.specs import CategoricalField, DatasetSpec, DenseField, SourceSpec

GENRES_100K = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
_YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass(frozen=True)
class MovieLensTables:
    spec: DatasetSpec
    items: pd.DataFrame
    events: pd.DataFrame
    genre_source: dict[str, str]  # primary genre -> source name
    genre_vocab: list[str]  # genre of each multi-hot column genres_0, genres_1, ...
    threshold: float


def detect_format(path: str | Path) -> str:
    """'latest', '100k' or '1m' from the file name (ratings.csv / u.data / ratings.dat) or its first line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; give the MovieLens ratings or movies file")
    name = path.name.lower()
    if name.startswith("u.") or name.endswith(".data"):
        return "100k"
    if name.endswith(".dat"):
        return "1m"
    with path.open(encoding="latin-1") as fh:
        first = fh.readline()
    for marker, fmt in (("::", "1m"), ("\t", "100k"), ("|", "100k"), (",", "latest")):
        if marker in first:
            return fmt
    raise ValueError(
        f"{path}: cannot tell the MovieLens format; expected ratings.csv/movies.csv "
        "(ml-latest), u.data/u.item (ML-100K) or ratings.dat/movies.dat (ML-1M)"
    )


def read_ratings(path: str | Path) -> pd.DataFrame:
    """Ratings as columns user, item (text ids), rating (float), ts (int seconds)."""
    path, fmt = Path(path), detect_format(path)
    raw = _read(path, fmt, ["userId", "movieId", "rating", "timestamp"] if fmt == "latest" else 4)
    raw = raw.iloc[:, :4].set_axis(["user", "item", "rating", "ts"], axis=1)
    if raw.empty:
        raise ValueError(f"{path}: no ratings; give a non-empty MovieLens ratings file")
    out = pd.DataFrame({"user": raw["user"].str.strip(), "item": raw["item"].str.strip()})
    for column, kind in (("rating", "rating"), ("ts", "timestamp")):
        values = pd.to_numeric(raw[column], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if len(bad):
            line = bad[0] + (2 if fmt == "latest" else 1)
            raise ValueError(
                f"{path}: line {line}: {kind} {raw[column].iloc[bad[0]]!r} is not a number; "
                "fix the file or give the original MovieLens file"
            )
        out[column] = values.to_numpy()
    out["ts"] = out["ts"].astype(np.int64)
    return out


def read_movies(path: str | Path) -> pd.DataFrame:
    """Movies as columns item (text id), title, genres (list of str, data order), year (float, NaN if unknown)."""
    path, fmt = Path(path), detect_format(path)
    if fmt == "latest":
        raw = _read(path, fmt, ["movieId", "title", "genres"])
        genres = [g.split("|") if g else [] for g in raw["genres"]]
    elif fmt == "1m":
        raw = _read(path, fmt, 3).set_axis(["movieId", "title", "genres"], axis=1)
        genres = [g.split("|") if g else [] for g in raw["genres"]]
    else:
        raw = _read(path, fmt, 5 + len(GENRES_100K))
        flags = raw.iloc[:, 5:].to_numpy() == "1"
        genres = [[g for g, on in zip(GENRES_100K, row) if on] for row in flags]
        raw = raw.rename(columns={0: "movieId", 1: "title", 2: "release"})
    year = raw["title"].str.extract(_YEAR, expand=False)
    if "release" in raw:  # ML-100K: "01-Jan-1995"
        year = year.fillna(raw["release"].str.extract(r"(\d{4})\s*$", expand=False))
    movies = pd.DataFrame(
        {
            "item": raw["movieId"].str.strip(),
            "title": raw["title"],
            "genres": genres,
            "year": pd.to_numeric(year, errors="coerce"),
        }
    )
    repeated = movies["item"].duplicated()
    if repeated.any():
        raise ValueError(
            f"{path}: movie id {movies['item'][repeated].iloc[0]!r} appears twice; "
            "give the original MovieLens movies file"
        )
    return movies


def _read(path: Path, fmt: str, expect: list[str] | int) -> pd.DataFrame:
    """Read a MovieLens table as text; check its header names or its number of columns."""
    try:
        if fmt == "latest":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        else:
            text = path.read_text(encoding="latin-1")
            sep = {"1m": "::", "100k": "|" if "|" in text.split("\n", 1)[0] else "\t"}[fmt]
            frame = pd.read_csv(
                io.StringIO(text.replace(sep, "\x1f")),
                sep="\x1f",
                header=None,
                dtype=str,
                keep_default_na=False,
                quoting=csv.QUOTE_NONE,
            )
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"{path}: empty file; give the original MovieLens file") from exc
    except pd.errors.ParserError as exc:
        raise ValueError(f"{path}: malformed ({exc}); give the original MovieLens file") from exc
    if isinstance(expect, list):  # ml-latest: a header row
        missing = [c for c in expect if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{path}: line 1: missing column(s) {missing}; ml-latest files have the header {','.join(expect)}"
            )
        return frame[expect]
    if frame.shape[1] < expect:
        raise ValueError(
            f"{path}: {frame.shape[1]} columns separated by {sep!r}, expected {expect}; "
            "give the original MovieLens file"
        )
    return frame


def group_genres(counts: pd.Series, sources: int) -> dict[str, int]:
    """Assign genres to `sources` groups balancing the counts (largest genre first, to the lightest group).

    Ties break by genre name, then by the lower group index, so the result is deterministic.
    """
    counts = counts[counts > 0]
    if sources < 1 or sources > len(counts):
        raise ValueError(
            f"--sources {sources}: must be between 1 and the number of primary genres with ratings ({len(counts)})"
        )
    load = np.zeros(sources)
    group = {}
    for genre, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        group[genre] = int(np.argmin(load))
        load[group[genre]] += count
    return group


def convert(
    ratings: pd.DataFrame,
    movies: pd.DataFrame,
    sources: int = 3,
    threshold: float = 4.0,
    name: str = "movielens",
    ratings_name: str = "ratings",
) -> MovieLensTables:
    """Build the LOGS tables: genre-grouped sources, item features, one event per rating."""
    known = ratings["item"].isin(movies["item"])
    if not known.all():
        missing = ratings.loc[~known, "item"]
        raise ValueError(
            f"{ratings_name}: {len(missing)} ratings of movie ids missing from the movies file "
            f"(first: {missing.iloc[0]!r}); give the movies file of the same MovieLens release"
        )
    movies = movies[movies["item"].isin(ratings["item"])].reset_index(drop=True)
    movies["genres"] = movies["genres"].map(lambda g: g or ["(no genres listed)"])
    primary = movies["genres"].str[0]
    per_movie = ratings["item"].value_counts().reindex(movies["item"]).to_numpy()
    counts = pd.Series(per_movie).groupby(primary.to_numpy()).sum()
    group = group_genres(counts, sources)
    loads = np.bincount([group[g] for g in counts.index], weights=counts.to_numpy(), minlength=sources)
    names = _source_names(group, counts, sources)
    vocab = sorted({g for genres in movies["genres"] for g in genres})
    spec = DatasetSpec(
        name=name,
        list_mode="sampled",
        sources=tuple(
            SourceSpec(
                name=names[s],
                target_share=float(loads[s] / loads.sum()),
                categorical=(CategoricalField(name="genre"), CategoricalField(name="year")),
                dense=(DenseField(name="genres", dim=len(vocab)),),
            )
            for s in range(sources)
        ),
    )
    items = _items(movies, primary, [names[group[g]] for g in primary], vocab)
    events = pd.DataFrame(
        {
            "user_id": ratings["user"],
            "item_id": ratings["item"],
            "timestamp": ratings["ts"],
            "label": (ratings["rating"] >= threshold).astype(np.int8),
        }
    ).sort_values(["timestamp", "user_id"], kind="stable", ignore_index=True)
    return MovieLensTables(spec, items, events, {g: names[s] for g, s in group.items()}, vocab, threshold)


def write_logs(tables: MovieLensTables, out: str | Path, force: bool = False) -> Path:
    """Write `tables` as a LOGS folder (atomic; refuses a non-empty `out` unless `force`)."""
    by_source = {s: sorted(g for g, name in tables.genre_source.items() if name == s) for s in tables.spec.source_names}
    hot = [c for c in tables.items.columns if c.startswith("genres")]
    return write_logs_folder(
        out,
        tables.spec,
        {"items.csv": tables.items, "events.csv": tables.events},
        comments=[
            "MovieLens ratings converted by `dir-cloud movielens` (rules: docs/movielens.md).",
            f"label = rating >= {tables.threshold}; a movie's source is that of its first genre:",
            *(f"  {s}: {', '.join(genres)}" for s, genres in by_source.items()),
            f"dense genres columns: {', '.join(f'{c}={g}' for c, g in zip(hot, tables.genre_vocab))}",
        ],
        force=force,
    )


def _source_names(group: dict[str, int], counts: pd.Series, sources: int) -> list[str]:
    """Each source is named after its most-rated genre, e.g. 'drama', 'sci_fi'."""
    names = []
    for s in range(sources):
        biggest = max((g for g in group if group[g] == s), key=lambda g: (counts[g], g))
        slug = re.sub(r"[^a-z0-9]+", "_", biggest.lower()).strip("_") or "other"
        names.append(slug if slug[0].isalpha() else f"g_{slug}")
    return names


def _items(movies: pd.DataFrame, primary: pd.Series, source: list[str], vocab: list[str]) -> pd.DataFrame:
    """items.csv: item_id, source, genre (primary), year (decade), genres_0.. (multi-hot over `vocab`)."""
    index = {g: j for j, g in enumerate(vocab)}
    hot = np.zeros((len(movies), len(vocab)), np.int8)
    for i, genres in enumerate(movies["genres"]):
        hot[i, [index[g] for g in genres]] = 1
    decade = movies["year"].map(lambda y: "" if np.isnan(y) else f"{int(y) // 10 * 10}s")
    items = pd.DataFrame({"item_id": movies["item"], "source": source, "genre": primary, "year": decade})
    columns = DenseField(name="genres", dim=len(vocab)).columns()
    return pd.concat([items, pd.DataFrame(hot, columns=columns)], axis=1)
