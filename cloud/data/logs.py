"""Read and validate a bring-your-own-logs folder (dataset.toml, items, events, users: .csv or .parquet).

    logs = read_logs("my_logs")          # raises ValueError / FileNotFoundError naming file, line, fix
    logs.spec.sources[0].categorical     # vocab sizes filled in (0 in dataset.toml = inferred)
    logs.items["video"].dense            # float32 [N_s, D_s], row i = item index i of that source
    logs.events.ts                       # float64, one entry per events.csv row (in file order)

Line numbers in messages are 1-based lines of the file (the header is line 1), assuming no quoted
field spans several lines. A row with fewer fields than the header reads its missing fields as empty.
`items_from_frame` and `events_from_frame` validate tables already read (all columns as text), so
other readers share the same checks and messages.
"""

from __future__ import annotations

import codecs
import csv
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import numpy as np
import pandas as pd
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from shared_schema.specs import DatasetSpec

EVENT_COLUMNS = ("user_id", "item_id", "timestamp", "label")
EVENT_OPTIONAL = ("list_id", "position", "click_prob")
MAX_ABS_TIMESTAMP = 1e12  # seconds: about 31,700 years either side of 1970 (milliseconds are out of range)
MAX_POSITION = 2**31 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
NEWLINE = b"\n"


@dataclass(frozen=True)
class ItemTable:
    """Items of one source: original ids, categorical ids (0 = unknown) and dense features."""

    ids: np.ndarray  # str [N]
    categorical: np.ndarray  # int64 [N, F]
    dense: np.ndarray  # float32 [N, D]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Events:
    """events.csv as arrays, one entry per row in file order."""

    user: np.ndarray  # int64 index into Logs.users
    source: np.ndarray  # int64 source index (dataset source order)
    item: np.ndarray  # int64 item index within its source
    ts: np.ndarray  # float64 seconds
    label: np.ndarray  # int8 0/1
    list_id: np.ndarray  # int64 index into list_names, -1 = no list (plain behaviour)
    list_names: np.ndarray  # str, original list ids
    position: np.ndarray  # int64, -1 = unknown
    click_prob: np.ndarray  # float32, NaN = unknown
    line: np.ndarray  # int64 1-based line number in events.csv
    has_click_prob: bool

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True)
class Logs:
    """A validated LOGS folder."""

    spec: DatasetSpec
    items: dict[str, ItemTable]
    users: np.ndarray  # str [U]
    events: Events
    events_path: Path


def read_logs(logs_dir: str | Path) -> Logs:
    """Read and validate every file of a LOGS folder."""
    spec, items, users, events_path = read_catalogue(logs_dir)
    events, users = read_events(events_path, items, users)
    if spec.list_mode == "logged" and not (events.list_id >= 0).any():
        raise ValueError(no_lists_message(events_path))
    return Logs(spec=spec, items=items, users=users, events=events, events_path=events_path)


def read_catalogue(logs_dir: str | Path) -> tuple[DatasetSpec, dict[str, ItemTable], np.ndarray | None, Path]:
    """(spec, items, users or None, events file) of a LOGS folder: everything but the events, validated."""
    root = logs_folder(logs_dir)
    spec = read_spec(root / "dataset.toml")
    spec, items = read_items(table_path(root, "items"), spec)
    users_path = table_path(root, "users", required=False)
    users = read_users(users_path) if users_path else None
    return spec, items, users, table_path(root, "events")


def logs_folder(logs_dir: str | Path) -> Path:
    """`logs_dir` as a Path; a missing folder is an error."""
    root = Path(logs_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: LOGS folder not found; give a folder with dataset.toml, items.csv, events.csv"
        )
    return root


def no_lists_message(events_path: Path) -> str:
    """The error for list_mode "logged" without any list_id (shared by every prepare path)."""
    return (
        f'{events_path}: no row has a list_id but dataset.toml sets list_mode = "logged"; '
        'add list_id (and position) to impressions or set list_mode = "sampled"'
    )


def read_spec(path: str | Path) -> DatasetSpec:
    """Parse dataset.toml into a DatasetSpec; errors name the file and the offending key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; every LOGS folder needs a dataset.toml (see docs/data.md)")
    check_text(path)
    text = path.read_text(encoding="utf-8-sig")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML ({exc}); fix the syntax") from exc
    try:  # strict: "10" or true where a number belongs is an error, not coerced
        return DatasetSpec.model_validate(_arrays_as_tuples(raw), strict=True)
    except ValidationError as exc:
        problems = "; ".join(_spec_problem(text, err) for err in exc.errors())
        raise ValueError(f"{path}: {problems}; fix dataset.toml") from exc


def _arrays_as_tuples(value):
    """TOML arrays as tuples, the sequence type of DatasetSpec (strict validation takes no lists)."""
    if isinstance(value, list):
        return tuple(_arrays_as_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _arrays_as_tuples(v) for k, v in value.items()}
    return value


def _spec_problem(text: str, err: ErrorDetails) -> str:
    """One validation error as 'line N: key.path: message, got VALUE'."""
    loc, msg = err["loc"], err["msg"].removeprefix("Value error, ")
    named = re.match(r"(\w+): ", msg)
    line = _toml_line(text, loc or ((named.group(1),) if named else ()))
    value = err.get("input")
    if (err["type"].endswith("_type") or err["type"] == "literal_error") and isinstance(value, (str, int, float)):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        msg += f", got {shown}"
        if isinstance(value, str) and err["type"] in ("int_type", "float_type"):
            msg += " (a quoted string: write the number without quotes)"
    where = ".".join(map(str, loc))
    return (f"line {line}: " if line else "") + (f"{where}: " if where else "") + msg


def _toml_line(text: str, loc: tuple) -> int | None:
    """1-based line of the key an error points at: a top-level key, or a key of the i-th [[sources]]."""
    lines = text.splitlines()
    if not loc or not isinstance(loc[0], str):
        return None
    key, start, stop = loc[0], 0, len(lines)
    tables = [i for i, line in enumerate(lines) if line.lstrip().startswith("[")]
    if tables:
        stop = tables[0]
    if key == "sources" and len(loc) > 2 and isinstance(loc[1], int) and isinstance(loc[2], str):
        headers = [i for i, line in enumerate(lines) if re.match(r"\s*\[\[\s*sources\s*\]\]", line)]
        if loc[1] < len(headers):
            key, start = loc[2], headers[loc[1]]
            stop = next((i for i in tables if i > start), len(lines))
    pattern = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=")
    return next((i + 1 for i in range(start, stop) if pattern.match(lines[i])), None)


def read_items(path: str | Path, spec: DatasetSpec) -> tuple[DatasetSpec, dict[str, ItemTable]]:
    """Read items.csv; returns the spec with categorical vocab sizes filled in and one table per source."""
    path = Path(path)
    return items_from_frame(path, read_csv(path, item_columns(spec)), spec)


def item_columns(spec: DatasetSpec) -> list[str]:
    """The columns items.csv needs: item_id, source and every feature column of the spec."""
    feature_cols = {
        c for s in spec.sources for c in [f.name for f in s.categorical] + [col for f in s.dense for col in f.columns()]
    }
    return ["item_id", "source", *sorted(feature_cols)]


def items_from_frame(path: Path, df: pd.DataFrame, spec: DatasetSpec) -> tuple[DatasetSpec, dict[str, ItemTable]]:
    """Validate an items table (text columns, row i = line i + 2 of `path`); see read_items."""
    item_id = df["item_id"].to_numpy(dtype=object)
    source = df["source"].to_numpy(dtype=object)
    _require_nonempty(path, "item_id", item_id)
    duplicated = pd.Index(item_id).duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        first = int(np.flatnonzero(item_id == item_id[row])[0])
        raise ValueError(
            f"{path}: line {row + 2}: item_id {item_id[row]!r} repeats line {first + 2}; "
            "item ids must be unique across all sources"
        )
    known = np.isin(source, spec.source_names)
    if not known.all():
        row = int(np.flatnonzero(~known)[0])
        raise ValueError(
            f"{path}: line {row + 2}: unknown source {source[row]!r}; "
            f"use one of {spec.source_names} or add it to dataset.toml"
        )
    sources = spec.model_dump()
    tables: dict[str, ItemTable] = {}
    for s, src in enumerate(spec.sources):
        rows = np.flatnonzero(source == src.name)
        if len(rows) == 0:
            raise ValueError(f"{path}: source {src.name!r} has no items; add its items or remove it from dataset.toml")
        cats = []
        for f, field in enumerate(src.categorical):
            ids, vocab = _encode_categorical(
                path, src.name, field.name, field.vocab, df[field.name].to_numpy(dtype=object)[rows]
            )
            sources["sources"][s]["categorical"][f]["vocab"] = vocab
            cats.append(ids)
        dense = [
            _numeric(
                path,
                col,
                df[col].to_numpy(dtype=object)[rows],
                rows,
                finite=True,
                limit=FLOAT32_MAX,
                what=f"dense feature of source {src.name!r}",
            )
            for field in src.dense
            for col in field.columns()
        ]
        tables[src.name] = ItemTable(
            ids=item_id[rows].astype(str),
            categorical=np.stack(cats, axis=1) if cats else np.zeros((len(rows), 0), np.int64),
            dense=(np.stack(dense, axis=1) if dense else np.zeros((len(rows), 0))).astype(np.float32),
        )
    return DatasetSpec.model_validate(sources), tables


def read_users(path: str | Path) -> np.ndarray:
    """Read users.csv (user_id, then any columns, unused for now); returns the user ids in file order."""
    path = Path(path)
    ids = read_csv(path, ["user_id"])["user_id"].to_numpy(dtype=object)
    _require_nonempty(path, "user_id", ids)
    duplicated = pd.Index(ids).duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise ValueError(f"{path}: line {row + 2}: user_id {ids[row]!r} appears twice; user ids must be unique")
    return ids.astype(str)


def read_events(
    path: str | Path, items: dict[str, ItemTable], users: np.ndarray | None = None
) -> tuple[Events, np.ndarray]:
    """Read events.csv against the item tables; returns the events and the user ids they index."""
    path = Path(path)
    return events_from_frame(path, read_csv(path, list(EVENT_COLUMNS), optional=EVENT_OPTIONAL), items, users)


def no_events_message(path: Path) -> str:
    """The error for an events table without rows (shared by every prepare path)."""
    return f"{path}: no events; add at least one row"


def events_from_frame(
    path: Path,
    df: pd.DataFrame,
    items: dict[str, ItemTable],
    users: np.ndarray | None = None,
    lines: np.ndarray | None = None,
) -> tuple[Events, np.ndarray]:
    """Validate an events table (text columns) of `path`; `lines` are its rows' file lines (default 2, 3...).

    The one place events are checked: the in-memory path calls it on the whole file, the sharded
    paths on each shard's rows, so every path raises the same messages.
    """
    rows = np.arange(len(df)) if lines is None else np.asarray(lines, np.int64) - 2
    if len(df) == 0:
        raise ValueError(no_events_message(path))
    user_id = df["user_id"].to_numpy(dtype=object)
    item_id = df["item_id"].to_numpy(dtype=object)
    _require_nonempty(path, "user_id", user_id, rows)
    _require_nonempty(path, "item_id", item_id, rows)

    all_ids = np.concatenate([t.ids for t in items.values()])
    item_source = np.repeat(np.arange(len(items)), [len(t) for t in items.values()])
    item_local = np.concatenate([np.arange(len(t)) for t in items.values()])
    where = pd.Index(all_ids).get_indexer(item_id)
    if (where < 0).any():
        bad = np.flatnonzero(where < 0)
        raise ValueError(
            f"{path}: line {rows[bad[0]] + 2}: item_id {item_id[bad[0]]!r} is not in items.csv "
            f"({len(bad)} rows like this); add the item to items.csv or drop those rows"
        )

    if users is None:
        user, users = pd.factorize(user_id, sort=True)
        users = np.asarray(users, dtype=str)
    else:
        user = pd.Index(users).get_indexer(user_id)
        if (user < 0).any():
            first = int(np.flatnonzero(user < 0)[0])
            raise ValueError(
                f"{path}: line {rows[first] + 2}: user_id {user_id[first]!r} is not in users.csv; "
                "add the user to users.csv or drop the row"
            )

    ts = _numeric(
        path,
        "timestamp",
        df["timestamp"].to_numpy(dtype=object),
        rows,
        finite=True,
        limit=MAX_ABS_TIMESTAMP,
        what="timestamp (seconds)",
    )
    label = _numeric(path, "label", df["label"].to_numpy(dtype=object), rows, what="label")
    bad = np.flatnonzero((label != 0) & (label != 1))
    if len(bad):
        raise ValueError(
            f"{path}: line {rows[bad[0]] + 2}: label must be 0 or 1, got {df['label'].iloc[bad[0]]!r}; "
            "use 1 for a click and 0 for a shown-but-not-clicked item"
        )

    list_id = np.full(len(df), -1, np.int64)
    list_names = np.array([], dtype=str)
    if "list_id" in df:
        raw = df["list_id"].to_numpy(dtype=object)
        has = raw != ""
        codes, names = pd.factorize(raw[has])
        list_id[has] = codes
        list_names = np.asarray(names, dtype=str)
    position = np.full(len(df), -1, np.int64)
    if "position" in df:
        position = _optional_int(path, "position", df["position"].to_numpy(dtype=object), rows)
    click_prob = np.full(len(df), np.nan, np.float32)
    if "click_prob" in df:
        raw = df["click_prob"].to_numpy(dtype=object)
        has = raw != ""
        prob = _numeric(path, "click_prob", raw[has], rows[has], finite=True, what="click probability")
        bad = np.flatnonzero((prob < 0) | (prob > 1))
        if len(bad):
            raise ValueError(
                f"{path}: line {rows[has][bad[0]] + 2}: click_prob must be in [0, 1], "
                f"got {prob[bad[0]]}; leave it empty when unknown"
            )
        click_prob[has] = prob
    events = Events(
        user=np.asarray(user, np.int64),
        source=item_source[where].astype(np.int64),
        item=item_local[where].astype(np.int64),
        ts=ts,
        label=label.astype(np.int8),
        list_id=list_id,
        list_names=list_names,
        position=position,
        click_prob=click_prob,
        line=rows + 2,
        has_click_prob=bool(np.isfinite(click_prob).any()),
    )
    _check_lists(path, events, item_id)
    return events, users


def read_csv(path: Path, required: list[str], optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a CSV (or Parquet) as text columns after checking its header; errors name the file and what is missing."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; see docs/data.md for the LOGS folder layout")
    if path.suffix == ".parquet":
        from cloud.data.parquet import read_parquet_text

        header = parquet_columns(path)
        check_header(path, header, required, optional)
        return read_parquet_text(path, [c for c in header if c in required or c in optional])
    check_text(path)
    header = csv_header(path, required)
    check_header(path, header, required, optional)
    try:
        df = pd.read_csv(
            path, dtype=str, na_filter=False, keep_default_na=False, skip_blank_lines=False, encoding="utf-8-sig"
        )
    except ValueError as exc:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise ValueError(f"{path}: malformed CSV ({exc}); every row needs the header's number of fields") from exc
    if len(df.columns) != len(header):
        raise ValueError(
            f"{path}: line 1: the header has {len(header)} fields but the CSV reader found "
            f"{len(df.columns)}; check the header's quotes"
        )
    df.columns = header
    return df[[c for c in header if c in required or c in optional]]


@overload
def table_path(root: Path, stem: str, required: Literal[True] = True) -> Path: ...
@overload
def table_path(root: Path, stem: str, required: bool) -> Path | None: ...
def table_path(root: Path, stem: str, required: bool = True) -> Path | None:
    """LOGS/<stem>.csv or LOGS/<stem>.parquet (not both); None for a missing optional table."""
    found = [root / f"{stem}{suffix}" for suffix in (".csv", ".parquet") if (root / f"{stem}{suffix}").is_file()]
    if len(found) > 1:
        raise ValueError(f"{found[0]} and {found[1]}: both exist; keep one of them")
    if found:
        return found[0]
    if required:
        raise FileNotFoundError(
            f"{root / (stem + '.csv')}: not found (nor {stem}.parquet); see docs/data.md for the LOGS folder layout"
        )
    return None


def csv_header(path: Path, required: list[str]) -> list[str]:
    """The column names of a CSV's first line (stripped); a line that is not CSV or is empty is an error."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        first = fh.readline()
    try:
        header = next(csv.reader([first], strict=True), None)
    except csv.Error as exc:
        raise ValueError(
            f"{path}: line 1: the header is not valid CSV ({exc}); it must be the column names "
            "separated by commas on one line (look for an unbalanced quote)"
        ) from exc
    if not header:
        raise ValueError(f"{path}: line 1: no header; the first line must be a header with {required}")
    return [h.strip() for h in header]


def parquet_columns(path: Path) -> list[str]:
    """The column names of a Parquet file (its schema; no rows are read)."""
    import pyarrow.parquet as pq

    try:
        return [name.strip() for name in pq.read_schema(path).names]
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise ValueError(f"{path}: not a readable Parquet file ({exc}); write it again or use CSV") from exc


def check_header(path: Path, header: list[str], required: list[str], optional: tuple[str, ...] = ()) -> None:
    """Refuse repeated or missing columns."""
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise ValueError(f"{path}: line 1: column(s) {repeated} appear more than once; keep one of each")
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(
            f"{path}: line 1: missing column(s) {missing}; the header needs {required}"
            + (f" (optional: {list(optional)})" if optional else "")
        )


def check_text(path: Path, chunk_bytes: int = 1 << 20) -> None:
    """Raise a clear error (file, line, fix) unless the file is UTF-8 text without NUL bytes."""
    with path.open("rb") as fh:
        start = fh.read(4)
        if start[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) or start in (
            codecs.BOM_UTF32_LE,
            codecs.BOM_UTF32_BE,
        ):
            raise ValueError(
                f"{path}: the file is UTF-16/32 text (it starts with a byte-order mark); "
                "save it as UTF-8 (for example: iconv -f UTF-16 -t UTF-8)"
            )
        fh.seek(0)
        line, pending = 1, b""
        while True:
            chunk = fh.read(chunk_bytes)
            block = pending + chunk
            cut = len(block) if not chunk else block.rfind(NEWLINE) + 1  # whole lines until the end
            block, pending = block[:cut], block[cut:]
            nul = block.find(b"\x00")
            if nul >= 0:
                raise ValueError(
                    f"{path}: line {line + block.count(NEWLINE, 0, nul)}: a NUL byte (UTF-16 without a "
                    "byte-order mark, or not a text file?); save it as UTF-8 text"
                )
            try:
                block.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"{path}: line {line + block.count(NEWLINE, 0, exc.start)}: byte "
                    f"0x{block[exc.start]:02x} is not UTF-8 (Latin-1 or Windows-1252 text, or not a "
                    "text file?); save it as UTF-8"
                ) from None
            line += block.count(NEWLINE)
            if not chunk:
                return


def _require_nonempty(path: Path, column: str, values: np.ndarray, rows: np.ndarray | None = None) -> None:
    empty = np.flatnonzero(values == "")
    if len(empty):
        line = (empty[0] if rows is None else rows[empty[0]]) + 2
        raise ValueError(f"{path}: line {line}: {column} is empty; fill it in or drop the row")


def _numeric(
    path: Path,
    column: str,
    raw: np.ndarray,
    rows: np.ndarray,
    *,
    what: str,
    finite: bool = False,
    limit: float | None = None,
) -> np.ndarray:
    """Parse a text column to float64 (within +-limit if given); the first bad value raises an error naming its line."""
    values = pd.to_numeric(pd.Series(raw, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) if finite else np.isnan(values)
    if limit is not None:
        bad |= np.abs(values) > limit
    bad = np.flatnonzero(bad)
    if len(bad):
        got = raw[bad[0]]
        shown = "an empty value" if got == "" else repr(got) if len(repr(got)) <= 60 else repr(got)[:57] + "..."
        needed = (
            f"a number within +-{limit:.4g}"
            if np.isfinite(values[bad[0]])
            else f"a {'finite ' if finite else ''}number"
        )
        raise ValueError(
            f"{path}: line {rows[bad[0]] + 2}: column {column!r} ({what}) must be {needed}, "
            f"got {shown}; fix the value or drop the row"
        )
    return values


def _optional_int(path: Path, column: str, raw: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Parse a column of non-negative integers where empty means unknown (-1)."""
    out = np.full(len(raw), -1, np.int64)
    has = raw != ""
    values = _numeric(path, column, raw[has], rows[has], finite=True, limit=MAX_POSITION, what="non-negative integer")
    bad = np.flatnonzero((values < 0) | (values != np.round(values)))
    if len(bad):
        raise ValueError(
            f"{path}: line {rows[has][bad[0]] + 2}: column {column!r} must be a non-negative "
            f"integer, got {raw[has][bad[0]]!r}; leave it empty when unknown"
        )
    out[has] = values.astype(np.int64)
    return out


def _encode_categorical(path: Path, source: str, field: str, vocab: int, raw: np.ndarray) -> tuple[np.ndarray, int]:
    """Map raw values (compared as text) to 1..V-1 in sorted order; empty -> 0."""
    ids = np.zeros(len(raw), np.int64)
    has = raw != ""
    uniques, inverse = np.unique(raw[has].astype(str), return_inverse=True)
    ids[has] = inverse + 1
    needed = len(uniques) + 1
    if vocab and vocab < needed:
        raise ValueError(
            f"{path}: categorical field {field!r} of source {source!r} has {len(uniques)} distinct "
            f"values and needs vocab >= {needed} (0 is kept for unknown), but dataset.toml "
            f"gives vocab = {vocab}; raise it or set vocab = 0 to infer it"
        )
    return ids, vocab or needed


def _check_lists(path: Path, events: Events, item_id: np.ndarray) -> None:
    """Every list belongs to one user and shows an item at most once."""
    rows = np.flatnonzero(events.list_id >= 0)
    if len(rows) == 0:
        return
    shown = rows[np.lexsort((rows, events.item[rows], events.source[rows], events.list_id[rows]))]
    twice = np.flatnonzero(
        (events.list_id[shown[1:]] == events.list_id[shown[:-1]])
        & (events.source[shown[1:]] == events.source[shown[:-1]])
        & (events.item[shown[1:]] == events.item[shown[:-1]])
    )
    if len(twice):
        a, b = shown[twice[0]], shown[twice[0] + 1]
        raise ValueError(
            list_repeat_message(
                path,
                int(events.line[a]),
                int(events.line[b]),
                str(item_id[a]),
                str(events.list_names[events.list_id[a]]),
            )
        )
    order = rows[np.lexsort((events.user[rows], events.list_id[rows]))]
    same_list = events.list_id[order[1:]] == events.list_id[order[:-1]]
    clash = np.flatnonzero(same_list & (events.user[order[1:]] != events.user[order[:-1]]))
    if len(clash):
        lid = events.list_id[order[clash[0]]]
        members = np.flatnonzero(events.list_id == lid)
        a = members[0]
        b = members[events.user[members] != events.user[a]][0]
        raise ValueError(
            list_clash_message(path, int(events.line[a]), int(events.line[b]), str(events.list_names[lid]))
        )


def list_repeat_message(path: Path, line_a: int, line_b: int, item: str, list_name: str) -> str:
    """The error for an item shown twice in one list (shared by every prepare path)."""
    return (
        f"{path}: lines {line_a} and {line_b}: item_id {item!r} appears twice in list_id {list_name!r}; "
        "keep one row per shown item (label 1 if it was clicked) and drop the repeated row"
    )


def list_clash_message(path: Path, line_a: int, line_b: int, list_name: str) -> str:
    """The error for a list_id with rows of two users (shared by every prepare path)."""
    return (
        f"{path}: lines {line_a} and {line_b}: list_id {list_name!r} has rows of two users; "
        "a list is shown to one user, give each shown list its own list_id"
    )
