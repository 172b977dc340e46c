"""Out-of-core and Ray prepare (cloud.data.prepare_scale): the same DATA as the in-memory path, the same errors.

Each LOGS folder is prepared once per path (module-scoped), then every pair of paths is compared: the
vocabularies, items and users, and per split the lists as sets keyed by (user, timestamp) with every
array compared after sorting. Ray runs locally on 2 CPUs, one session for the whole module.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cloud.cli import build_parser
from cloud.data.movielens import convert, read_movies, read_ratings
from cloud.data.movielens import write_logs as write_movielens
from cloud.data.prepare import prepare
from cloud.data.prepare_scale import (
    choose_engine,
    parse_size,
    prepare_logs,
    prepare_out_of_core,
)
from cloud.data.prepared import ARRAYS, SPLITS, PreparedData
from cloud.data.synth import SynthConfig, generate
from cloud.data.synth import write_logs as write_synth
from tests.helpers.logs import TINY_ITEMS, TINY_TOML, random_logs, write_logs
from tests.helpers.movielens import MOVIELENS

ray = pytest.importorskip("ray", reason="the scale extra is not installed: pip install -e '.[scale]'")
PATHS = ("memory", "duckdb", "ray")


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def run_path(path: str, logs: Path, out: Path, **kwargs) -> Path:
    if path == "memory":
        prepare(logs, out, **kwargs)
    else:
        prepare_out_of_core(logs, out, memory_limit=1 << 30, shards=3, ray="auto" if path == "ray" else None, **kwargs)
    return out


def assert_same_data(a: Path, b: Path) -> None:
    """Same dataset.json, items and users; per split the same lists keyed by (user, ts), arrays sorted."""
    meta_a, meta_b = (json.loads((p / "dataset.json").read_text()) for p in (a, b))
    assert meta_a == meta_b  # spec with the vocabularies, stats (split sizes and times), counts
    da, db = PreparedData(a), PreparedData(b)
    np.testing.assert_array_equal(da.users(), db.users())
    for source in da.spec.source_names:
        for field in ("ids", "categorical", "dense"):
            np.testing.assert_array_equal(getattr(da.items(source), field), getattr(db.items(source), field))
    for split in SPLITS:
        xa, xb = ({k: np.asarray(v) for k, v in d.split(split).items()} for d in (da, db))
        assert set(zip(xa["user"].tolist(), xa["ts"].tolist())) == set(zip(xb["user"].tolist(), xb["ts"].tolist()))
        oa, ob = map(by_user_ts, (xa, xb))
        for key in ARRAYS:
            np.testing.assert_array_equal(xa[key][oa], xb[key][ob], err_msg=f"{split}/{key}")


def by_user_ts(split: dict[str, np.ndarray]) -> np.ndarray:
    """The order of lists by user, timestamp, then candidates (lists of one user at one time)."""
    candidates = split["cand_item"].reshape(len(split["ts"]), -1)
    return np.lexsort((*candidates.T[::-1], split["ts"], split["user"]))


def _three_ways(logs: Path, folder: Path, request) -> dict[str, Path]:
    request.getfixturevalue("ray_session")
    return {path: run_path(path, logs, folder / path) for path in PATHS}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, request) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("synthetic")
    write_synth(generate(SynthConfig(seed=3, users=200)), folder / "logs")
    return _three_ways(folder / "logs", folder, request)


@pytest.fixture(scope="module")
def movielens(tmp_path_factory, request) -> dict[str, Path]:
    if not MOVIELENS.is_dir():
        pytest.skip(f"{MOVIELENS} is absent (the shared MovieLens copy is not mounted)")
    folder = tmp_path_factory.mktemp("movielens")  # converted LOGS live outside the repository
    write_movielens(
        convert(read_ratings(MOVIELENS / "ratings.csv"), read_movies(MOVIELENS / "movies.csv")), folder / "logs"
    )
    return _three_ways(folder / "logs", folder, request)


PAIRS = [("memory", "duckdb"), ("duckdb", "ray"), ("memory", "ray")]


@pytest.mark.slow
@pytest.mark.parametrize("a,b", PAIRS)
def test_synthetic_logged_same_every_way(synthetic, a, b):
    assert_same_data(synthetic[a], synthetic[b])
    assert PreparedData(synthetic[a]).stats["lists"]["test"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("a,b", PAIRS)
def test_movielens_sampled_same_every_way(movielens, a, b):
    assert_same_data(movielens[a], movielens[b])
    assert PreparedData(movielens[a]).spec.list_mode == "sampled"


@pytest.mark.parametrize("mode", ["logged", "sampled"])
def test_ties_and_shards(tmp_path, mode):
    """Many equal timestamps, 5 users over 4 shards (some shards empty), both list modes."""
    logs = random_logs(tmp_path / "logs", mode, seed=11)
    prepare(logs, tmp_path / "memory", seed=4)
    for shards in (1, 4):
        prepare_out_of_core(logs, tmp_path / f"duck{shards}", seed=4, memory_limit=1 << 28, shards=shards)
        assert_same_data(tmp_path / "memory", tmp_path / f"duck{shards}")


def test_parquet_logs_prepare_like_csv(tmp_path):
    """items/events/users as Parquet give the DATA of the CSV files, on both paths."""
    csv_logs = write_logs(tmp_path / "csv", users="user_id\nu2\nu1\n")
    parquet_logs = tmp_path / "parquet"
    parquet_logs.mkdir()
    (parquet_logs / "dataset.toml").write_text(TINY_TOML)
    for name in ("items", "events", "users"):
        frame = pd.read_csv(csv_logs / f"{name}.csv", dtype=str, keep_default_na=False)
        if name == "events":  # typed columns, nulls for unknown: read back as the CSV's text
            frame["timestamp"] = frame["timestamp"].astype(float)
            frame["label"] = frame["label"].astype(int)
            frame["position"] = pd.to_numeric(frame["position"]).astype("Int64")
        frame.to_parquet(parquet_logs / f"{name}.parquet", index=False)
    prepare(csv_logs, tmp_path / "from_csv")
    prepare(parquet_logs, tmp_path / "from_parquet")
    prepare_out_of_core(parquet_logs, tmp_path / "parquet_duckdb", memory_limit=1 << 28, shards=2)
    assert_same_data(tmp_path / "from_csv", tmp_path / "from_parquet")
    assert_same_data(tmp_path / "from_csv", tmp_path / "parquet_duckdb")
    assert list(PreparedData(tmp_path / "from_parquet").users()) == ["u2", "u1"]


BAD_EVENTS = {
    "unknown item": ("u1,v9,100,0,l1,0", "item_id 'v9' is not in items.csv"),
    "bad label": ("u1,v1,100,2,l1,0", "label must be 0 or 1"),
    "empty user": (",v1,100,0,l1,0", "user_id is empty"),
    "infinite timestamp": ("u1,v1,inf,0,l1,0", "column 'timestamp'"),
    "bad position": ("u1,v1,100,0,l1,-3", "column 'position' must be a non-negative integer"),
    "list of two users": ("u2,v1,100,0,L1,5", "has rows of two users"),
    "timestamp out of range": ("u1,v1,1e13,0,l1,0", "column 'timestamp' (timestamp (seconds)) must be a number within"),
    "position out of range": ("u1,v1,100,0,l1,3000000000", "column 'position' (non-negative integer) must be"),
    "item twice in a list": ("u1,v2,200,0,L1,5", "item_id 'v2' appears twice in list_id 'L1'"),
    "item twice in a list of two users": ("u2,v2,200,0,L1,5", "item_id 'v2' appears twice in list_id 'L1'"),
}


@pytest.mark.parametrize("case", sorted(BAD_EVENTS))
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_bad_events_same_error_every_path(tmp_path, case, suffix):
    logs = write_logs(tmp_path / "logs")
    row, expected = BAD_EVENTS[case]
    with (logs / "events.csv").open("a") as fh:
        fh.write(row + "\n")
    bad_line = len((logs / "events.csv").read_text().splitlines())
    if suffix == ".parquet":
        pd.read_csv(logs / "events.csv", dtype=str, keep_default_na=False).replace("", None).to_parquet(
            logs / "events.parquet", index=False
        )
        (logs / "events.csv").unlink()
    messages = []
    for engine in ("memory", "duckdb"):
        with pytest.raises(ValueError) as err:
            prepare_logs(logs, tmp_path / "data", engine=engine, memory_limit=1 << 28, shards=3)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert expected in messages[0] and f"events{suffix}: line" in messages[0]
    assert re.search(rf"\b{bad_line}:", messages[0])
    assert not (tmp_path / "data").exists() and [p.name for p in tmp_path.iterdir()] == ["logs"]  # nothing left


@pytest.mark.parametrize(
    "bad,expected",
    [
        (b"u1,v1,100,0,l\xe91,0\n", "line 30: byte 0xe9 is not UTF-8"),
        (b"u1,v1,100,0,l\x001,0\n", "line 30: a NUL byte"),
    ],
)
def test_encoding_errors_same_every_path(tmp_path, bad, expected):
    logs = write_logs(tmp_path / "logs")
    with (logs / "events.csv").open("ab") as fh:
        fh.write(bad)
    messages = []
    for engine in ("memory", "duckdb"):
        with pytest.raises(ValueError) as err:
            prepare_logs(logs, tmp_path / "data", engine=engine, memory_limit=1 << 28, shards=3)
        messages.append(str(err.value))
    assert messages[0] == messages[1] and f"events.csv: {expected}" in messages[0]
    assert [p.name for p in tmp_path.iterdir()] == ["logs"]


def test_logs_level_errors_same_every_path(tmp_path):
    no_lists = write_logs(tmp_path / "a", events="user_id,item_id,timestamp,label\nu1,v1,1,1\nu1,v2,2,0\n")
    missing_user = write_logs(tmp_path / "b", users="user_id\nu1\n")
    huge_dense = write_logs(tmp_path / "c", items=TINY_ITEMS.replace("v1,video,drama,0.1,", "v1,video,drama,1e39,"))
    for logs, expected in (
        (no_lists, "no row has a list_id"),
        (missing_user, "is not in users.csv"),
        (huge_dense, "items.csv: line 2: column 'emb_0' (dense feature of source 'video') must"),
    ):
        messages = []
        for engine in ("memory", "duckdb"):
            with pytest.raises(ValueError) as err:
                prepare_logs(logs, tmp_path / "data", engine=engine, memory_limit=1 << 28)
            messages.append(str(err.value))
        assert messages[0] == messages[1] and expected in messages[0]
    with (no_lists / "events.csv").open("a") as fh:
        fh.write("u1,v1,3,1,extra\n")
    with pytest.raises(ValueError, match="malformed CSV"):
        prepare_logs(no_lists, tmp_path / "data", engine="duckdb", memory_limit=1 << 28)


def test_ray_shard_error_is_the_one_machine_error(tmp_path, ray_session):
    logs = write_logs(tmp_path / "logs")
    with (logs / "events.csv").open("a") as fh:
        fh.write("u1,v1,100,7,l1,0\n")
    with pytest.raises(ValueError) as local:
        prepare_logs(logs, tmp_path / "data", engine="duckdb", shards=2)
    with pytest.raises(ValueError) as remote:
        prepare_logs(logs, tmp_path / "data", ray="auto", shards=2)
    assert str(remote.value) == str(local.value) and "label must be 0 or 1" in str(local.value)
    assert not (tmp_path / "data").exists()


def test_ray_lost_worker_is_retried_then_reported(tmp_path, ray_session):
    from cloud.data.ray_tasks import run_on_ray

    marker = tmp_path / "crashed-once"

    def crash_once(job, shared):  # the worker process dies on the first attempt of job 1
        if job == 1 and not marker.exists():
            marker.touch()
            os._exit(1)
        return job * shared

    assert run_on_ray(crash_once, [0, 1, 2], 10, "auto", max_retries=2) == [0, 10, 20]
    assert marker.exists()

    def always_crash(job, shared):
        os._exit(1)

    with pytest.raises(RuntimeError, match="shard 0: its Ray task was lost 2 times"):
        run_on_ray(always_crash, [0], None, "auto", max_retries=1)


def test_engine_choice_and_cli(tmp_path, capsys):
    logs = write_logs(tmp_path / "logs")
    assert choose_engine(logs, 1 << 30)[0] == "memory"
    engine, why = choose_engine(logs, 1000)
    assert engine == "duckdb" and "events.csv" in why
    parser = build_parser({"prepare": "cloud.commands.prepare"})
    args = parser.parse_args(["prepare", "--logs", str(logs), "--out", str(tmp_path / "a")])
    assert args._run(args) == 0 and "prepared in memory" in capsys.readouterr().out
    args = parser.parse_args(
        ["prepare", "--logs", str(logs), "--out", str(tmp_path / "b"), "--engine", "duckdb", "--memory-limit", "256MB"]
    )
    assert args._run(args) == 0 and "prepared out of core with DuckDB" in capsys.readouterr().out
    assert_same_data(tmp_path / "a", tmp_path / "b")


def test_parse_size():
    assert parse_size("4GB") == 4 * 10**9 and parse_size("512MiB") == 512 << 20 and parse_size("1e9") == 10**9
    for bad in ("lots", "4 parsecs", "1KB"):
        with pytest.raises(ValueError, match="memory limit"):
            parse_size(bad)
