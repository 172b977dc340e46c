"""Prepare logs of any size: in memory, out of core with DuckDB, or with the shards on a Ray cluster.

    stats, how = prepare_logs("LOGS", "DATA")                            # picks the path by size
    stats, how = prepare_logs("LOGS", "DATA", memory_limit=parse_size("4GB"))
    stats, how = prepare_logs("LOGS", "DATA", ray="auto")                 # shards as Ray tasks

Every path writes the same DATA (docs/data.md): the same lists, histories, split and vocabularies.
Out of core, DuckDB splits events by a hash of the user into shards of about memory_limit / 2 of
list-builder memory (cloud.data.partition), each shard runs the in-memory list builder
(cloud.data.shards), and a streaming merge writes the splits in time order. Items and users are
read in memory on every path (they are the catalogue, not the log).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np

from cloud.data.dense_scaling import standardised
from cloud.data.logs import logs_folder, read_catalogue, table_path
from cloud.data.partition import (
    MEMORY_PER_FILE_BYTE,
    check_across_shards,
    partition_events,
)
from cloud.data.prepare import (
    prepare,
    refuse_existing,
    split_stats,
    write_catalog,
    write_meta,
)
from cloud.data.shards import ShardJob, build_shard, merge_shards
from shared_schema.files import replace_dir

ENGINES = ("auto", "memory", "duckdb")
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 1 << 10,
    "MIB": 1 << 20,
    "GIB": 1 << 30,
    "TIB": 1 << 40,
}


def prepare_logs(
    logs_dir: str | Path,
    out_dir: str | Path,
    *,
    force: bool = False,
    seed: int = 0,
    engine: str = "auto",
    memory_limit: int | None = None,
    ray: str | None = None,
    shards: int | None = None,
    max_retries: int = 3,
) -> tuple[dict, str]:
    """Prepare with the chosen path; returns dataset.json's stats and a sentence saying which path ran.

    `memory_limit` (bytes; default: half this machine's memory) picks the path, bounds DuckDB and sizes
    the shards; in memory, it caps the lists' estimated size (default: the memory available now).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    limit = memory_limit or default_memory_limit()
    if ray:
        how = f"out of core, shards as Ray tasks on {ray} (DuckDB memory limit {_size(limit)})"
        engine = "duckdb"
    elif engine == "auto":
        engine, how = choose_engine(logs_dir, limit)
    else:
        how = (
            "in memory (chosen)"
            if engine == "memory"
            else f"out of core with DuckDB (chosen, memory limit {_size(limit)})"
        )
    if engine == "memory":
        return prepare(logs_dir, out_dir, force=force, seed=seed, memory_limit=memory_limit), how
    stats = prepare_out_of_core(
        logs_dir, out_dir, force=force, seed=seed, memory_limit=limit, ray=ray, shards=shards, max_retries=max_retries
    )
    return stats, how


def prepare_out_of_core(
    logs_dir: str | Path,
    out_dir: str | Path,
    *,
    force: bool = False,
    seed: int = 0,
    memory_limit: int,
    ray: str | None = None,
    shards: int | None = None,
    max_retries: int = 3,
) -> dict:
    """DuckDB shards the events by user, each shard builds its lists (locally or on Ray), merge to DATA."""
    out = refuse_existing(out_dir, force)
    spec, items, users, events_path = read_catalogue(logs_dir)
    with replace_dir(out, force) as tmp:
        work = tmp / "_shards"
        plan = partition_events(events_path, users, work, memory_limit, shards)
        jobs = [ShardJob(events_path, work, k, spec, seed) for k in range(plan.shards)]
        if ray:
            from cloud.data.ray_tasks import run_on_ray

            results = run_on_ray(build_shard, jobs, items, ray, max_retries)
        else:
            results = [build_shard(job, items) for job in jobs]
        check_across_shards(plan, spec.list_mode, memory_limit)
        ts, bounds = merge_shards(plan, results, spec, tmp)
        spec = standardised(spec, items, np.load(tmp / "train" / "cand_item.npy", mmap_mode="r"))
        list_stats: dict[str, int] = {}
        for result in results:
            for key, value in result["stats"].items():
                list_stats[key] = list_stats.get(key, 0) + value
        stats = split_stats(plan.events, sum(r["clicks"] for r in results), seed, ts, bounds, list_stats)
        write_catalog(tmp, items, plan.users)
        write_meta(tmp, spec, stats, items, len(plan.users), any(r["has_click_prob"] for r in results))
        shutil.rmtree(work)
    return stats


def choose_engine(logs_dir: str | Path, memory_limit: int) -> tuple[str, str]:
    """("memory", why) when the in-memory path's estimated peak fits half the limit, else ("duckdb", why)."""
    events = table_path(logs_folder(logs_dir), "events")
    size = events.stat().st_size
    need = size * MEMORY_PER_FILE_BYTE[events.suffix]
    if need <= memory_limit / 2:
        return "memory", (
            f"in memory ({events.name} is {_size(size)}, about {_size(need)} in memory, "
            f"within half the memory limit {_size(memory_limit)})"
        )
    return "duckdb", (
        f"out of core with DuckDB ({events.name} is {_size(size)}, about {_size(need)} in memory, "
        f"over half the memory limit {_size(memory_limit)})"
    )


def default_memory_limit() -> int:
    """Half of this machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def parse_size(text: str) -> int:
    """'4GB', '512MiB', '2e9' -> bytes (GB = 10^9, GiB = 2^30)."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(f"memory limit {text!r}: write a number and a unit, e.g. 4GB or 512MiB")
    value = float(match.group(1)) * _UNITS[unit]
    if value < 64 * 2**20:
        raise ValueError(f"memory limit {text!r}: at least 64MiB")
    return int(value)


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
