"""Latency of the device history store's calls on a real SQLite file; prints a markdown table.

    .venv/bin/python benchmarks/store_latency.py --behaviours 10000 --reps 1000

Fills a fresh store with `--behaviours` behaviours over 3 sources (half clicks, half impressions; 1000
item vectors of width `--dim` cached per source), then times each call `--reps` times: wall time, and
the calling thread's CPU time (the cost without the waits for other processes on a loaded machine).
The retention (default: the behaviours filled per source and kind) puts the store at its bound, so
every timed write also prunes.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from device_runtime.store import HistoryStore
from shared_schema.messages import BehaviorEvent

SOURCES = ["video", "article", "ad"]


def fill(store: HistoryStore, behaviours: int, dim: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for source in SOURCES:
        store.cache_items(source, [(f"{source}{i}", rng.normal(size=dim)) for i in range(1000)], "e1")
    store.record_many(
        [
            BehaviorEvent(
                item_id=f"{SOURCES[i % 3]}{rng.integers(1000)}",
                source=SOURCES[i % 3],
                action="click" if (i // len(SOURCES)) % 2 else "impression",
                ts=float(i),
            )
            for i in range(behaviours)
        ]
    )


def timed(fn: Callable[[int], object], reps: int) -> tuple[np.ndarray, np.ndarray]:
    """Wall and thread CPU time of `reps` calls, in microseconds."""
    fn(-1)  # warm-up
    wall, cpu = np.empty(reps), np.empty(reps)
    for i in range(reps):
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn(i)
        wall[i], cpu[i] = time.perf_counter() - start, time.thread_time() - start_cpu
    return wall * 1e6, cpu * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--behaviours", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--t", type=int, default=20)
    parser.add_argument("--retention", type=int, help="per source and kind (default: what the fill puts in each)")
    args = parser.parse_args()
    retention = args.retention or max(1, args.behaviours // (2 * len(SOURCES)))

    rng = np.random.default_rng(1)
    vector = rng.normal(size=args.dim)
    page = [(f"new{i}", rng.normal(size=args.dim)) for i in range(30)]
    shown = {s: ([f"{s}{i}" for i in range(10)], rng.normal(size=(10, args.dim))) for s in SOURCES}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.db"
        start = time.perf_counter()
        store = HistoryStore(path, retention_per_source=retention, sources=SOURCES)
        open_us = (time.perf_counter() - start) * 1e6
        fill(store, args.behaviours, args.dim)
        store.cache_sources(shown, "e1")
        hist = store.last_clicks(SOURCES, args.t)
        rows.append(
            (
                f"last_clicks(m=3, t={args.t}) -> {[len(h) for h in hist]} rows",
                timed(lambda i: store.last_clicks(SOURCES, args.t), args.reps),
            )
        )
        rows.append(("exposure_counts(m=3)", timed(lambda i: store.exposure_counts(SOURCES), args.reps)))
        rows.append(
            (
                "record(click), synchronous=NORMAL",
                timed(
                    lambda i: store.record(
                        BehaviorEvent(item_id=f"video{i % 1000}", source="video", action="click", ts=1e6 + i)
                    ),
                    args.reps,
                ),
            )
        )
        rows.append(
            (
                "record(click + vector)",
                timed(
                    lambda i: store.record(
                        BehaviorEvent(
                            item_id=f"v{i}", source="video", action="click", ts=2e6 + i, vector=vector.tolist()
                        )
                    ),
                    args.reps,
                ),
            )
        )
        rows.append(
            (
                "cache_sources(3 x 10 items, already cached)",
                timed(lambda i: store.cache_sources(shown, "e1"), args.reps),
            )
        )
        rows.append(
            (
                "cache_items(30 items, new vectors)",
                timed(
                    lambda i: store.cache_items("ad", [(item_id, v + i) for item_id, v in page], "e1"), args.reps // 4
                ),
            )
        )
        rows.append(
            (
                "record_exposures(5 items)",
                timed(
                    lambda i: store.record_exposures([(f"video{j}", "video") for j in range(5)], ts=3e6 + i), args.reps
                ),
            )
        )
        stats = store.stats()
        store.close()
        with HistoryStore(path, retention, synchronous="FULL") as full:
            rows.append(
                (
                    "record(click), synchronous=FULL",
                    timed(
                        lambda i: full.record(
                            BehaviorEvent(item_id="video1", source="video", action="click", ts=4e6 + i)
                        ),
                        args.reps // 4,
                    ),
                )
            )

    print(
        f"HistoryStore latency: {args.behaviours} behaviours over 3 sources, dim {args.dim}, retention "
        f"{retention} per source and kind (at the bound: {stats['behaviors']}); SQLite {sqlite3.sqlite_version}, "
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; open {open_us:.0f} us; file {stats['file_bytes'] / 1e6:.1f} MB\n"
    )
    print("| call | reps | median us | p90 us | p99 us | cpu median us | cpu p99 us |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (wall, cpu) in rows:
        p50, p90, p99 = np.percentile(wall, [50, 90, 99])
        c50, c99 = np.percentile(cpu, [50, 99])
        print(f"| {name} | {wall.size} | {p50:.1f} | {p90:.1f} | {p99:.1f} | {c50:.1f} | {c99:.1f} |")


if __name__ == "__main__":
    main()
