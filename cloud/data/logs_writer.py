"""Write a LOGS folder (dataset.toml, items.csv, events.csv, optional users.csv) atomically.

    check_out("logs", force=False)                  # fail fast before any expensive work
    write_logs_folder("logs", spec, {"items.csv": items_df, "events.csv": events_df},
                      comments=["made by dir-cloud synth --seed 0"], force=False)

The folder is written under a temporary name next to `out` and renamed into place at the end, so an
interrupted run leaves no half-written LOGS folder. An existing non-empty `out` is refused unless `force`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from shared_schema.files import replace_dir
from shared_schema.specs import DatasetSpec

_TOP_KEYS = ("name", "n", "t", "K", "lag", "list_mode", "negatives", "valid_fraction", "test_fraction")


def dataset_toml(spec: DatasetSpec, comments: Iterable[str] = ()) -> str:
    """The dataset.toml text for `spec` (comments become `#` lines at the top)."""
    lines = [f"# {line}".rstrip() for text in comments for line in text.splitlines()]
    lines += [f"{key} = {_value(getattr(spec, key))}" for key in _TOP_KEYS]
    for source in spec.sources:
        categorical = ", ".join(f"{{name = {_value(f.name)}, vocab = {f.vocab}}}" for f in source.categorical)
        dense = ", ".join(f"{{name = {_value(f.name)}, dim = {f.dim}}}" for f in source.dense)
        lines += [
            "",
            "[[sources]]",
            f"name = {_value(source.name)}",
            f"target_share = {_value(source.target_share)}",
            f"categorical = [{categorical}]",
            f"dense = [{dense}]",
        ]
    return "\n".join(lines) + "\n"


def _value(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, float):
        return repr(value)
    return str(value)


def check_out(out: str | Path, force: bool = False) -> Path:
    """Refuse an `out` that is a file, or a non-empty folder unless `force`; returns it as a Path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out}: folder exists and is not empty; choose another --out or pass --force")
    return out


def write_logs_folder(
    out: str | Path,
    spec: DatasetSpec,
    tables: Mapping[str, pd.DataFrame],
    comments: Iterable[str] = (),
    force: bool = False,
) -> Path:
    """Write dataset.toml and one CSV per `tables` entry (file name -> frame) into `out`, atomically."""
    out = check_out(out, force)
    with replace_dir(out, force) as tmp:
        (tmp / "dataset.toml").write_text(dataset_toml(spec, comments), encoding="utf-8")
        for name, frame in tables.items():
            frame.to_csv(tmp / name, index=False, float_format="%.6g", lineterminator="\n")
    return out
