"""cloud.data.logs: reading a LOGS folder, and a clear error (file, line or field, fix) for each bad input."""

import re
from pathlib import Path

import numpy as np
import pytest

from cloud.data.logs import read_logs, read_spec
from tests.helpers.logs import TINY_EVENTS, TINY_ITEMS, TINY_TOML, write_logs


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
    with pytest.raises(ValueError, match=r"dataset\.toml: line 6: lagg: Extra inputs are not permitted"):
        read_spec(write_logs(tmp_path / "b", toml=toml) / "dataset.toml")
    toml = TINY_TOML.replace('list_mode = "logged"', 'list_mode = "shown"')
    with pytest.raises(
        ValueError, match=r"dataset\.toml: line 6: list_mode: Input should be 'logged' or 'sampled', got 'shown'"
    ):
        read_spec(write_logs(tmp_path / "c", toml=toml) / "dataset.toml")


def test_vocab_smaller_than_needed(tiny_logs):
    edit(tiny_logs / "dataset.toml", 'name = "genre", vocab = 0', 'name = "genre", vocab = 3')
    with pytest.raises(
        ValueError,
        match=r"items\.csv: categorical field 'genre' of source 'video' has 3 distinct "
        r"values and needs vocab >= 4 .*gives vocab = 3",
    ):
        read_logs(tiny_logs)


# --- items.csv -----------------------------------------------------------------------------------


def test_items_missing_feature_column(tmp_path):
    items = TINY_ITEMS.replace(",emb_1,", ",embx,")
    with pytest.raises(ValueError, match=r"items\.csv: line 1: missing column\(s\) \['emb_1'\]"):
        read_logs(write_logs(tmp_path / "l", items=items))


def test_items_unknown_source(tiny_logs):
    line = append(tiny_logs / "items.csv", "p1,podcast,,,,,")
    with pytest.raises(
        ValueError,
        match=rf"items\.csv: line {line}: unknown source 'podcast'; "
        r"use one of \['video', 'article'\]",
    ):
        read_logs(tiny_logs)


def test_items_duplicate_id(tiny_logs):
    line = append(tiny_logs / "items.csv", "v2,video,drama,0,0,,")
    with pytest.raises(ValueError, match=rf"items\.csv: line {line}: item_id 'v2' repeats line 3"):
        read_logs(tiny_logs)


def test_items_dense_missing_names_column(tiny_logs):
    edit(tiny_logs / "items.csv", "a3,article,,,,sport,0.4", "a3,article,,,,sport,")
    with pytest.raises(
        ValueError,
        match=r"items\.csv: line 9: column 'quality' \(dense feature of source "
        r"'article'\) must be a finite number, got an empty value",
    ):
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
    with pytest.raises(
        ValueError,
        match=rf"events\.csv: line {line}: column 'timestamp' \(timestamp \(seconds\)\) "
        r"must be a finite number, got 'yesterday'",
    ):
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


# --- hostile input found by fuzzing: each a clear error naming file, line and field -------------


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("n", "1000000000", r"line 2: n: Input should be less than or equal to 1000"),
        ("t", "99999999999", r"line 3: t: Input should be less than or equal to 1000"),
        ("negatives", "100000", r"line 7: negatives: Input should be less than or equal to 1000"),
        ("lag", "10000000000000000000000", r"line 5: lag: Input should be less than or equal to 1000000"),
    ],
)
def test_sizes_have_an_upper_bound(tiny_logs, key, value, expected):
    old = next(line for line in TINY_TOML.splitlines() if line.startswith(f"{key} ="))
    edit(tiny_logs / "dataset.toml", old, f"{key} = {value}")
    with pytest.raises(ValueError, match=rf"dataset\.toml: {expected}"):
        read_logs(tiny_logs)


def test_K_cannot_exceed_the_candidate_slots(tiny_logs):
    edit(tiny_logs / "dataset.toml", "K = 2", "K = 7")  # m * n = 2 * 3
    with pytest.raises(
        ValueError,
        match=r"dataset\.toml: line 4: K: 7 exposed slots but a list has only "
        r"m \* n = 2 \* 3 candidates; lower K or raise n",
    ):
        read_logs(tiny_logs)
    edit(tiny_logs / "dataset.toml", "K = 7", "K = 6")
    assert read_logs(tiny_logs).spec.K == 6


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (
            "n = 3",
            'n = "3"',
            r"line 2: n: Input should be a valid integer, got '3' \(a quoted string: write the number "
            r"without quotes\)",
        ),
        ("t = 4", "t = true", r"line 3: t: Input should be a valid integer, got True"),
        ("K = 2", "K = 2.0", r"line 4: K: Input should be a valid integer, got 2.0"),
        (
            "target_share = 0.4",
            'target_share = "0.4"',
            r"line 19: sources\.1\.target_share: Input should be a valid "
            r"number, got '0\.4' \(a quoted string",
        ),
        (
            'vocab = 0}]\ndense = [{name = "emb"',
            'vocab = "0"}]\ndense = [{name = "emb"',
            r"line 14: sources\.0\.categorical\.0\.vocab: Input should be a valid integer, got '0'",
        ),
    ],
)
def test_strings_and_booleans_are_not_numbers(tiny_logs, old, new, expected):
    edit(tiny_logs / "dataset.toml", old, new)
    with pytest.raises(ValueError, match=rf"dataset\.toml: {expected}"):
        read_logs(tiny_logs)


def test_unbalanced_quote_in_a_header(tiny_logs):
    edit(tiny_logs / "items.csv", "item_id,source", 'item_id,"source')
    with pytest.raises(ValueError, match=r"items\.csv: line 1: the header is not valid CSV \(.*\); .*unbalanced quote"):
        read_logs(tiny_logs)


@pytest.mark.parametrize("name", ["dataset.toml", "items.csv", "events.csv"])
def test_files_that_are_not_utf8_name_the_file_line_and_fix(tiny_logs, name):
    path = tiny_logs / name
    text = path.read_text()
    path.write_bytes(text.encode("utf-16"))
    with pytest.raises(ValueError, match=rf"{name}: the file is UTF-16/32 text .*save it as UTF-8"):
        read_logs(tiny_logs)
    path.write_bytes(text.encode("utf-16-le"))  # no byte-order mark: NUL bytes
    with pytest.raises(ValueError, match=rf"{name}: line 1: a NUL byte .*save it as UTF-8"):
        read_logs(tiny_logs)
    lines = text.splitlines(keepends=True)
    lines[2] = lines[2].replace(lines[2][0], "\u00e9", 1)  # Latin-1 e-acute on line 3
    path.write_bytes("".join(lines).encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{name}: line 3: byte 0xe9 is not UTF-8 .*save it as UTF-8"):
        read_logs(tiny_logs)


def test_non_utf8_byte_far_into_a_big_file_gets_its_line(tiny_logs):
    rows = [f"u1,v1,{1100 + i},1,," for i in range(60_000)]  # over one read chunk
    rows[-1] = "u1,v\xe91,2000000,1,,"
    (tiny_logs / "events.csv").write_bytes((TINY_EVENTS + "\n".join(rows) + "\n").encode("latin-1"))
    line = TINY_EVENTS.count("\n") + len(rows)
    with pytest.raises(ValueError, match=rf"events\.csv: line {line}: byte 0xe9"):
        read_logs(tiny_logs)


def test_dense_value_beyond_float32(tiny_logs):
    edit(tiny_logs / "items.csv", "v3,video,drama,1.5,", "v3,video,drama,1e39,")
    with pytest.raises(
        ValueError,
        match=r"items\.csv: line 4: column 'emb_0' \(dense feature of source 'video'\) "
        r"must be a number within \+-3\.403e\+38, got '1e39'",
    ):
        read_logs(tiny_logs)
    edit(tiny_logs / "items.csv", "1e39", "-3.4e38")
    assert read_logs(tiny_logs).items["video"].dense[2, 0] == np.float32(-3.4e38)


def test_position_beyond_int32_is_refused_not_wrapped(tiny_logs):
    line = append(tiny_logs / "events.csv", "u1,v4,1100,1,L11,1e30")
    with pytest.raises(
        ValueError,
        match=rf"events\.csv: line {line}: column 'position' \(non-negative integer\) "
        r"must be a number within \+-2\.147e\+09, got '1e30'",
    ):
        read_logs(tiny_logs)


def test_timestamp_far_from_now_is_refused(tiny_logs):
    line = append(tiny_logs / "events.csv", "u1,v4,-1e300,1,,")
    with pytest.raises(
        ValueError,
        match=rf"events\.csv: line {line}: column 'timestamp' \(timestamp \(seconds\)\) "
        r"must be a number within \+-1e\+12, got '-1e300'",
    ):
        read_logs(tiny_logs)


def test_same_item_twice_in_one_list(tiny_logs):
    line = append(tiny_logs / "events.csv", "u1,a2,200,0,L1,7")  # L1 already shows a2 on line 6
    with pytest.raises(
        ValueError,
        match=rf"events\.csv: lines 6 and {line}: item_id 'a2' appears twice in "
        r"list_id 'L1'; keep one row per shown item",
    ):
        read_logs(tiny_logs)


def test_field_widths_have_an_upper_bound(tiny_logs):
    edit(tiny_logs / "dataset.toml", 'dense = [{name = "emb", dim = 2}]', 'dense = [{name = "emb", dim = 1000000000}]')
    edit(
        tiny_logs / "dataset.toml",
        'categorical = [{name = "topic", vocab = 0}]',
        'categorical = [{name = "topic", vocab = 99999999999}]',
    )
    with pytest.raises(
        ValueError,
        match=r"dataset\.toml: line 15: sources\.0\.dense\.0\.dim: Input should be less than "
        r"or equal to 4096; line 20: sources\.1\.categorical\.0\.vocab: Input should "
        r"be less than or equal to 2147483647; fix dataset\.toml",
    ):
        read_logs(tiny_logs)
