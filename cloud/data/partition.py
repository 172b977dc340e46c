"""Out-of-core step one: DuckDB reads events.csv / events.parquet and splits it into user shards.

    plan = partition_events(Path("LOGS/events.csv"), users=None, work=Path("tmp"), memory_limit=4 << 30)
    plan.shards, plan.users          # shard count; all user ids in DATA order
    # work/events/shard=K/*.parquet  text columns plus `line`: every row of the users with hash % shards == K
    # work/users-K.npz               those users' ids and their index in plan.users

Nothing is loaded into Python but the user ids: after the header is checked with the in-memory
reader's code, DuckDB streams the file once into the shards (bounded by `memory_limit`, spilling to
`work`), numbering rows by their place in the file; the global queries then read the shards. The
rows themselves are validated shard by shard by cloud.data.logs.events_from_frame; the checks that
span shards (a list_id shown to two users, an item shown twice by them in one list, no list_id in
logged mode) run here in SQL after the shards, as the in-memory path runs them after the row checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cloud.data.logs import (
    EVENT_COLUMNS,
    EVENT_OPTIONAL,
    check_header,
    check_text,
    csv_header,
    list_clash_message,
    list_repeat_message,
    no_events_message,
    no_lists_message,
    parquet_columns,
)
from cloud.data.parquet import duckdb_module, literal, text_columns

# Peak memory of list building per byte of the events file. Measured on CSV (BENCHMARKS.md): a shard
# about 12 (plus ~0.4 GB of libraries per process); the whole in-memory path 14-17 (500-600 bytes per
# event), which the engine choice's "half the limit" rule covers. Parquet's figure is an estimate.
MEMORY_PER_FILE_BYTE = {".csv": 12, ".parquet": 40}


@dataclass(frozen=True)
class Partition:
    """The shards of one events table."""

    events_path: Path
    work: Path
    shards: int
    events: int
    users: np.ndarray  # str [U], DATA's user order
    columns: tuple[str, ...]  # the events columns kept (required and optional ones present)


def shard_events(work: Path, shard: int) -> Path:
    """The folder of a shard's events (Parquet files, rows in any order, with `line`)."""
    return work / "events" / f"shard={shard}"


def shard_users(work: Path, shard: int) -> Path:
    """The shard's users: ids and their index in DATA's user order."""
    return work / f"users-{shard}.npz"


def connect(work: Path, memory_limit: int):
    """A DuckDB connection bounded by `memory_limit` bytes that spills to `work`; `ev` is the sharded events."""
    duckdb = duckdb_module()
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{max(memory_limit // (1 << 20), 64)}MB'").fetchall()
    con.execute(f"SET temp_directory = {literal(work / 'duckdb-spill')}").fetchall()
    con.execute("SET preserve_insertion_order = true").fetchall()
    if (work / "events").is_dir():
        con.execute(
            f"CREATE VIEW ev AS SELECT * FROM read_parquet({literal(work / 'events' / '*' / '*.parquet')}, "
            "hive_partitioning = true)"
        ).fetchall()
    return con


def partition_events(
    events_path: Path, users: np.ndarray | None, work: Path, memory_limit: int, shards: int | None = None
) -> Partition:
    """Shard and count the events; `users` from users.csv or None (then sorted distinct ids).

    Shards hold about memory_limit / 2 of list-builder memory (estimated from the file size) unless
    `shards` is given; DuckDB itself gets memory_limit / 2.
    """
    if shards is not None and shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    duckdb = duckdb_module()
    work.mkdir(parents=True, exist_ok=True)
    if shards is None:
        need = events_path.stat().st_size * MEMORY_PER_FILE_BYTE[events_path.suffix]
        shards = max(1, math.ceil(need / (memory_limit / 2)))
    con = connect(work, memory_limit // 2)
    try:
        columns = _write_shards(con, events_path, work / "events", shards)
        con.close()
        con = connect(work, memory_limit // 2)
        total = con.execute("SELECT count(*) FROM ev").fetchall()[0][0] if (work / "events").is_dir() else 0
        if total == 0:
            raise ValueError(no_events_message(events_path))
        if users is None:
            distinct = con.execute("SELECT DISTINCT user_id FROM ev WHERE user_id <> ''").fetchnumpy()["user_id"]
            users = np.asarray(sorted(distinct.tolist()), dtype=str)
        user_frame = pd.DataFrame({"user_id": users, "index": np.arange(len(users))})
        con.register("user_frame", user_frame)
        user_shard = con.execute(
            f"SELECT hash(user_id) % {shards} AS shard FROM user_frame ORDER BY index"
        ).fetchnumpy()["shard"]
    except duckdb.Error as exc:
        summary = "; ".join(line.strip() for line in str(exc).splitlines()[:3] if line.strip())
        if events_path.suffix == ".parquet":
            raise ValueError(f"{events_path}: not a readable Parquet file ({summary}); write it again") from exc
        raise ValueError(
            f"{events_path}: malformed CSV ({summary}); every row needs the header's number of fields"
        ) from exc
    finally:
        con.close()
    plan = Partition(events_path, work, shards, int(total), users, tuple(columns))
    for shard in range(shards):
        mine = np.flatnonzero(user_shard == shard)
        np.savez(shard_users(work, shard), ids=users[mine], index=mine)
    return plan


def check_across_shards(plan: Partition, list_mode: str, memory_limit: int) -> None:
    """The checks that span users: a list_id with rows of two users (an item repeated in it reported first,
    as the in-memory path does); logged mode without any list_id."""
    if "list_id" not in plan.columns:
        if list_mode == "logged":
            raise ValueError(no_lists_message(plan.events_path))
        return
    con = connect(plan.work, memory_limit // 2)
    try:
        clash = con.execute(
            "SELECT list_id, min(line) AS first FROM ev WHERE list_id <> '' GROUP BY list_id "
            "HAVING min(user_id) <> max(user_id) ORDER BY first LIMIT 1"
        ).fetchall()
        if clash:
            repeat = con.execute(  # an item shown twice by two users (within one user a shard finds it)
                "WITH two AS (SELECT list_id FROM ev WHERE list_id <> '' GROUP BY list_id "
                "HAVING min(user_id) <> max(user_id)) "
                "SELECT list_id, item_id, list_sort(list(line))[1] AS a, list_sort(list(line))[2] AS b "
                "FROM ev JOIN two USING (list_id) GROUP BY list_id, item_id HAVING count(*) > 1 "
                "ORDER BY a LIMIT 1"
            ).fetchall()
            if repeat:
                name, item, a, b = repeat[0]
                raise ValueError(list_repeat_message(plan.events_path, int(a), int(b), item, name))
            name, first = clash[0]
            other = con.execute(
                "SELECT min(line) FROM ev WHERE list_id = ? AND user_id <> (SELECT user_id FROM ev WHERE line = ?)",
                [name, first],
            ).fetchall()[0][0]
            raise ValueError(list_clash_message(plan.events_path, int(first), int(other), name))
        if list_mode == "logged" and not con.execute("SELECT count(*) FROM ev WHERE list_id <> ''").fetchall()[0][0]:
            raise ValueError(no_lists_message(plan.events_path))
    finally:
        con.close()


def _write_shards(con, path: Path, folder: Path, shards: int) -> list[str]:
    """Stream the file into folder/shard=K/*.parquet (kept columns as text, `line` = 1-based file line)."""
    required, optional = list(EVENT_COLUMNS), EVENT_OPTIONAL
    if path.suffix == ".parquet":
        header = parquet_columns(path)
        check_header(path, header, required, optional)
        source = f"read_parquet({literal(path)}, file_row_number = true)"
        line = "file_row_number + 2"
    else:
        check_text(path)
        header = csv_header(path, required)
        check_header(path, header, required, optional)
        types = ", ".join(f"{literal(h)}: 'VARCHAR'" for h in header)
        source = (
            f"read_csv({literal(path)}, header = false, skip = 1, columns = {{{types}}}, delim = ',', "
            "quote = '\"', escape = '\"', null_padding = true, strict_mode = true, "
            "encoding = 'utf-8', auto_detect = false)"
        )
        line = "row_number() OVER () + 1"  # rows in file order (insertion order is preserved)
    keep = [c for c in header if c in required or c in optional]
    con.execute(
        f"COPY (SELECT {text_columns(keep)}, {line} AS line, hash(user_id) % {shards} AS shard "
        f"FROM {source}) TO {literal(folder)} (FORMAT PARQUET, PARTITION_BY (shard))"
    ).fetchall()
    return keep
