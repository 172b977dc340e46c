"""End-to-end on-device rerank latency per backend/delegate, with the per-stage split.

    python benchmarks/rerank_latency.py                      # exports a DIR bundle first (needs torch)
    python benchmarks/rerank_latency.py --bundle out/bundle  # any bundle directory, no torch needed

For every backend/delegate pair that loads here, a fresh history store gets `--behaviours` stored
clicks (with item vectors) and `--requests` batch-1 reranks are timed after a warm-up: wall time
around `Reranker.rerank` (p50/p99/mean), the calling thread's CPU time (p50/p99: the cost without the
waits for other processes on a loaded machine) and the median of each stage it reports; with
`--click-every`, clicks recorded between reranks (each prunes the oldest click at the retention bound)
are timed too.
`--compete on` runs a CPU-bound process (a Python busy loop, pinned to the last CPU) beside the
benchmark, as on a phone running other apps; `both` (the default) measures every pair idle and then
with it. Per pair and mode the table gives the ratio of the end-to-end p50 to the inference stage's p50,
the runtime's own time (the median over requests of the wall time less the inference stage: what the
runtime adds to the model call) and each stage's share of the stage sum. Pairs that
do not load are listed with the loader's error.
Targets: p50 <= 1 ms, p99 <= 3 ms, end-to-end p50 <= 2x inference.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from device_runtime.backends import DEFAULT_ORDER, BackendError, load_backend
from device_runtime.bundle import read_manifest
from device_runtime.reranker import Reranker
from shared_schema import BehaviorEvent, BundleManifest, CandidateItem, CandidateSlate, SourceCandidates

PAIRS = DEFAULT_ORDER
STAGES = ("validate_cache", "history_read", "assembly", "inference", "merge", "record_exposures")


def latency_model():
    """Untrained DIR (timing only) on inference_latency's spec (3 sources, n=10, t=20, K=5), and the spec."""
    import torch
    from inference_latency import default_spec

    from cloud.models import build_model

    spec = default_spec()
    torch.manual_seed(0)
    return build_model("dir", spec).eval(), spec


def export_bundle(out: Path) -> Path:
    """The latency model's bundle (see `latency_model`)."""
    from cloud.export import write_bundle

    model, spec = latency_model()
    write_bundle(model, spec, out, model_version="latency-bench")
    return out


def slates(manifest: BundleManifest, count: int, rng: np.random.Generator, new_vectors: bool) -> list[CandidateSlate]:
    """`count` full slates (n items per source) over a pool of 200 items per source. Each item keeps
    one vector, as the cloud sends it for an embedding version; `new_vectors`: a fresh one per slate."""
    pools = [rng.standard_normal((200, dim)) for dim in manifest.vector_dims]
    out = []
    for r in range(count):
        sources = []
        for name, pool in zip(manifest.source_names, pools):
            ids = rng.choice(len(pool), size=manifest.n, replace=False)
            vectors = rng.standard_normal((manifest.n, pool.shape[1])) if new_vectors else pool[ids]
            sources.append(
                SourceCandidates(
                    source=name,
                    items=[CandidateItem(item_id=f"{name}{i}", vector=v.tolist()) for i, v in zip(ids, vectors)],
                )
            )
        out.append(
            CandidateSlate(
                user_id="bench", request_id=f"r{r}", sources=sources, embedding_version=manifest.embedding_version
            )
        )
    return out


def seed_history(reranker: Reranker, behaviours: int, rng: np.random.Generator) -> None:
    """`behaviours` clicks with vectors, round robin over the sources, and as many exposures per source
    as the store keeps: the store starts at its bound, so every write prunes (a long-used device)."""
    m = reranker.manifest
    keep = reranker.store.retention
    reranker.store.record_exposures([(f"x{i}", name) for name in m.source_names for i in range(keep)], ts=0.0)
    now = time.time() - behaviours
    events = []
    for i in range(behaviours):
        s = i % len(m.sources)
        events.append(
            BehaviorEvent(
                item_id=f"h{m.source_names[s]}{i}",
                source=m.source_names[s],
                action="click",
                ts=now + i,
                vector=rng.standard_normal(m.vector_dims[s]).tolist(),
            )
        )
    reranker.store.record_many(events)


def measure(bundle: Path, pair: str, args: argparse.Namespace, workdir: Path) -> dict:
    backend, delegate = pair.split(":")
    rng = np.random.default_rng(0)
    db = workdir / f"{backend}-{delegate}.db"
    manifest = read_manifest(bundle)
    per_source = -(-args.behaviours // len(manifest.sources))
    with Reranker.open(
        bundle, db, backend, delegate, args.merge, args.threads, retention_per_source=per_source
    ) as reranker:
        seed_history(reranker, args.behaviours, rng)
        stored = sum(v["click"] for v in reranker.store.stats()["behaviors"].values())
        pages = slates(manifest, 64, rng, args.new_vectors)
        for i in range(args.warmup):
            reranker.rerank(pages[i % len(pages)])
        wall, cpu, stages, clicks = [], [], {k: [] for k in STAGES}, []
        for i in range(args.requests):
            start, start_cpu = time.perf_counter(), time.thread_time()
            result = reranker.rerank(pages[i % len(pages)])
            wall.append((time.perf_counter() - start) * 1e3)
            cpu.append((time.thread_time() - start_cpu) * 1e3)
            for k in STAGES:
                stages[k].append(result.timings_ms[k])
            if args.click_every and i % args.click_every == 0:  # the user clicks the top item
                top = result.items[0]
                start = time.perf_counter()
                reranker.record(BehaviorEvent(item_id=top.item_id, source=top.source, action="click", ts=time.time()))
                clicks.append((time.perf_counter() - start) * 1e3)
    wall = np.array(wall)
    own = wall - np.array(stages["inference"])  # the runtime's own time: all but the model call
    return {
        "pair": pair,
        "stored": stored,
        "p50": np.percentile(wall, 50),
        "p99": np.percentile(wall, 99),
        "own_p50": np.percentile(own, 50),
        "mean": wall.mean(),
        "cpu_p50": np.percentile(cpu, 50),
        "cpu_p99": np.percentile(cpu, 99),
        **{k: float(np.median(v)) for k, v in stages.items()},
        "record": np.percentile(clicks, [50, 99]) if clicks else None,
    }


@contextlib.contextmanager
def competitor(on: bool):
    """A CPU-bound Python busy loop pinned to the last CPU while the block runs (nothing when `on` is False)."""
    if not on:
        yield
        return
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(process.pid, {os.cpu_count() - 1})
        time.sleep(0.2)
        yield
    finally:
        process.kill()
        process.wait()


def table(rows: list[dict]) -> list[str]:
    """Markdown rows: times, the end-to-end/inference ratio, then each stage's p50 and share."""
    head = [
        "backend:delegate",
        "competing process",
        "stored clicks",
        "p50 ms",
        "p99 ms",
        "mean ms",
        "cpu p50 ms",
        "cpu p99 ms",
        "p50 / inference",
        "runtime's own p50 ms",
        *(f"{s} p50 ms (share)" for s in STAGES),
        "record p50/p99 ms",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        stage_sum = sum(r[k] for k in STAGES) or 1.0
        cells = [
            r["pair"],
            "yes" if r["compete"] else "no",
            str(r["stored"]),
            *(f"{r[k]:.3f}" for k in ("p50", "p99", "mean", "cpu_p50", "cpu_p99")),
            f"{r['p50'] / r['inference']:.2f}x",
            f"{r['own_p50']:.3f}",
            *(f"{r[k]:.3f} ({100 * r[k] / stage_sum:.0f}%)" for k in STAGES),
            "-" if r["record"] is None else "{:.3f} / {:.3f}".format(*r["record"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="bundle directory (default: export a DIR bundle first)")
    parser.add_argument("--behaviours", type=int, default=10_000, help="stored clicks (default: 10000)")
    parser.add_argument("--requests", type=int, default=2000, help="timed reranks per pair (default: 2000)")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--merge", default="controller", choices=["score", "quota", "controller"])
    parser.add_argument(
        "--new-vectors",
        action="store_true",
        help="every slate sends new vectors for its items (worst case for the vector cache)",
    )
    parser.add_argument(
        "--click-every",
        type=int,
        default=0,
        metavar="N",
        help="record a click on the top item after every N-th rerank, timed apart (default: none)",
    )
    parser.add_argument("--pairs", default=",".join(PAIRS), help="BACKEND:DELEGATE pairs (default: %(default)s)")
    parser.add_argument(
        "--compete",
        default="both",
        choices=["off", "on", "both"],
        help="a CPU-bound process on the last CPU during the runs (default: both, idle first)",
    )
    args = parser.parse_args()
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compete]
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bundle = args.bundle or export_bundle(workdir / "bundle")
        manifest = read_manifest(bundle)
        rows, unavailable, pairs = [], [], []
        for pair in args.pairs.split(","):
            try:
                load_backend(bundle, manifest, *pair.split(":"), threads=args.threads)
                pairs.append(pair)
            except BackendError as exc:
                unavailable.append((pair, str(exc).split(" -> ", 1)[-1]))
        for compete in modes:
            (workdir / str(compete)).mkdir()
            with competitor(compete):
                for pair in pairs:
                    rows.append({**measure(bundle, pair, args, workdir / str(compete)), "compete": compete})
        loads.append(os.getloadavg()[0])
    print(
        f"# rerank latency: {manifest.model_name} m={len(manifest.sources)} n={manifest.n} t={manifest.t} "
        f"K={manifest.K}, batch 1, merge={args.merge}, threads={args.threads}, {args.requests} requests, "
        f"{'new' if args.new_vectors else 'fixed'} item vectors, clicks every {args.click_every or '-'} pages, "
        f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, 1-min load average {loads[0]:.2f} before, {loads[1]:.2f} after "
        f"(the competing process adds 1 while it runs)\n"
    )
    print("\n".join(table(rows)))
    for pair, why in unavailable:
        print(f"\nnot available: {pair}: {why}")


if __name__ == "__main__":
    main()
