"""What a device rerank cannot go below: the steps every rerank must take, each timed alone, beside the
whole rerank, in one run.

    python benchmarks/rerank_floor.py --bundle out/bundle [--pair tflite:xnnpack] [--requests 3000]

The same store and slates as `rerank_latency.py` (10,000 stored clicks, merge=controller, fixed item
vectors). Each step runs `--requests` times on its own and its p50 is printed as a multiple of the
model call's: the model call on the page's inputs; the page's exposure write as one SQLite transaction
(BEGIN IMMEDIATE, K exposure rows, their tally, COMMIT) with nothing else; the slate's item vectors, JSON
numbers parsed into Python floats, converted to float32 arrays the fastest way we know (`struct.pack` of
the chained floats, which also refuses a value beyond float32; numpy's `np.array` and a finite check
are timed beside it but left out of the sum); the `PRAGMA data_version` read that
tells whether another connection wrote; and one result item per candidate. Their sum, against the
whole rerank's p50, shows how much of the rest is the runtime's own code.

A second table times the whole rerank three ways, with each stage's p50: with the model; with the model
call answered from memory (the last page's outputs, no kernel run); and answered from memory after a
busy wait as long as the model call. The runtime's own time (wall less the inference stage) in the first
against the third is what running the model's kernels costs the Python around them (the kernels and
the runtime share the core's caches); the second against the third, what the time alone costs.
"""

from __future__ import annotations

import argparse
import os
import struct
import tempfile
import time
from itertools import chain
from pathlib import Path

import numpy as np
from rerank_latency import seed_history, slates

from device_runtime.bundle import read_manifest
from device_runtime.reranker import Reranker
from device_runtime.store import add_to_tallies
from device_runtime.validation import VECTOR_DTYPE
from shared_schema import RankedItem


def p50_ms(step, count: int) -> float:
    times = []
    for i in range(count):
        start = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def rerank_stages(reranker: Reranker, pages: list, count: int) -> dict[str, float]:
    """p50 ms of the whole rerank (wall), of the runtime's own time (wall less inference) and of each stage."""
    walls, stages = [], []
    for i in range(count):
        start = time.perf_counter()
        result = reranker.rerank(pages[i % len(pages)])
        walls.append(time.perf_counter() - start)
        stages.append(result.timings_ms)
    own = [wall * 1e3 - timings["inference"] for wall, timings in zip(walls, stages)]
    medians = {"wall": float(np.median(walls)) * 1e3, "runtime's own": float(np.median(own))}
    return medians | {name: float(np.median([t[name] for t in stages])) for name in stages[0] if name != "total"}


def busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="bundle directory")
    parser.add_argument("--pair", default="tflite:xnnpack", help="BACKEND:DELEGATE (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=3000, help="timed calls per step (default: 3000)")
    args = parser.parse_args()
    manifest = read_manifest(args.bundle)
    rng = np.random.default_rng(0)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        per_source = -(-10_000 // len(manifest.sources))
        backend, delegate = args.pair.split(":")
        with Reranker.open(
            args.bundle, Path(tmp) / "h.db", backend, delegate, "controller", retention_per_source=per_source
        ) as reranker:
            seed_history(reranker, 10_000, rng)
            pages = slates(manifest, 64, rng, new_vectors=False)
            for i in range(200):
                reranker.rerank(pages[i % len(pages)])
            inputs = list(reranker._buffers.arrays.values())  # the last page's inputs
            conn, sources, K = reranker.store.db.conn, manifest.source_names, manifest.K

            def exposure_write(i: int) -> None:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT INTO exposures (ts, item_id, source, request_id) VALUES (?, ?, ?, ?)",
                    [(1.0, f"f{i}-{k}", sources[k % len(sources)], "floor") for k in range(K)],
                )
                shown = [sources[k % len(sources)] for k in range(K)]
                counts = [(s, shown.count(s), shown.count(s)) for s in dict.fromkeys(shown)]
                add_to_tallies(conn, reranker.store.memos.read_tallies(conn), "exposure", counts)
                conn.execute("COMMIT")

            def vectors_numpy(i: int) -> None:
                for entry in pages[i % len(pages)].sources:
                    np.isfinite(np.array([item.vector for item in entry.items], dtype=VECTOR_DTYPE)).all()

            def vectors_struct(i: int) -> None:
                for entry in pages[i % len(pages)].sources:
                    items = entry.items
                    count = len(items) * len(items[0].vector)
                    blob = struct.pack(f"<{count}f", *chain.from_iterable(item.vector for item in items))
                    np.frombuffer(blob, VECTOR_DTYPE).reshape(len(items), -1)

            def result_items(i: int) -> None:
                for entry in pages[i % len(pages)].sources:
                    for item in entry.items:
                        RankedItem.checked(item.item_id, entry.source, 0.5, item.title)

            steps = {
                "model call (inference)": lambda i: reranker.backend.invoke_in_order(inputs),
                f"exposure write ({K} rows, one transaction)": exposure_write,
                "slate vectors to float32 (struct.pack)": vectors_struct,
                "PRAGMA data_version": lambda i: conn.execute("PRAGMA data_version").fetchone(),
                "result items": result_items,
            }
            measured = {name: p50_ms(step, args.requests) for name, step in steps.items()}
            numpy_way = p50_ms(vectors_numpy, args.requests)
            model_call = reranker.backend.invoke_in_order
            answer = model_call(inputs)
            call_s = measured["model call (inference)"] / 1e3

            def answer_after_waiting(arrays: list[np.ndarray]) -> list[np.ndarray]:
                busy_wait(call_s)
                return answer

            ways = {
                "with the model": model_call,
                "model answered from memory": lambda arrays: answer,
                "answered from memory after a busy wait as long as the model call": answer_after_waiting,
            }
            by_way = {}
            for way, call in ways.items():
                reranker.backend.invoke_in_order = call  # type: ignore[method-assign]
                by_way[way] = rerank_stages(reranker, pages, args.requests)
            reranker.backend.invoke_in_order = model_call  # type: ignore[method-assign]
    whole = by_way["with the model"]["wall"]
    inference = measured["model call (inference)"]
    print(
        f"# rerank floor: {manifest.model_name}, {args.pair}, {args.requests} calls per step, "
        f"1-min load average {load:.2f} before, {os.getloadavg()[0]:.2f} after\n"
    )
    print("| step | p50 ms | x inference |\n|---|---:|---:|")
    for name, value in measured.items():
        print(f"| {name} | {value:.4f} | {value / inference:.2f} |")
    floor = sum(measured.values())
    print(f"| **sum of the steps** | {floor:.4f} | {floor / inference:.2f} |")
    print(f"| whole rerank | {whole:.4f} | {whole / inference:.2f} |")
    print(
        f"\nslate vectors to float32 with np.array and a finite check (the runtime's way, not in the sum): "
        f"{numpy_way:.4f} ms, {numpy_way / inference:.2f}x"
    )
    columns = list(next(iter(by_way.values())))
    print("\n| whole rerank | " + " | ".join(f"{name} p50 ms" for name in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for way, medians in by_way.items():
        print(f"| {way} | " + " | ".join(f"{medians[name]:.4f}" for name in columns) + " |")


if __name__ == "__main__":
    main()
