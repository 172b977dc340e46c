"""Turn a LOGS folder into a prepared DATA folder (the on-disk format in docs/data.md).

    from cloud.data.prepare import prepare
    stats = prepare("my_logs", "my_data", force=False, seed=0)

The output is written to a temporary folder beside DATA and renamed into place only when complete,
so a failure leaves nothing half-written; an existing DATA is refused unless `force=True`. Before
building lists, the memory they need is estimated and checked against the memory available.
Time split: lists are in time order; the valid cut is the timestamp of the list at quantile
1 - valid_fraction - test_fraction, the test cut the one at 1 - test_fraction. A split holds the
lists with cut <= ts < next cut, so lists with equal timestamps never straddle two splits (a tie at
a cut goes to the later split).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from cloud.data.dense_scaling import standardised
from cloud.data.history import histories
from cloud.data.lists import build_lists
from cloud.data.logs import ItemTable, Logs, read_logs
from shared_schema.files import recover_dir, replace_dir
from shared_schema.specs import SCHEMA_VERSION, DatasetSpec

SPLITS = ("train", "valid", "test")


def prepare(
    logs_dir: str | Path, out_dir: str | Path, *, force: bool = False, seed: int = 0, memory_limit: int | None = None
) -> dict:
    """Validate LOGS, build lists, histories and the time split, write DATA; returns dataset.json's stats.

    `memory_limit`: bytes the lists may take (default: the memory available now).
    """
    out = refuse_existing(out_dir, force)
    logs = read_logs(logs_dir)
    check_memory(logs, Path(logs_dir) / "dataset.toml", available_memory() if memory_limit is None else memory_limit)
    spec = logs.spec
    lists = build_lists(logs, seed)
    views = histories(logs.events, lists.user, lists.ts, spec.m, spec.t, spec.lag)
    bounds = time_split(lists.ts, spec, logs.events_path)
    arrays = {
        "user": lists.user,
        "ts": lists.ts,
        "cand_item": lists.cand_item,
        "label": lists.label,
        "click_prob": lists.click_prob,
        "position": lists.position,
        **views,
    }
    stats = split_stats(len(logs.events), int(logs.events.label.sum()), seed, lists.ts, bounds, lists.stats)
    spec = standardised(spec, logs.items, lists.cand_item[slice(*bounds["train"])])  # dense mean/std of train
    with replace_dir(out, force) as tmp:
        write_catalog(tmp, logs.items, logs.users)
        for name, (a, b) in bounds.items():
            (tmp / name).mkdir()
            for key, value in arrays.items():
                np.save(tmp / name / f"{key}.npy", value[a:b])
        write_meta(tmp, spec, stats, logs.items, len(logs.users), logs.events.has_click_prob)
    return stats


def refuse_existing(out_dir: str | Path, force: bool) -> Path:
    """`out_dir` as a Path, after restoring what a run killed while replacing it left beside it; an
    existing one is an error unless `force`."""
    out = Path(out_dir)
    recover_dir(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out}: already exists; choose another --out or pass --force to replace it")
    return out


def split_stats(
    events: int, clicks: int, seed: int, ts: np.ndarray, bounds: dict[str, tuple[int, int]], list_stats: dict
) -> dict:
    """dataset.json's stats: counts, each split's list count and time range, the list builder's counters."""
    return {
        "events": events,
        "clicks": clicks,
        "seed": seed,
        "lists": {name: int(b - a) for name, (a, b) in bounds.items()},
        "time_range": {name: [float(ts[a]), float(ts[b - 1])] for name, (a, b) in bounds.items()},
        **list_stats,
    }


def write_catalog(folder: Path, items: dict[str, ItemTable], users: np.ndarray) -> None:
    """DATA/items/<source>/{ids,categorical,dense}.npy and DATA/users.npy."""
    for name, table in items.items():
        source = folder / "items" / name
        source.mkdir(parents=True)
        np.save(source / "ids.npy", table.ids)
        np.save(source / "categorical.npy", table.categorical)
        np.save(source / "dense.npy", table.dense)
    np.save(folder / "users.npy", users)


def write_meta(
    folder: Path, spec: DatasetSpec, stats: dict, items: dict[str, ItemTable], num_users: int, has_click_prob: bool
) -> None:
    """DATA/dataset.json (`spec` with the dense standardisation filled in)."""
    meta = {
        "schema_version": SCHEMA_VERSION,
        "spec": spec.model_dump(mode="json"),
        "stats": stats,
        "num_items": {name: len(table) for name, table in items.items()},
        "num_users": num_users,
        "has_click_prob": has_click_prob,
    }
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def memory_needed(logs: Logs) -> tuple[int, int]:
    """(lists, bytes) prepare will build: a rough peak for the [L, m, n] and [L, m, t] arrays and their
    temporaries, and in sampled mode the [clicks, negatives + 1] draws."""
    spec = logs.spec
    if spec.list_mode == "logged":
        lists, draws = len(logs.events.list_names), 0
    else:
        lists = int(logs.events.label.sum())
        draws = lists * (spec.negatives + 1) * 8 * 8
    per_list = spec.m * (spec.n * 24 + spec.t * 2 * 12) * 2 + spec.t * 8 * 4
    return lists, lists * per_list + draws


def check_memory(logs: Logs, toml: Path, limit: int | None) -> None:
    """Refuse before allocating when the lists would need more than `limit` bytes (None: no check)."""
    lists, need = memory_needed(logs)
    if limit is not None and need > limit:
        spec = logs.spec
        raise ValueError(
            f"{toml}: {lists} lists of m={spec.m} sources with n={spec.n} candidates and t={spec.t} history "
            + (f"and {spec.negatives} negatives " if spec.list_mode == "sampled" else "")
            + f"need about {need / 2**30:.3g} GiB, more than the {limit / 2**30:.3g} GiB of memory available; "
            + ("lower n, t or negatives" if spec.list_mode == "sampled" else "lower n or t")
            + " in dataset.toml, "
            "or prepare fewer events"
        )


def available_memory() -> int | None:
    """Bytes of memory available now (Linux MemAvailable within any cgroup limit), else physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            found = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    try:
        cgroup = Path("/sys/fs/cgroup")
        cap = (cgroup / "memory.max").read_text().strip()
        if cap.isdigit():
            found = min(found, int(cap) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return found


def time_split(ts: np.ndarray, spec: DatasetSpec, events_path: Path | str = "events.csv") -> dict[str, tuple[int, int]]:
    """[start, stop) of train, valid and test in the time-sorted lists; empty splits are an error."""
    total = len(ts)
    cuts = [0]
    for fraction in (1 - spec.valid_fraction - spec.test_fraction, 1 - spec.test_fraction):
        at = min(int(total * fraction), total - 1)
        cuts.append(int(np.searchsorted(ts, ts[at], side="left")))
    cuts.append(total)
    bounds = {name: (cuts[i], cuts[i + 1]) for i, name in enumerate(SPLITS)}
    empty = [name for name, (a, b) in bounds.items() if a == b]
    if empty:
        raise ValueError(
            f"{events_path}: the time split leaves {empty} empty ({total} lists, {len(np.unique(ts))} distinct "
            "list timestamps); add more lists or change valid_fraction/test_fraction in dataset.toml"
        )
    return bounds
