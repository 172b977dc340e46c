"""cloud.data.logs: reading a LOGS folder, and a clear error (file, line or field, fix) for each bad input."""

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_EVENTS, TINY_ITEMS, TINY_TOML, write_logs

from cloud.data.logs import read_logs, read_spec


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def append(path: Path, row: str) -> int:
    """Append a row; returns its 1-based line number."""
    text = path.read_text()
    path.write_text(text + row + "\n")
    return text.count("\n") + 1


def test_reads_items_events_and_infers_vocab(tiny_logs):
    logs = read_logs(tiny_logs)
    video, article = logs.spec.sources
    # genre: comedy, drama, news (+ 0 for unknown) -> 4; topic: politics, sport, tech -> 4
    assert video.categorical[0].vocab == 4 and article.categorical[0].vocab == 4
    v = logs.items["video"]
    assert list(v.ids) == ["v1", "v2", "v3", "v4", "v5"]
    assert v.categorical[:, 0].tolist() == [2, 1, 2, 0, 3]  # sorted values -> 1..3, empty -> 0
    np.testing.assert_allclose(v.dense[2], [1.5, 0.0])
    assert v.dense.dtype == np.float32 and v.categorical.dtype == np.int64
    assert logs.items["article"].dense.shape == (4, 1)
    ev = logs.events
    assert len(ev) == TINY_EVENTS.count("\n") - 1
    assert list(logs.users) == ["u1", "u2"]
    assert ev.line[0] == 2 and ev.line[-1] == len(ev) + 1
    assert (ev.list_id[:3] == -1).all() and (ev.position[:3] == -1).all()
    assert not ev.has_click_prob and np.isnan(ev.click_prob).all()
    # row 4 is u1 clicking v2 (video item 1) in L1 at position 0
    assert (ev.user[3], ev.source[3], ev.item[3], ev.ts[3], ev.label[3], ev.position[3]) == (0, 0, 1, 200.0, 1, 0)


def test_given_vocab_is_kept_when_large_enough(tiny_logs):
    edit(tiny_logs / "dataset.toml", 'name = "genre", vocab = 0', 'name = "genre", vocab = 50')
    assert read_logs(tiny_logs).spec.sources[0].categorical[0].vocab == 50


def test_users_csv_fixes_user_order_and_rejects_unknown_users(tmp_path):
    logs = read_logs(write_logs(tmp_path / "a", users="user_id,age\nu2,30\nu1,40\nu3,50\n"))
    assert list(logs.users) == ["u2", "u1", "u3"] and logs.events.user[0] == 1
    with pytest.raises(ValueError, match=r"events\.csv: line 4: user_id 'u2' is not in users\.csv"):
        read_logs(write_logs(tmp_path / "b", users="user_id\nu1\n"))


def test_click_prob_column(tmp_path):
    events = TINY_EVENTS.replace("list_id,position\n", "list_id,position,click_prob\n", 1)
    events = events.replace("u1,v1,100,1,,\n", "u1,v1,100,1,,,0.25\n", 1)
    ev = read_logs(write_logs(tmp_path / "ok", events=events)).events
    assert ev.has_click_prob and ev.click_prob[0] == 0.25 and np.isnan(ev.click_prob[1:]).all()
    bad = events.replace(",,,0.25\n", ",,,1.5\n")
    with pytest.raises(ValueError, match=r"line 2: click_prob must be in \[0, 1\]"):
        read_logs(write_logs(tmp_path / "bad", events=bad))


# --- dataset.toml --------------------------------------------------------------------------------


def test_missing_dataset_toml(tiny_logs):
    (tiny_logs / "dataset.toml").unlink()
    with pytest.raises(FileNotFoundError, match=r"dataset\.toml: not found"):
        read_logs(tiny_logs)


def test_missing_logs_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="LOGS folder not found"):
        read_logs(tmp_path / "nope")


def test_target_shares_must_sum_to_one(tiny_logs):
    edit(tiny_logs / "dataset.toml", "target_share = 0.4", "target_share = 0.5")
    with pytest.raises(ValueError, match=r"dataset\.toml: .*target_share: must sum to 1.*fix dataset\.toml"):
        read_logs(tiny_logs)


def test_bad_toml_syntax_and_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match=r"dataset\.toml: invalid TOML \(.*line 1"):
        read_spec(write_logs(tmp_path / "a", toml="n = = 3\n") / "dataset.toml")
    toml = TINY_TOML.replace("lag = 1", "lag = 1\nlagg = 2")
    with pytest.raises(ValueError, match=r"dataset\.toml: lagg: Extra inputs are not permitted"):
        read_spec(write_logs(tmp_path / "b", toml=toml) / "dataset.toml")
    toml = TINY_TOML.replace('list_mode = "logged"', 'list_mode = "shown"')
    with pytest.raises(ValueError, match=r"dataset\.toml: list_mode: "):
        read_spec(write_logs(tmp_path / "c", toml=toml) / "dataset.toml")


def test_vocab_smaller_than_needed(tiny_logs):
    edit(tiny_logs / "dataset.toml", 'name = "genre", vocab = 0', 'name = "genre", vocab = 3')
    with pytest.raises(ValueError, match=r"items\.csv: categorical field 'genre' of source 'video' has 3 distinct "
                                         r"values and needs vocab >= 4 .*gives vocab = 3"):
        read_logs(tiny_logs)


# --- items.csv -----------------------------------------------------------------------------------


def test_items_missing_feature_column(tmp_path):
    items = TINY_ITEMS.replace(",emb_1,", ",embx,")
    with pytest.raises(ValueError, match=r"items\.csv: line 1: missing column\(s\) \['emb_1'\]"):
        read_logs(write_logs(tmp_path / "l", items=items))


def test_items_unknown_source(tiny_logs):
    line = append(tiny_logs / "items.csv", "p1,podcast,,,,,")
    with pytest.raises(ValueError, match=rf"items\.csv: line {line}: unknown source 'podcast'; "
                                         r"use one of \['video', 'article'\]"):
        read_logs(tiny_logs)


def test_items_duplicate_id(tiny_logs):
    line = append(tiny_logs / "items.csv", "v2,video,drama,0,0,,")
    with pytest.raises(ValueError, match=rf"items\.csv: line {line}: item_id 'v2' repeats line 3"):
        read_logs(tiny_logs)


def test_items_dense_missing_names_column(tiny_logs):
    edit(tiny_logs / "items.csv", "a3,article,,,,sport,0.4", "a3,article,,,,sport,")
    with pytest.raises(ValueError, match=r"items\.csv: line 9: column 'quality' \(dense feature of source "
                                         r"'article'\) must be a finite number, got an empty value"):
        read_logs(tiny_logs)
    edit(tiny_logs / "items.csv", "v3,video,drama,1.5,", "v3,video,drama,abc,")
    with pytest.raises(ValueError, match=r"line 4: column 'emb_0' .* got 'abc'"):
        read_logs(tiny_logs)


def test_source_without_items(tmp_path):
    items = "\n".join(row for row in TINY_ITEMS.splitlines() if ",article," not in row) + "\n"
    with pytest.raises(ValueError, match=r"items\.csv: source 'article' has no items"):
        read_logs(write_logs(tmp_path / "l", items=items))


# --- events.csv ----------------------------------------------------------------------------------


def test_events_missing_column(tmp_path):
    events = "\n".join(",".join(row.split(",")[:3] + row.split(",")[4:]) for row in TINY_EVENTS.splitlines())
    with pytest.raises(ValueError, match=r"events\.csv: line 1: missing column\(s\) \['label'\]"):
        read_logs(write_logs(tmp_path / "l", events=events + "\n"))


def test_events_malformed_row(tiny_logs):
    line = append(tiny_logs / "events.csv", "u1,v1,1100,1,L11,0,extra")
    with pytest.raises(ValueError, match=rf"events\.csv: malformed CSV .*line {line}"):
        read_logs(tiny_logs)


def test_repeated_header_column(tmp_path):
    events = TINY_EVENTS.replace("list_id,position\n", "list_id,label\n", 1)
    with pytest.raises(ValueError, match=r"line 1: column\(s\) \['label'\] appear more than once"):
        read_logs(write_logs(tmp_path / "l", events=events))


def test_events_label_outside_0_1(tiny_logs):
    line = append(tiny_logs / "events.csv", "u1,v1,1100,2,,")
    with pytest.raises(ValueError, match=rf"events\.csv: line {line}: label must be 0 or 1, got '2'"):
        read_logs(tiny_logs)


def test_events_non_numeric_timestamp(tiny_logs):
    line = append(tiny_logs / "events.csv", "u1,v1,yesterday,1,,")
    with pytest.raises(ValueError, match=rf"events\.csv: line {line}: column 'timestamp' \(timestamp \(seconds\)\) "
                                         r"must be a finite number, got 'yesterday'"):
        read_logs(tiny_logs)


def test_events_unknown_item(tiny_logs):
    line = append(tiny_logs / "events.csv", "u1,zz9,1100,1,,")
    with pytest.raises(ValueError, match=rf"events\.csv: line {line}: item_id 'zz9' is not in items\.csv"):
        read_logs(tiny_logs)


def test_events_empty_user(tiny_logs):
    line = append(tiny_logs / "events.csv", ",v1,1100,1,,")
    with pytest.raises(ValueError, match=rf"events\.csv: line {line}: user_id is empty"):
        read_logs(tiny_logs)


def test_events_bad_position(tiny_logs):
    line = append(tiny_logs / "events.csv", "u1,v1,1100,1,L11,1.5")
    with pytest.raises(ValueError, match=rf"line {line}: column 'position' must be a non-negative integer"):
        read_logs(tiny_logs)


def test_list_shown_to_two_users(tiny_logs):
    line = append(tiny_logs / "events.csv", "u2,v1,200,0,L1,5")
    with pytest.raises(ValueError, match=rf"lines 5 and {line}: list_id 'L1' has rows of two users"):
        read_logs(tiny_logs)


def test_logged_mode_needs_list_ids(tmp_path):
    events = "\n".join(",".join(r.split(",")[:4]) for r in TINY_EVENTS.splitlines()) + "\n"
    with pytest.raises(ValueError, match=r'events\.csv: no row has a list_id .*list_mode = "sampled"'):
        read_logs(write_logs(tmp_path / "l", events=events))
    toml = TINY_TOML.replace('"logged"', '"sampled"')
    assert len(read_logs(write_logs(tmp_path / "s", toml=toml, events=events)).events) == 28


def test_error_messages_name_the_file_path(tiny_logs):
    append(tiny_logs / "events.csv", "u1,v1,1100,7,,")
    with pytest.raises(ValueError) as info:
        read_logs(tiny_logs)
    assert str(tiny_logs / "events.csv") in str(info.value)
    assert re.search(r"use 1 for a click", str(info.value))
