"""Latency of the device history store's calls on a real SQLite file; prints a markdown table.

    .venv/bin/python benchmarks/store_latency.py --behaviours 10000 --reps 1000

Fills a fresh store with `--behaviours` behaviours over 3 sources (30% clicks, item vectors of width
`--dim` cached), then times each call `--reps` times (write calls on their own copy of the data).
"""

from __future__ import annotations

import argparse
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
                item_id=f"{SOURCES[i % 3]}{rng.integers(1000)}", source=SOURCES[i % 3],
                action="click" if rng.random() < 0.3 else "impression", ts=float(i),
            )
            for i in range(behaviours)
        ]
    )


def timed(fn: Callable[[int], object], reps: int) -> np.ndarray:
    fn(-1)  # warm-up
    out = np.empty(reps)
    for i in range(reps):
        start = time.perf_counter()
        fn(i)
        out[i] = time.perf_counter() - start
    return out * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--behaviours", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--t", type=int, default=20)
    args = parser.parse_args()

    rng = np.random.default_rng(1)
    vector = rng.normal(size=args.dim)
    page = [(f"new{i}", rng.normal(size=args.dim)) for i in range(30)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.db"
        start = time.perf_counter()
        store = HistoryStore(path, retention_per_source=args.behaviours, sources=SOURCES)
        open_us = (time.perf_counter() - start) * 1e6
        fill(store, args.behaviours, args.dim)
        hist = store.last_clicks(SOURCES, args.t)
        rows.append((f"last_clicks(m=3, t={args.t}) -> {[len(h) for h in hist]} rows",
                     timed(lambda i: store.last_clicks(SOURCES, args.t), args.reps)))
        rows.append(("exposure_counts(m=3)", timed(lambda i: store.exposure_counts(SOURCES), args.reps)))
        rows.append(("record(click), synchronous=NORMAL", timed(
            lambda i: store.record(BehaviorEvent(item_id=f"video{i % 1000}", source="video", action="click",
                                                 ts=1e6 + i)), args.reps)))
        rows.append(("record(click + vector)", timed(
            lambda i: store.record(BehaviorEvent(item_id=f"v{i}", source="video", action="click", ts=2e6 + i,
                                                 vector=vector.tolist())), args.reps)))
        rows.append(("cache_items(30 items)", timed(lambda i: store.cache_items("ad", page, "e1"), args.reps // 4)))
        rows.append(("record_exposures(5 items)", timed(
            lambda i: store.record_exposures([(f"video{j}", "video") for j in range(5)], ts=3e6 + i), args.reps)))
        stats = store.stats()
        store.close()
        with HistoryStore(path, synchronous="FULL") as full:
            rows.append(("record(click), synchronous=FULL", timed(
                lambda i: full.record(BehaviorEvent(item_id="video1", source="video", action="click", ts=4e6 + i)),
                args.reps // 4)))

    print(f"HistoryStore latency: {args.behaviours} behaviours over 3 sources, dim {args.dim}; "
          f"SQLite {sqlite3.sqlite_version}, Python {platform.python_version()}, {platform.machine()}; "
          f"open {open_us:.0f} us; file {stats['file_bytes'] / 1e6:.1f} MB\n")
    print("| call | reps | median us | p90 us | p99 us |")
    print("|---|---:|---:|---:|---:|")
    for name, us in rows:
        p50, p90, p99 = np.percentile(us, [50, 90, 99])
        print(f"| {name} | {us.size} | {p50:.1f} | {p90:.1f} | {p99:.1f} |")


if __name__ == "__main__":
    main()
