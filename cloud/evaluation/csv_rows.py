"""Rows of dicts to and from CSV files, numbers read back as numbers (results.csv, table.csv, tradeoff.csv).

    write_csv_rows(path, rows)      # the header: every key of every row, in first-seen order
    rows = read_csv_rows(path)

Every CSV table of the evaluation (grids, results, the trade-off study) is written and read here.
"""

from __future__ import annotations

import csv
from pathlib import Path


def write_csv_rows(path: Path, rows: list[dict]) -> None:
    """`rows` as a CSV file with one column per key."""
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def read_csv_rows(path: str | Path) -> list[dict]:
    """Rows of a CSV written by write_csv_rows, numbers as numbers."""
    with open(path, newline="") as handle:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
