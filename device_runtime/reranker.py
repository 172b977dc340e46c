"""The Reranker facade: slate in, merged list out, using the local behaviour history.

    with Reranker.open("~/.dir-device", "history.db", merge="controller") as reranker:
        result = reranker.rerank(slate)          # RerankResult, timings_ms per stage
        reranker.record(BehaviorEvent(item_id="v3", source="video", action="click", ts=time.time()))
        reranker.info()                          # bundle, backend, delegate, attempts, store stats

`open` takes a bundle directory (with manifest.json) or a registry root (see `bundle.BundleRegistry`).
One rerank: validate the slate, cache its item vectors, read the last t clicks per source, assemble
the padded inputs, run the model, merge the sources under the target shares, record the top-K exposures.
A bundle whose manifest names a list decoder (SVR `beam_search`, HRL `slot_policy`, NAR4Rec
`contrastive`) has its list built by that decoder (device_runtime/decoding.py) instead of merge.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from device_runtime.backends import DEFAULT_ORDER, Backend, load_backend
from device_runtime.bundle import BundleRegistry, InstalledBundle, verify
from device_runtime.decoding import decode_request
from device_runtime.merge import MODES as MERGE_MODES
from device_runtime.merge import merge as merge_scores
from device_runtime.store import HistoryStore
from shared_schema import SCHEMA_VERSION, BehaviorEvent, BundleManifest, CandidateSlate, RerankResult
from shared_schema.manifest import MANIFEST_NAME, decoder_settings


def open_bundle(bundle_or_root: str | os.PathLike) -> InstalledBundle:
    """A verified bundle from a bundle directory or from a registry root's active bundle."""
    path = Path(bundle_or_root).expanduser()
    if (path / MANIFEST_NAME).is_file():
        manifest = verify(path)
        return InstalledBundle(manifest.model_version, path, manifest)
    active = BundleRegistry(path).serving()  # damaged files: the previous intact version, logged
    if active is None:
        raise FileNotFoundError(
            f"{path}: neither a bundle directory ({MANIFEST_NAME}) nor a registry with an installed bundle; "
            f"run `dir-device install BUNDLE --root {path}`"
        )
    return active


def check_event(manifest: BundleManifest, event: BehaviorEvent) -> None:
    """Reject an event the bundle cannot use (unknown source, wrong vector width, other schema)."""
    if event.schema_version != SCHEMA_VERSION:
        raise ValueError(f"event.schema_version {event.schema_version} is not {SCHEMA_VERSION}")
    names = manifest.source_names
    if event.source not in names:
        raise ValueError(f"event.source {event.source!r} is not a source of the bundle; known sources: {names}")
    dim = manifest.vector_dims[names.index(event.source)]
    if event.vector is not None and len(event.vector) != dim:
        raise ValueError(f"event.vector: {len(event.vector)} values, source {event.source!r} takes {dim}")


def list_decoder(manifest: BundleManifest, merge: str) -> tuple[str, dict[str, float | int]]:
    """(decoder, its options) of the bundle; ValueError when `merge` asks for a merge the decoder overrides."""
    if manifest.decoder != "merge" and merge != "score":
        raise ValueError(f"merge {merge!r}: bundle {manifest.model_version} ({manifest.model_name}) builds its list "
                         f"with decoder {manifest.decoder!r}, the decoder decides the list; use merge='score' "
                         "(--merge score)")
    return manifest.decoder, decoder_settings(manifest.decoder, manifest.decoder_options)


class Reranker:
    """Reranks slates with one bundle, one backend and one history store."""

    def __init__(self, bundle: InstalledBundle, store: HistoryStore, backend: Backend, merge: str = "score"):
        if merge not in MERGE_MODES:
            raise ValueError(f"merge {merge!r}: use one of {list(MERGE_MODES)}")
        self.bundle, self.store, self.backend, self.merge = bundle, store, backend, merge
        self.manifest = bundle.manifest
        self._layout = self.manifest.layout()
        self._sources = self.manifest.source_names
        self._decoder, self._decoder_options = list_decoder(self.manifest, merge)

    @classmethod
    def open(
        cls,
        bundle_or_root: str | os.PathLike,
        db_path: str | os.PathLike,
        backend: str = "auto",
        delegate: str = "auto",
        merge: str = "score",
        threads: int = 1,
        order: Sequence[str] = DEFAULT_ORDER,
        quantization: str | None = None,
        retention_per_source: int = 1000,
        prune_every: int = 32,
    ) -> Reranker:
        """Open the bundle (or a registry's active one), its backend and the history store at `db_path`.

        `order`: what backend/delegate `auto` tries; `quantization`: pick only files of that kind
        (e.g. "int8"); `retention_per_source`: behaviours the store keeps per source and action;
        `prune_every`: the store deletes past the retention in batches of this many rows (fewer than
        R + prune_every are kept), so most writes, such as a page's exposures, delete nothing."""
        if merge not in MERGE_MODES:
            raise ValueError(f"merge {merge!r}: use one of {list(MERGE_MODES)}")
        bundle = open_bundle(bundle_or_root)
        list_decoder(bundle.manifest, merge)
        loaded = load_backend(bundle.path, bundle.manifest, backend, delegate, threads, order,
                              quantization=quantization)
        m = bundle.manifest
        store = HistoryStore(db_path, retention_per_source, prune_every=prune_every, sources=m.source_names,
                             dims=dict(zip(m.source_names, m.vector_dims)))
        if store.embedding_version != m.embedding_version:
            store.set_embedding_version(m.embedding_version)  # history of older vectors stops counting
        return cls(bundle, store, loaded, merge)

    def rerank(self, slate: CandidateSlate) -> RerankResult:
        """Merged list of every candidate (top-K decided by the merge mode) with per-stage timings."""
        clock = [time.perf_counter()]
        candidates = self._candidates(slate)
        self.store.cache_sources({self._sources[s]: ([i.item_id for i in items], vectors)
                                  for s, (items, vectors) in enumerate(candidates) if items},
                                 self.manifest.embedding_version)
        clock.append(time.perf_counter())
        histories = [_matrix([v for _, v in clicks], d) for clicks, d in
                     zip(self.store.last_clicks(self._sources, self.manifest.t), self.manifest.vector_dims)]
        shown = self.store.exposure_counts(self._sources) if self.merge == "controller" else None
        clock.append(time.perf_counter())
        inputs = self._layout.assemble([v for _, v in candidates], histories)
        clock.append(time.perf_counter())
        outputs = self.backend.run_all(inputs)
        scores = outputs[0][0]
        clock.append(time.perf_counter())
        per_source = [scores[s, : len(items)] for s, (items, _) in enumerate(candidates)]
        if self._decoder == "merge":
            order = merge_scores(per_source, self.manifest.target_shares, self.manifest.K, self.merge, shown)
        else:  # the bundle's list decoder; its time counts as the merge stage
            order = decode_request(self._decoder, self._decoder_options, outputs, inputs, self.manifest.K,
                                   self.manifest.target_shares, self.backend.run)
        values = [p.tolist() for p in per_source]
        ranked = [{"item_id": candidates[s][0][i].item_id, "source": self._sources[s], "score": values[s][i],
                   "title": candidates[s][0][i].title} for s, i in order]  # validated once, with the result
        clock.append(time.perf_counter())
        self.store.record_exposures([(r["item_id"], r["source"]) for r in ranked[: self.manifest.K]], time.time())
        clock.append(time.perf_counter())
        stages = ("validate_cache", "history_read", "assembly", "inference", "merge", "record_exposures")
        timings = {name: (b - a) * 1e3 for name, a, b in zip(stages, clock, clock[1:])}
        timings["total"] = (clock[-1] - clock[0]) * 1e3
        built_by = self.merge if self._decoder == "merge" else self._decoder
        return RerankResult.model_validate({
            "request_id": slate.request_id, "items": ranked, "backend": self.backend.name,
            "delegate": self.backend.delegate, "merge": built_by, "bundle_version": self.bundle.version,
            "timings_ms": timings})

    def record(self, event: BehaviorEvent) -> None:
        """Store a behaviour (its vector too, when the event carries one)."""
        check_event(self.manifest, event)
        self.store.record(event)

    def info(self) -> dict:
        """Active bundle, its list decoder, backend, delegate, every backend attempt and the store's statistics."""
        m = self.manifest
        return {
            "bundle": {"version": self.bundle.version, "path": str(self.bundle.path), "model_name": m.model_name,
                       "model_version": m.model_version, "embedding_version": m.embedding_version,
                       "created_at": m.created_at, "sources": self._sources, "n": m.n, "t": m.t, "K": m.K},
            "backend": self.backend.name,
            "delegate": self.backend.delegate,
            "file": self.backend.path.name,
            "attempts": [{"backend": b, "delegate": d, "result": r} for b, d, r in self.backend.attempts],
            "merge": self.merge,
            "decoder": self._decoder,
            "decoder_options": dict(self._decoder_options),
            "store": self.store.stats(),
        }

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Reranker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _candidates(self, slate: CandidateSlate) -> list[tuple[list, np.ndarray]]:
        """Per bundle source: (items, float32 [k, d] vectors); raises ValueError naming the bad field."""
        m = self.manifest
        if slate.schema_version != SCHEMA_VERSION:
            raise ValueError(f"slate.schema_version {slate.schema_version} is not supported (this runtime reads "
                             f"{SCHEMA_VERSION})")
        if slate.embedding_version != m.embedding_version:
            raise ValueError(
                f"slate.embedding_version {slate.embedding_version!r} differs from the bundle's "
                f"{m.embedding_version!r}; fetch slates for the installed bundle or install the matching bundle"
            )
        out: list[tuple[list, np.ndarray]] = [([], np.zeros((0, d), np.float32)) for d in m.vector_dims]
        seen: set[str] = set()
        for j, entry in enumerate(slate.sources):
            where = f"slate.sources[{j}]"
            if entry.source not in self._sources:
                raise ValueError(f"{where}.source {entry.source!r} is not a source of the bundle; "
                                 f"known sources: {self._sources}")
            if entry.source in seen:
                raise ValueError(f"{where}.source {entry.source!r} appears twice; send one list per source")
            seen.add(entry.source)
            s = self._sources.index(entry.source)
            if len(entry.items) > m.n:
                raise ValueError(f"{where}.items: {len(entry.items)} items, the bundle takes at most n={m.n} "
                                 f"per source; send the upstream top {m.n}")
            ids = [item.item_id for item in entry.items]
            if len(set(ids)) != len(ids):
                raise ValueError(f"{where}.items: item ids repeat ({sorted({i for i in ids if ids.count(i) > 1})})")
            for i, item in enumerate(entry.items):
                if len(item.vector) != m.vector_dims[s]:
                    raise ValueError(f"{where}.items[{i}].vector: {len(item.vector)} values, source "
                                     f"{entry.source!r} takes {m.vector_dims[s]}")
            vectors = _matrix([item.vector for item in entry.items], m.vector_dims[s])
            if not np.isfinite(vectors).all():
                bad = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
                raise ValueError(f"{where}.items[{bad}].vector holds NaN or infinite values; send finite floats")
            out[s] = (list(entry.items), vectors)
        if not any(items for items, _ in out):
            raise ValueError("slate.sources: no candidate items; send at least one item")
        return out


def _matrix(rows: list, dim: int) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), dim)
