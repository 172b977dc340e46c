"""End-to-end on-device rerank latency per backend/delegate, with the per-stage split.

    python benchmarks/rerank_latency.py                      # exports a DIR bundle first (needs torch)
    python benchmarks/rerank_latency.py --bundle out/bundle  # any bundle directory, no torch needed

For every backend/delegate pair that loads here, a fresh history store gets `--behaviours` stored
clicks (with item vectors) and `--requests` batch-1 reranks are timed after a warm-up: wall time
around `Reranker.rerank` (p50/p99/mean) and the median of each stage it reports. Pairs that do not
load are listed with the loader's error. Target: p50 <= 1 ms, p99 <= 3 ms.
"""

from __future__ import annotations

import argparse
import platform
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


def export_bundle(out: Path) -> Path:
    """A DIR bundle for three heterogeneous sources, n=10, t=20, K=5 (untrained weights: timing only)."""
    import torch

    from cloud.export import write_bundle
    from cloud.models import build_model
    from shared_schema import CategoricalField, DatasetSpec, DenseField, SourceSpec

    spec = DatasetSpec(name="latency", n=10, t=20, K=5, sources=(
        SourceSpec(name="video", target_share=0.5, categorical=(CategoricalField(name="genre", vocab=50),
                                                                CategoricalField(name="creator", vocab=1000)),
                   dense=(DenseField(name="emb", dim=8),)),
        SourceSpec(name="article", target_share=0.3, categorical=(CategoricalField(name="topic", vocab=30),)),
        SourceSpec(name="ad", target_share=0.2, categorical=(CategoricalField(name="advertiser", vocab=200),),
                   dense=(DenseField(name="bid", dim=1),)),
    ))
    torch.manual_seed(0)
    write_bundle(build_model("dir", spec).eval(), spec, out, model_version="latency-bench")
    return out


def slates(manifest: BundleManifest, count: int, rng: np.random.Generator) -> list[CandidateSlate]:
    """`count` full slates (n items per source) over a pool of 200 items per source."""
    out = []
    for r in range(count):
        sources = []
        for name, dim in zip(manifest.source_names, manifest.vector_dims):
            ids = rng.choice(200, size=manifest.n, replace=False)
            sources.append(SourceCandidates(source=name, items=[
                CandidateItem(item_id=f"{name}{i}", vector=rng.standard_normal(dim).tolist()) for i in ids]))
        out.append(CandidateSlate(user_id="bench", request_id=f"r{r}", sources=sources,
                                  embedding_version=manifest.embedding_version))
    return out


def seed_history(reranker: Reranker, behaviours: int, rng: np.random.Generator) -> None:
    m = reranker.manifest
    now = time.time() - behaviours
    events = []
    for i in range(behaviours):
        s = i % len(m.sources)
        events.append(BehaviorEvent(item_id=f"h{m.source_names[s]}{i}", source=m.source_names[s], action="click",
                                    ts=now + i, vector=rng.standard_normal(m.vector_dims[s]).tolist()))
    reranker.store.record_many(events)


def measure(bundle: Path, pair: str, args: argparse.Namespace, workdir: Path) -> dict:
    backend, delegate = pair.split(":")
    rng = np.random.default_rng(0)
    db = workdir / f"{backend}-{delegate}.db"
    manifest = read_manifest(bundle)
    per_source = -(-args.behaviours // len(manifest.sources))
    with Reranker.open(bundle, db, backend, delegate, args.merge, args.threads,
                       retention_per_source=per_source) as reranker:
        seed_history(reranker, args.behaviours, rng)
        stored = sum(v["click"] for v in reranker.store.stats()["behaviors"].values())
        pages = slates(manifest, 64, rng)
        for i in range(args.warmup):
            reranker.rerank(pages[i % len(pages)])
        wall, stages = [], {k: [] for k in STAGES}
        for i in range(args.requests):
            start = time.perf_counter()
            result = reranker.rerank(pages[i % len(pages)])
            wall.append((time.perf_counter() - start) * 1e3)
            for k in STAGES:
                stages[k].append(result.timings_ms[k])
    wall = np.array(wall)
    return {"pair": pair, "stored": stored, "p50": np.percentile(wall, 50), "p99": np.percentile(wall, 99),
            "mean": wall.mean(), **{k: float(np.median(v)) for k, v in stages.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="bundle directory (default: export a DIR bundle first)")
    parser.add_argument("--behaviours", type=int, default=10_000, help="stored clicks (default: 10000)")
    parser.add_argument("--requests", type=int, default=2000, help="timed reranks per pair (default: 2000)")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--merge", default="controller", choices=["score", "quota", "controller"])
    parser.add_argument("--pairs", default=",".join(PAIRS), help="BACKEND:DELEGATE pairs (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bundle = args.bundle or export_bundle(workdir / "bundle")
        manifest = read_manifest(bundle)
        rows, unavailable = [], []
        for pair in args.pairs.split(","):
            try:
                load_backend(bundle, manifest, *pair.split(":"), threads=args.threads)
            except BackendError as exc:
                unavailable.append((pair, str(exc).split(" -> ", 1)[-1]))
                continue
            rows.append(measure(bundle, pair, args, workdir))
    print(f"# rerank latency: {manifest.model_name} m={len(manifest.sources)} n={manifest.n} t={manifest.t} "
          f"K={manifest.K}, batch 1, merge={args.merge}, threads={args.threads}, {args.requests} requests, "
          f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}\n")
    head = ["backend:delegate", "stored clicks", "p50 ms", "p99 ms", "mean ms", *(f"{s} p50" for s in STAGES)]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["pair"], str(r["stored"]), *(f"{r[k]:.3f}" for k in ("p50", "p99", "mean")),
                 *(f"{r[k]:.3f}" for k in STAGES)]
        print("| " + " | ".join(cells) + " |")
    for pair, why in unavailable:
        print(f"\nnot available: {pair}: {why}")


if __name__ == "__main__":
    main()
