"""MovieLens -> LOGS: the three file formats, genre grouping, labels, and the real ml-latest-small."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cloud.cli import build_parser
from cloud.data.logs import read_logs
from cloud.data.movielens import (
    GENRES_100K,
    convert,
    detect_format,
    group_genres,
    read_movies,
    read_ratings,
    write_logs,
)
from tests.helpers.movielens import MOVIELENS

REAL = MOVIELENS


def _run_cli(*argv: str) -> int:
    args = build_parser({"movielens": "cloud.commands.movielens"}).parse_args(["movielens", *argv])
    return args._run(args)


@pytest.fixture
def ml100k(tmp_path):
    """A tiny ML-100K release: tab-separated u.data, pipe-separated latin-1 u.item with genre flags."""

    def flags(*genres):
        return "|".join("1" if g in genres else "0" for g in GENRES_100K)

    (tmp_path / "u.data").write_text(
        "1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t881250951\n"
        "2\t30\t2\t881250952\n3\t40\t4\t881250953\n3\t20\t1\t881250954\n",
        encoding="latin-1",
    )
    (tmp_path / "u.item").write_text(
        f"10|Café Society (1995)|01-Jan-1995||http://x|{flags('Action', 'Comedy')}\n"
        f"20|Les Misérables (1998)|01-Jan-1998||http://x|{flags('Comedy')}\n"
        f"30|Drama Film (1977)|01-Jan-1977||http://x|{flags('Drama', 'War')}\n"
        f"40|Untitled|01-Jan-1971||http://x|{flags('unknown')}\n"
        f"50|Never Rated (1990)|01-Jan-1990||http://x|{flags('Drama')}\n",
        encoding="latin-1",
    )
    return tmp_path / "u.data", tmp_path / "u.item"


@pytest.fixture
def ml1m(tmp_path):
    """A tiny ML-1M release: '::'-separated latin-1 ratings.dat and movies.dat."""
    (tmp_path / "ratings.dat").write_text(
        "1::10::5::978300760\n1::20::3::978300761\n2::20::4::978300762\n2::30::5::978300763\n", encoding="latin-1"
    )
    (tmp_path / "movies.dat").write_text(
        "10::Amélie (2001)::Comedy|Romance\n20::Heat (1995)::Action|Crime|Thriller\n"
        "30::Toy Story (1995)::Animation|Children's|Comedy\n",
        encoding="latin-1",
    )
    return tmp_path / "ratings.dat", tmp_path / "movies.dat"


def test_ml100k_files_are_parsed(ml100k):
    ratings, movies = read_ratings(ml100k[0]), read_movies(ml100k[1])
    assert detect_format(ml100k[0]) == detect_format(ml100k[1]) == "100k"
    assert ratings.to_dict("list") == {
        "user": ["1", "1", "2", "2", "3", "3"],
        "item": ["10", "20", "10", "30", "40", "20"],
        "rating": [5.0, 3.0, 4.0, 2.0, 4.0, 1.0],
        "ts": [881250949 + i for i in range(6)],
    }
    assert movies["title"][0] == "Café Society (1995)"
    assert movies["genres"].tolist() == [["Action", "Comedy"], ["Comedy"], ["Drama", "War"], ["unknown"], ["Drama"]]
    assert movies["year"].tolist() == [1995, 1998, 1977, 1971, 1990]  # 40: from the release date


def test_ml1m_files_are_parsed(ml1m):
    ratings, movies = read_ratings(ml1m[0]), read_movies(ml1m[1])
    assert detect_format(ml1m[0]) == "1m"
    assert ratings["rating"].tolist() == [5.0, 3.0, 4.0, 5.0] and ratings["ts"].dtype == np.int64
    assert movies["title"][0] == "Amélie (2001)"
    assert movies["genres"][2] == ["Animation", "Children's", "Comedy"]
    assert movies["year"].tolist() == [2001, 1995, 1995]


def test_format_is_told_by_content_when_the_name_says_nothing(tmp_path, ml1m):
    renamed = tmp_path / "ratings.txt"
    renamed.write_bytes(ml1m[0].read_bytes())
    assert detect_format(renamed) == "1m"
    odd = tmp_path / "odd.txt"
    odd.write_text("a;b;c\n")
    with pytest.raises(ValueError, match="cannot tell the MovieLens format"):
        detect_format(odd)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_ratings(tmp_path / "missing.csv")


def test_labels_follow_the_threshold(ml100k):
    ratings, movies = read_ratings(ml100k[0]), read_movies(ml100k[1])
    for threshold, clicks in ((4.0, 3), (3.0, 4), (5.0, 1)):
        events = convert(ratings, movies, sources=2, threshold=threshold).events
        assert events["label"].sum() == clicks
        assert set(events["label"]) <= {0, 1}


def test_small_release_converts_to_valid_logs(tmp_path, ml100k):
    out = tmp_path / "logs"
    assert _run_cli("--ratings", str(ml100k[0]), "--movies", str(ml100k[1]), "--out", str(out), "--sources", "2") == 0
    logs = read_logs(out)
    assert logs.spec.name == "movielens-100k" and logs.spec.list_mode == "sampled"
    assert (logs.spec.n, logs.spec.t, logs.spec.K, logs.spec.lag, logs.spec.negatives) == (10, 20, 5, 3, 9)
    assert sum(logs.spec.target_shares) == pytest.approx(1.0)
    assert all(len(logs.items[s]) > 0 for s in logs.spec.source_names)
    items = pd.read_csv(out / "items.csv", dtype=str, keep_default_na=False)
    assert "50" not in set(items["item_id"])  # never rated
    assert items.set_index("item_id").loc["10", "year"] == "1990s"
    assert len(logs.events) == 6 and logs.events.label.sum() == 3
    with pytest.raises(FileExistsError, match="--force"):
        _run_cli("--ratings", str(ml100k[0]), "--movies", str(ml100k[1]), "--out", str(out))


def test_ml1m_converts_and_the_reader_accepts_it(tmp_path, ml1m):
    tables = convert(read_ratings(ml1m[0]), read_movies(ml1m[1]), sources=3, threshold=4.0)
    logs = read_logs(write_logs(tables, tmp_path / "logs"))
    assert sorted(logs.spec.source_names) == ["action", "animation", "comedy"]
    assert logs.spec.sources[0].dense[0].dim == 7  # genres of the rated movies
    assert logs.events.label.tolist() == [1, 0, 1, 1]


def test_genres_are_grouped_to_balance_ratings():
    counts = pd.Series({"A": 10, "B": 6, "C": 5, "D": 4, "E": 1})
    assert group_genres(counts, 2) == {"A": 0, "B": 1, "C": 1, "D": 0, "E": 1}  # loads 14 and 12
    assert set(group_genres(counts, 5).values()) == set(range(5))
    with pytest.raises(ValueError, match="--sources 6"):
        group_genres(counts, 6)


def test_bad_input_names_the_file_and_the_fix(tmp_path, ml100k):
    ratings, movies = read_ratings(ml100k[0]), read_movies(ml100k[1])
    with pytest.raises(ValueError, match="missing from the movies file.*'40'"):
        convert(ratings, movies[movies["item"] != "40"], ratings_name="u.data")
    bad = tmp_path / "ratings.csv"
    bad.write_text("userId,movieId,rating,timestamp\n1,10,4.0,100\n1,20,great,101\n")
    with pytest.raises(ValueError, match=r"ratings.csv: line 3: rating 'great'"):
        read_ratings(bad)
    bad.write_text("user,movie,stars\n1,10,4\n")
    with pytest.raises(ValueError, match="missing column"):
        read_ratings(bad)
    empty = tmp_path / "ratings.dat"
    empty.write_text("")
    with pytest.raises(ValueError, match="ratings.dat: empty file"):
        read_ratings(empty)


@pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} is absent (the shared MovieLens copy is not mounted)")
def test_ml_latest_small_end_to_end(tmp_path):
    out = tmp_path / "logs"  # never inside the repository: the license forbids redistributing the data
    assert (
        _run_cli("--ratings", str(REAL / "ratings.csv"), "--movies", str(REAL / "movies.csv"), "--out", str(out)) == 0
    )
    logs = read_logs(out)
    raw = pd.read_csv(REAL / "ratings.csv")
    first_genre = pd.read_csv(REAL / "movies.csv").set_index("movieId")["genres"].str.split("|").str[0]

    assert logs.spec.m == 3 and logs.spec.list_mode == "sampled"
    assert len(logs.events) == len(raw) == 100004
    assert logs.events.label.sum() == (raw["rating"] >= 4.0).sum()
    items = pd.read_csv(out / "items.csv", dtype=str, keep_default_na=False)
    assert items["item_id"].is_unique and len(items) == raw["movieId"].nunique()
    assert items.groupby("genre")["source"].nunique().max() == 1  # one source per primary genre
    assert (items["genre"] == first_genre.loc[items["item_id"].astype(int)].to_numpy()).all()

    shares = np.array(logs.spec.target_shares)
    assert shares.sum() == pytest.approx(1.0) and (shares > 0.2).all()  # balanced, none empty
    source_of = items.set_index("item_id")["source"]
    rated = source_of.loc[raw["movieId"].astype(str)].value_counts(normalize=True)
    assert [rated[s] for s in logs.spec.source_names] == pytest.approx(shares.tolist())
    for s in logs.spec.source_names:
        assert len(logs.items[s]) > 100
        assert logs.items[s].dense.shape[1] == 20 and (logs.items[s].dense.sum(axis=1) >= 1).all()
