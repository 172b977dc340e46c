"""cloud.data.prepare / prepared / commands: lists, both history views, time split, atomic output.

Histories and logged candidates are checked against slow, obviously-correct pure-Python references
on small random logs with many equal timestamps.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cloud.cli import build_parser
from cloud.data.logs import read_logs
from cloud.data.prepare import memory_needed, prepare, time_split
from cloud.data.prepared import ARRAYS, SPLITS, PreparedData
from shared_schema.files import replace_dir
from shared_schema.specs import DatasetSpec, SourceSpec
from tests.helpers.logs import SOURCES, TINY_TOML, random_logs, write_logs


def raw_events(logs: Path) -> list[dict]:
    with (logs / "events.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for line, row in enumerate(rows, start=2):
        row.update(line=line, ts=float(row["timestamp"]), label=int(row["label"]), source=row["item_id"].split("_")[0])
    return rows


def concat(data: PreparedData) -> dict[str, np.ndarray]:
    splits = [data.split(name) for name in SPLITS]
    return {key: np.concatenate([np.asarray(s[key]) for s in splits]) for key in ARRAYS}


def item_ids(data: PreparedData, index: np.ndarray) -> list[list[list[str | None]]]:
    """[L, m, k] item indices -> original ids (None at padding)."""
    ids = [np.asarray(data.items(s).ids) for s in data.spec.source_names]
    return [[[str(ids[s][i]) if i >= 0 else None for i in row] for s, row in enumerate(lst)] for lst in index]


def reference_history(rows: list[dict], user: str, ts: float, sources: list[str], t: int, lag: int, view: str):
    """Newest-first per-source (item, age) lists: clicks strictly before ts, minus the newest `lag` for cloud."""
    clicks = sorted(
        (r for r in rows if r["user_id"] == user and r["label"] == 1 and r["ts"] < ts),
        key=lambda r: (r["ts"], r["line"]),
    )
    if view == "cloud":
        clicks = clicks[: max(len(clicks) - lag, 0)]
    out = []
    for source in sources:
        newest = [r for r in reversed(clicks) if r["source"] == source][:t]
        out.append([(r["item_id"], ts - r["ts"]) for r in newest] + [(None, 0.0)] * (t - len(newest)))
    return out


@pytest.mark.parametrize("mode", ["logged", "sampled"])
@pytest.mark.parametrize("lag", [0, 2])
def test_histories_match_pure_python_reference(tmp_path, mode, lag):
    logs = random_logs(tmp_path / "logs", mode, seed=lag, lag=lag)
    prepare(logs, tmp_path / "data")
    data = PreparedData(tmp_path / "data")
    rows, users, arrays = raw_events(logs), np.asarray(data.users()), concat(data)
    assert len(arrays["ts"]) > 20
    for view in ("device", "cloud"):
        got_items = item_ids(data, arrays[f"hist_{view}"])
        for li, (u, ts) in enumerate(zip(arrays["user"], arrays["ts"])):
            expected = reference_history(rows, users[u], ts, data.spec.source_names, data.spec.t, lag, view)
            assert got_items[li] == [[item for item, _ in src] for src in expected], (view, li)
            np.testing.assert_allclose(arrays[f"hist_{view}_age"][li], [[a for _, a in src] for src in expected])


def test_no_future_leakage(tmp_path):
    logs = random_logs(tmp_path / "logs", "logged", seed=3)
    prepare(logs, tmp_path / "data")
    data = PreparedData(tmp_path / "data")
    clicks = {(r["user_id"], r["item_id"], r["ts"]) for r in raw_events(logs) if r["label"] == 1}
    users = np.asarray(data.users())
    for name in SPLITS:
        split = data.split(name)
        for view in ("device", "cloud"):
            hist, age = np.asarray(split[f"hist_{view}"]), np.asarray(split[f"hist_{view}_age"])
            assert (age[hist >= 0] > 0).all() and (age[hist < 0] == 0).all()
            ids = item_ids(data, hist)
            for li, (u, ts) in enumerate(zip(split["user"], split["ts"])):
                for s in range(data.spec.m):
                    for j, item in enumerate(ids[li][s]):
                        if item is not None:  # a real click of this user, strictly older than the list
                            assert (users[u], item, ts - float(age[li, s, j])) in clicks


def test_cloud_view_is_device_view_minus_newest_lag(tiny_data):
    data = PreparedData(tiny_data)
    arrays = concat(data)
    for li in range(len(arrays["ts"])):
        device = [
            (a, i)
            for s in range(2)
            for a, i in zip(arrays["hist_device_age"][li, s], arrays["hist_device"][li, s])
            if i >= 0
        ]
        cloud = [
            (a, i)
            for s in range(2)
            for a, i in zip(arrays["hist_cloud_age"][li, s], arrays["hist_cloud"][li, s])
            if i >= 0
        ]
        assert set(cloud) <= set(device)
        assert len(device) - len(cloud) == min(1, len(device))  # lag = 1, t not reached in tiny_logs
        if len(device) > len(cloud):  # the one dropped is the youngest behaviour (ties: the later row)
            assert min(device)[0] <= min(cloud, default=(np.inf,))[0]


def test_logged_lists_on_tiny_logs(tiny_data):
    data = PreparedData(tiny_data)
    arrays = concat(data)
    ids = item_ids(data, arrays["cand_item"])
    np.testing.assert_array_equal(arrays["ts"], [200, 300, 400, 500, 600, 650, 700, 800, 900, 1000])
    # L3: videos by position v4, v1, v2; v5 (position 3) is over n = 3 and dropped
    assert ids[2] == [["v4", "v1", "v2"], ["a4", None, None]]
    assert arrays["position"][2].tolist() == [[0, 1, 2], [4, -1, -1]]
    assert arrays["label"][2].tolist() == [[0, 1, 0], [0, 0, 0]]
    assert data.stats["impressions_over_n_dropped"] == 1
    # L4 was shown at 500 (its click came at 505): the click is not in its own history
    assert item_ids(data, arrays["hist_device"][3:4])[0] == [[None] * 4, ["a3", "a2", None, None]]
    # L7 at 700: u1 clicked v4 at 700 too (tie) -> not in L7's history
    assert item_ids(data, arrays["hist_device"][6:7])[0] == [["v1", "v2", "v1", None], ["a3", "a1", None, None]]
    assert item_ids(data, arrays["hist_cloud"][6:7])[0] == [["v1", "v2", "v1", None], ["a1", None, None, None]]
    np.testing.assert_allclose(arrays["hist_device_age"][6], [[300, 500, 600, 0], [100, 590, 0, 0]])


def test_logged_candidates_match_reference(tmp_path):
    logs = random_logs(tmp_path / "logs", "logged", seed=5)
    prepare(logs, tmp_path / "data")
    data = PreparedData(tmp_path / "data")
    arrays, n = concat(data), data.spec.n
    lists: dict[str, list[dict]] = {}
    for r in raw_events(logs):
        if r["list_id"]:
            lists.setdefault(r["list_id"], []).append(r)
    expected = []
    for rows in lists.values():
        first = min(rows, key=lambda r: (r["ts"], r["line"]))
        per_source = []
        for s in SOURCES:
            mine = sorted(
                (r for r in rows if r["source"] == s),
                key=lambda r: (int(r["position"]) if r["position"] else float("inf"), r["line"]),
            )[:n]
            per_source.append(
                [(r["item_id"], r["label"], int(r["position"] or -1)) for r in mine] + [(None, 0, -1)] * (n - len(mine))
            )
        expected.append(((first["ts"], first["line"]), first["user_id"], per_source))
    expected.sort(key=lambda e: e[0])
    users = np.asarray(data.users())
    ids = item_ids(data, arrays["cand_item"])
    assert len(ids) == len(expected) == 40
    for li, (key, user, per_source) in enumerate(expected):
        assert (arrays["ts"][li], users[arrays["user"][li]]) == (key[0], user)
        got = [list(zip(ids[li][s], arrays["label"][li, s].astype(int), arrays["position"][li, s])) for s in range(3)]
        assert got == per_source


def check_padding(arrays: dict) -> None:
    """Real candidates fill each source's first slots; padding has label 0, position -1, click_prob NaN."""
    real = arrays["cand_item"] >= 0
    assert (np.sort(real, axis=2)[..., ::-1] == real).all()
    assert (arrays["label"][~real] == 0).all() and (arrays["position"][~real] == -1).all()
    assert np.isnan(arrays["click_prob"][~real]).all()
    for key in ("hist_device", "hist_cloud"):
        hist = arrays[key] >= 0
        assert (np.sort(hist, axis=2)[..., ::-1] == hist).all()


def test_sampled_lists(tmp_path):
    logs = random_logs(tmp_path / "logs", "sampled", seed=7, negatives=6)
    prepare(logs, tmp_path / "data", seed=1)
    data = PreparedData(tmp_path / "data")
    arrays = concat(data)
    rows = raw_events(logs)
    clicks = sorted((r for r in rows if r["label"] == 1), key=lambda r: (r["ts"], r["line"]))
    assert len(arrays["ts"]) == len(clicks)
    check_padding(arrays)
    users = np.asarray(data.users())
    ids = item_ids(data, arrays["cand_item"])
    for li, click in enumerate(clicks):
        assert (users[arrays["user"][li]], arrays["ts"][li]) == (click["user_id"], click["ts"])
        pos = [ids[li][s][j] for s, j in zip(*np.nonzero(arrays["label"][li]))]
        assert pos == [click["item_id"]]
        items = [i for src in ids[li] for i in src if i is not None]
        assert len(items) == len(set(items)) and len(items) <= 1 + data.spec.negatives
        for s, source in enumerate(SOURCES):  # grouped by source
            assert all(i.startswith(source) for i in ids[li][s] if i is not None)
        clicked_by_then = {r["item_id"] for r in clicks if r["user_id"] == click["user_id"] and r["ts"] <= click["ts"]}
        negatives = [
            i for s in range(3) for j, i in enumerate(ids[li][s]) if i is not None and not arrays["label"][li, s, j]
        ]
        assert not clicked_by_then & set(negatives)
    assert (arrays["position"] == -1).all()
    # with 15 items and 6 negatives some sources get more than n = 3: negatives dropped, never the positive
    assert data.stats["negatives_over_n_dropped"] > 0


def test_sampled_is_seed_deterministic(tmp_path):
    logs = random_logs(tmp_path / "logs", "sampled", seed=2)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        prepare(logs, tmp_path / name, seed=seed)
    a, b, c = (concat(PreparedData(tmp_path / name)) for name in "abc")
    assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in ARRAYS)
    assert not np.array_equal(a["cand_item"], c["cand_item"])


def test_logged_padding_layout(tmp_path):
    logs = random_logs(tmp_path / "logs", "logged", seed=4)
    prepare(logs, tmp_path / "data")
    check_padding(concat(PreparedData(tmp_path / "data")))


def test_time_split_has_no_overlap(tmp_path):
    logs = random_logs(tmp_path / "logs", "logged", seed=6)
    prepare(logs, tmp_path / "data")
    data = PreparedData(tmp_path / "data")
    ts = {name: np.asarray(data.split(name)["ts"]) for name in SPLITS}
    assert all(len(v) and (np.diff(v) >= 0).all() for v in ts.values())
    assert ts["train"].max() < ts["valid"].min() and ts["valid"].max() < ts["test"].min()
    assert sum(map(len, ts.values())) == 40 == sum(data.stats["lists"].values())


def spec(valid: float, test: float) -> DatasetSpec:
    return DatasetSpec(
        sources=[SourceSpec(name="a", target_share=1, dense=[{"name": "x"}])], valid_fraction=valid, test_fraction=test
    )


def test_time_split_ties_go_to_the_later_split():
    ts = np.array([1, 1, 2, 2, 2, 3, 3, 4, 5, 5], float)
    # cuts at quantiles 0.6 (ts[6] = 3) and 0.8 (ts[8] = 5): ties at a cut move to the later split
    assert time_split(ts, spec(0.2, 0.2)) == {"train": (0, 5), "valid": (5, 8), "test": (8, 10)}
    with pytest.raises(ValueError, match=r"leaves \['train', 'valid'\] empty \(10 lists, 1 distinct"):
        time_split(np.ones(10), spec(0.2, 0.2))


def test_prepared_data_loads_back_memory_mapped(tiny_data):
    data = PreparedData(tiny_data)
    assert data.spec.sources[0].categorical[0].vocab == 4 and data.num_users == 2
    assert data.num_items == {"video": 5, "article": 4} and data.has_click_prob is False
    meta = json.loads((tiny_data / "dataset.json").read_text())
    assert meta["schema_version"] == 1 and meta["stats"]["lists"] == {"train": 6, "valid": 2, "test": 2}
    train = data.split("train")
    assert set(train) == set(ARRAYS) and all(isinstance(a, np.memmap) for a in train.values())
    assert train["cand_item"].shape == (6, 2, 3) and train["hist_cloud"].shape == (6, 2, 4)
    dtypes = {k: str(a.dtype) for k, a in train.items()}
    assert dtypes == {
        "user": "int64",
        "ts": "float64",
        "cand_item": "int64",
        "label": "float32",
        "click_prob": "float32",
        "position": "int64",
        "hist_device": "int64",
        "hist_cloud": "int64",
        "hist_device_age": "float32",
        "hist_cloud_age": "float32",
    }
    video = data.items("video")
    assert isinstance(video.dense, np.memmap) and video.dense.shape == (5, 2) and video.categorical.shape == (5, 1)
    assert list(video.ids) == ["v1", "v2", "v3", "v4", "v5"] and list(data.users()) == ["u1", "u2"]
    assert [c.shape for c, _ in data.item_tables()] == [(5, 1), (4, 1)]
    with pytest.raises(ValueError, match="split must be one of"):
        data.split("dev")
    with pytest.raises(KeyError, match="unknown source 'music'"):
        data.items("music")


def test_other_schema_version_is_refused(tiny_data):
    meta = json.loads((tiny_data / "dataset.json").read_text())
    meta["schema_version"] = 2
    (tiny_data / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"dataset\.json: schema_version 2 but this code reads 1; re-run"):
        PreparedData(tiny_data)
    with pytest.raises(FileNotFoundError, match="dir-cloud prepare"):
        PreparedData(tiny_data.parent / "nothing")


def test_existing_output_refused_unless_force(tiny_logs, tiny_data):
    before = (tiny_data / "dataset.json").read_text()
    with pytest.raises(FileExistsError, match="already exists.*--force"):
        prepare(tiny_logs, tiny_data)
    assert (tiny_data / "dataset.json").read_text() == before
    (tiny_logs / "dataset.toml").write_text(TINY_TOML.replace("t = 4", "t = 2"))
    prepare(tiny_logs, tiny_data, force=True)
    assert PreparedData(tiny_data).spec.t == 2
    assert sorted(p.name for p in tiny_data.parent.iterdir()) == ["data", "logs"]


def test_failure_leaves_nothing_half_written(tiny_logs, tiny_data, monkeypatch):
    # bad input: nothing written
    (tiny_logs / "events.csv").write_text((tiny_logs / "events.csv").read_text() + "u1,v1,x,1,,\n")
    with pytest.raises(ValueError, match="timestamp"):
        prepare(tiny_logs, tiny_logs.parent / "fresh")
    assert not (tiny_logs.parent / "fresh").exists()
    # a failure while writing (disk full, say) leaves no temp folder and keeps the old DATA intact
    fresh = write_logs(tiny_logs.parent / "logs2")
    saved = []

    def failing_save(path, array):
        saved.append(path)
        if len(saved) > 5:
            raise OSError("No space left on device")
        np.lib.format.write_array(open(path, "wb"), np.asanyarray(array))

    monkeypatch.setattr(np, "save", failing_save)
    before = (tiny_data / "train" / "cand_item.npy").read_bytes()
    for out, force in ((tiny_logs.parent / "fresh", False), (tiny_data, True)):
        saved.clear()
        with pytest.raises(OSError, match="No space"):
            prepare(fresh, out, force=force)
    monkeypatch.undo()
    assert sorted(p.name for p in tiny_logs.parent.iterdir()) == ["data", "logs", "logs2"]
    assert (tiny_data / "train" / "cand_item.npy").read_bytes() == before
    PreparedData(tiny_data).split("test")


def cli(*argv: str) -> int:
    parser = build_parser({"prepare": "cloud.commands.prepare", "stats": "cloud.commands.stats"})
    args = parser.parse_args(argv)
    return args._run(args)


def test_cli_prepare_and_stats(tiny_logs, tmp_path, capsys):
    out = tmp_path / "cli_data"
    assert cli("prepare", "--logs", str(tiny_logs), "--out", str(out)) == 0
    assert "lists: train 6, valid 2, test 2" in capsys.readouterr().out
    assert cli("stats", "--data", str(out), "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["sources"] == {
        "video": {"target_share": 0.6, "items": 5},
        "article": {"target_share": 0.4, "items": 4},
    }
    train = stats["splits"]["train"]
    assert train["lists"] == 6 and train["click_rate"] == pytest.approx(6 / 15)
    # cold: L2 (u2 at 300) and L4 (u2 at 500) have video candidates but no video click before
    assert train["cold_source_share"] == pytest.approx(2 / 6)
    assert train["sources"]["video"]["hist_device"] == pytest.approx(7 / 6)
    assert train["sources"]["video"]["hist_cloud"] == pytest.approx(4 / 6)
    assert cli("stats", "--data", str(out)) == 0
    text = capsys.readouterr().out
    assert "cold-source share" in text and "video" in text and "train" in text


def test_memory_is_checked_before_the_lists_are_built(tiny_logs, tmp_path):
    out = tmp_path / "data"
    with pytest.raises(
        ValueError,
        match=r"dataset\.toml: 10 lists of m=2 sources with n=3 candidates and t=4 "
        r"history need about .* GiB, more than the .* GiB of memory available; "
        r"lower n or t in dataset\.toml",
    ):
        prepare(tiny_logs, out, memory_limit=1000)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["logs"]
    logs = read_logs(tiny_logs)
    lists, need = memory_needed(logs)
    prepare(tiny_logs, out, memory_limit=need)
    arrays = sum(np.load(out / split / f"{key}.npy").nbytes for split in SPLITS for key in ARRAYS)
    assert lists == 10 and arrays <= need  # the estimate covers what is written
    big = write_logs(tmp_path / "big", toml=TINY_TOML.replace("n = 3", "n = 1000").replace("t = 4", "t = 1000"))
    assert memory_needed(read_logs(big))[1] > 100 * need  # bounded n and t still scale the estimate


def crash_state(data: Path, between_renames: bool) -> None:
    """What a prepare --force killed mid-replace leaves: a half-written .tmp-* and DATA moved to .old-*."""
    parent = data.parent
    (parent / f".{data.name}.tmp-k1ll3d").mkdir()
    (parent / f".{data.name}.tmp-k1ll3d" / "users.npy").write_bytes(b"half")
    old = parent / f".{data.name}.old-k1ll3d"
    old.mkdir()
    if between_renames:
        data.rename(old / data.name)


def test_a_kill_between_the_two_renames_is_recovered_on_the_next_run(tiny_logs, tiny_data):
    before = {p.relative_to(tiny_data): p.read_bytes() for p in tiny_data.rglob("*") if p.is_file()}
    crash_state(tiny_data, between_renames=True)
    assert not tiny_data.exists()
    with pytest.raises(FileExistsError, match="already exists"):  # DATA is back, so it is kept without --force
        prepare(tiny_logs, tiny_data)
    assert {p.relative_to(tiny_data): p.read_bytes() for p in tiny_data.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tiny_data.parent.iterdir()) == ["data", "logs"]  # leftovers removed
    crash_state(tiny_data, between_renames=False)  # killed after the second rename: DATA is the new one
    (tiny_logs / "dataset.toml").write_text(TINY_TOML.replace("t = 4", "t = 2"))
    prepare(tiny_logs, tiny_data, force=True)
    assert PreparedData(tiny_data).spec.t == 2
    assert sorted(p.name for p in tiny_data.parent.iterdir()) == ["data", "logs"]


def test_recovery_runs_even_when_the_new_logs_are_bad(tiny_logs, tiny_data):
    crash_state(tiny_data, between_renames=True)
    (tiny_logs / "events.csv").write_text("user_id,item_id\n")
    with pytest.raises(FileExistsError):
        prepare(tiny_logs, tiny_data)
    PreparedData(tiny_data).split("test")
    with pytest.raises(ValueError, match=r"events\.csv: line 1: missing column"):
        prepare(tiny_logs, tiny_data, force=True)
    PreparedData(tiny_data).split("test")  # unchanged by the failed run


def test_replace_dir_restores_a_killed_replacement_before_writing(tmp_path):
    out = tmp_path / "report[1]"  # glob characters in the name
    out.mkdir()
    (out / "a.txt").write_text("old")

    def killed_between_renames():
        old = tmp_path / f".{out.name}.old-k1ll3d"
        old.mkdir()
        out.rename(old / out.name)

    killed_between_renames()
    with pytest.raises(FileExistsError, match=r"restored from a run killed while replacing it; pass --force"):
        with replace_dir(out, force=False) as tmp:
            raise AssertionError(f"must not get to write {tmp}")
    assert (out / "a.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report[1]"]
    killed_between_renames()
    with replace_dir(out, force=True) as tmp:
        (tmp / "a.txt").write_text("new")
    assert (out / "a.txt").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["report[1]"]


def test_cli_prints_a_hostile_input_error_without_a_traceback(tiny_logs, tmp_path, capsys):
    from cloud.cli import main

    (tiny_logs / "events.csv").write_bytes((tiny_logs / "events.csv").read_text().encode("utf-16"))
    assert main(["prepare", "--logs", str(tiny_logs), "--out", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dir-cloud prepare: error: {tiny_logs / 'events.csv'}: the file is UTF-16/32 text")
    assert "Traceback" not in err and not (tmp_path / "data").exists()
