"""Fuzzing `prepare` with hostile LOGS folders (hypothesis, derandomized, so every run tries the same cases).

Each case starts from conftest's tiny LOGS and breaks it: dataset.toml values replaced by other TOML
values, CSV cells replaced by odd text or numbers, rows repeated or dropped, bytes flipped, files
re-encoded. Every case must end in a prepared DATA or a ValueError / FileNotFoundError that names the
file at fault, never another exception; a failed run must leave the existing DATA byte for byte as it
was and leave no hidden temp folder beside it. Run with -s to print the case counts:

    pytest tests/cloud/data/test_fuzz_logs.py -s -q
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tomllib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.data.prepare import prepare
from cloud.data.prepared import PreparedData
from tests.helpers.logs import TINY_EVENTS, TINY_ITEMS, TINY_TOML, write_logs

FILES = ("dataset.toml", "items.csv", "events.csv", "users.csv")
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
COUNTS: Counter = Counter()

# --- values a careless user or an attacker might write ----------------------------------------------------

odd_numbers = st.sampled_from(
    [
        "1e39",
        "-1e39",
        "1e30",
        "-1e300",
        "1e308",
        "1e400",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "-0",
        "0x10",
        "1_000",
        "9" * 30,
        "-1",
        "0.5",
        "1.0",
        "2",
        "",
        " 1",
        "1e-320",
    ]
)
odd_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
cells = st.one_of(
    odd_numbers,
    odd_text,
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            '"',
            '"a',
            'a"b',
            '","',
            "\n",
            "\r\n",
            ",",
            "\\",
            "'",
            "v1",
            "a1",
            "u1",
            "L1",
            "video",
            "article",
            "\ufeff",
            "\x00",
            "\u2028",
        ]
    ),
)
toml_values = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(
        [
            "nan",
            "inf",
            "-inf",
            "1e400",
            "-0.0",
            "0.5",
            "true",
            "false",
            '"10"',
            '"0.4"',
            '""',
            "[]",
            "[1, 2]",
            "{}",
            '{name = "x"}',
            "2030-01-01T00:00:00Z",
            "1000",
            "1001",
            "0",
            "-1",
        ]
    ),
    odd_text.map(json.dumps),
)


NUMERIC_KEYS = ("n", "t", "K", "lag", "negatives", "valid_fraction", "test_fraction", "target_share", "vocab", "dim")
sizes = st.sampled_from(
    [
        "0",
        "-1",
        "1",
        "6",
        "7",
        "999",
        "1000",
        "1001",
        "1000000",
        "1000001",
        str(10**9),
        str(2**31),
        str(2**63),
        str(2**70),
        '"10"',
        "true",
        "10.0",
        "0.999",
        "1e-9",
        "nan",
        "inf",
    ]
)


def toml_case(draw) -> str:
    text = TINY_TOML
    if draw(st.booleans()):  # a number key set to a size, a wrong type or a non-finite value
        key = draw(st.sampled_from(NUMERIC_KEYS))
        text = re.sub(rf"\b{key} = [^,}}\n]+", lambda _: f"{key} = {draw(sizes)}", text, count=draw(st.integers(0, 2)))
    lines = text.splitlines()
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["value", "value", "drop", "key", "garbage"]))
        if kind == "value" and " = " in lines[at]:
            lines[at] = lines[at].split(" = ", 1)[0] + " = " + draw(toml_values)
        elif kind == "drop":
            del lines[at]
        elif kind == "key":
            lines.insert(
                at,
                draw(st.sampled_from(["n", "t", "K", "lag", "negatives", "extra", "sources"]))
                + " = "
                + draw(toml_values),
            )
        else:
            lines.insert(at, draw(odd_text))
    return "\n".join(lines) + "\n"


def csv_case(draw, text: str, kinds: tuple[str, ...]) -> str:
    rows = [row.split(",") for row in text.splitlines()]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(kinds))
        at = draw(st.integers(1, len(rows) - 1)) if len(rows) > 1 else 0
        if kind == "cell":
            row = rows[at]
            row[draw(st.integers(0, len(row) - 1))] = draw(cells)
        elif kind == "repeat":
            rows.insert(draw(st.integers(1, len(rows))), list(rows[at]))
        elif kind == "drop" and len(rows) > 1:
            del rows[at]
        else:
            header = rows[0]
            header[draw(st.integers(0, len(header) - 1))] = draw(cells)
    return "\n".join(",".join(row) for row in rows) + "\n"


def bytes_case(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "insert", "truncate", "utf-16", "utf-16-le", "latin-1", "bom"]))
    if kind in ("utf-16", "utf-16-le", "latin-1"):
        return data.decode("utf-8").replace("1", "\u00e9", 1).encode(kind)
    if kind == "bom":
        return draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff"])) + data
    at = draw(st.integers(0, len(data)))
    if kind == "truncate":
        return data[:at]
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]


@st.composite
def logs_folders(draw, focus: str) -> dict[str, bytes]:
    """File name -> bytes of a broken LOGS folder (users.csv only when drawn)."""
    texts = {"dataset.toml": TINY_TOML, "items.csv": TINY_ITEMS, "events.csv": TINY_EVENTS}
    if draw(st.booleans()):
        texts["users.csv"] = "user_id,country\nu1,fr\nu2,de\n"
    if focus == "toml":
        texts["dataset.toml"] = toml_case(draw)
    elif focus in ("cells", "rows"):
        kinds = ("cell",) if focus == "cells" else ("cell", "repeat", "repeat", "drop", "header", "header")
        for name in draw(
            st.lists(st.sampled_from(sorted(set(texts) - {"dataset.toml"})), min_size=1, max_size=2, unique=True)
        ):
            texts[name] = csv_case(draw, texts[name], kinds)
    files = {name: text.encode("utf-8") for name, text in texts.items()}
    if focus == "bytes":
        name = draw(st.sampled_from(sorted(files)))
        files[name] = bytes_case(draw, files[name])
    return files


# --- the check each case goes through --------------------------------------------------------------------


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_logs")
    prepare(write_logs(root / "good"), root / "out" / "data")
    yield root
    print(
        f"\nfuzz LOGS folders: {COUNTS['cases']} cases, {COUNTS['prepared']} prepared, "
        f"{COUNTS['clear errors']} clear errors, {COUNTS['crashes']} crashes, {COUNTS['data lost']} data lost"
    )


def try_case(root: Path, files: dict[str, bytes], force: bool) -> None:
    logs = root / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    for name, data in files.items():
        (logs / name).write_bytes(data)
    data_dir = root / "out" / "data"
    out = data_dir if force else root / "out" / "fresh"
    shutil.rmtree(root / "out" / "fresh", ignore_errors=True)
    before = digest(data_dir)
    COUNTS["cases"] += 1
    try:
        prepare(logs, out, force=force)
    except (ValueError, FileNotFoundError) as exc:
        message = str(exc)
        named = any(str(logs / name) in message for name in FILES)
        if not named or len(message) > 2000:
            COUNTS["crashes"] += 1
            raise AssertionError(f"unclear error: {message[:3000]!r}") from exc
        COUNTS["clear errors"] += 1
        if digest(data_dir) != before or (not force and out.exists()):
            COUNTS["data lost"] += 1
            raise AssertionError("a failed prepare changed DATA or left a half-written folder") from exc
    except Exception:
        COUNTS["crashes"] += 1
        raise
    else:
        COUNTS["prepared"] += 1
        assert_sane(logs, PreparedData(out))
    leftovers = [p.name for p in (root / "out").iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers


def assert_sane(logs: Path, data: PreparedData) -> None:
    """What a successful prepare must never write: coerced numbers, overflowed values, repeated candidates."""
    raw = tomllib.loads((logs / "dataset.toml").read_text(encoding="utf-8-sig"))
    for key in ("n", "t", "K", "lag", "negatives"):
        assert key not in raw or type(raw[key]) is int, f"dataset.toml {key} = {raw[key]!r} was coerced"
    spec = data.spec
    assert 1 <= spec.K <= spec.m * spec.n
    for source in spec.source_names:
        assert np.isfinite(data.items(source).dense).all(), "dense values overflowed float32"
    for split in ("train", "valid", "test"):
        arrays = {key: np.asarray(value) for key, value in data.split(split).items()}
        assert np.isfinite(arrays["ts"]).all() and (arrays["position"] >= -1).all()
        for view in ("device", "cloud"):
            assert np.isfinite(arrays[f"hist_{view}_age"]).all(), "history ages overflowed"
        cands = np.sort(arrays["cand_item"], axis=2)
        assert not ((cands[..., 1:] == cands[..., :-1]) & (cands[..., 1:] >= 0)).any(), "a candidate twice in a list"


@settings(FUZZ, max_examples=350)
@given(files=logs_folders("toml"), force=st.booleans())
def test_fuzzed_dataset_toml(workspace, files, force):
    try_case(workspace, files, force)


@settings(FUZZ, max_examples=300)
@given(files=logs_folders("cells"), force=st.booleans())
def test_fuzzed_csv_cells(workspace, files, force):
    try_case(workspace, files, force)


@settings(FUZZ, max_examples=200)
@given(files=logs_folders("rows"), force=st.booleans())
def test_fuzzed_csv_rows_and_headers(workspace, files, force):
    try_case(workspace, files, force)


@settings(FUZZ, max_examples=300)
@given(files=logs_folders("bytes"), force=st.booleans())
def test_fuzzed_bytes_and_encodings(workspace, files, force):
    try_case(workspace, files, force)
