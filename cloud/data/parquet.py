"""Parquet LOGS tables, as text columns like the CSV reader gives (needs the `scale` extra).

    frame = read_parquet_text(Path("LOGS/events.parquet"), ["user_id", "item_id", "timestamp", "label"])

Every value is read as DuckDB's text form of it (7 -> "7", 0.5 -> "0.5") and a null as "", so the
same validation and the same messages apply to Parquet and CSV. pandas writes a float NaN as null
(unknown), as an empty CSV field would be.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

SCALE_HINT = "install the scale extra (pip install 'dir-rerank[scale]')"


def duckdb_module():
    """Import duckdb, or explain which extra provides it."""
    try:
        import duckdb
    except ImportError as exc:
        raise ImportError(f"duckdb is missing; Parquet logs and out-of-core prepare need it: {SCALE_HINT}") from exc
    return duckdb


def text_columns(columns: list[str]) -> str:
    """SQL select list: each column as text, null as ''."""
    return ", ".join(f"COALESCE(CAST({quote(c)} AS VARCHAR), '') AS {quote(c)}" for c in columns)


def quote(name: str) -> str:
    """A SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str | Path) -> str:
    """A SQL string literal."""
    return "'" + str(text).replace("'", "''") + "'"


def read_parquet_text(path: Path, columns: list[str]) -> pd.DataFrame:
    """The given columns of a Parquet file as text, in file order."""
    duckdb = duckdb_module()
    with duckdb.connect() as con:
        try:
            frame = con.execute(
                f"SELECT {text_columns(columns)} FROM read_parquet({literal(path)}, file_row_number = true) "
                "ORDER BY file_row_number"
            ).df()
        except duckdb.Error as exc:
            raise ValueError(f"{path}: not a readable Parquet file ({exc}); write it again or use CSV") from exc
    return frame.astype(object)
