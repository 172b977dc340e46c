"""The Reranker facade: slate in, merged list out, using the local behaviour history.

    with Reranker.open("~/.dir-device", "history.db") as reranker:   # merge: controller (default_merge)
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
from typing import Any

from device_runtime import validation
from device_runtime.backends import DEFAULT_ORDER, Backend, load_backend
from device_runtime.bundle import BundleRegistry, InstalledBundle, verify
from device_runtime.decoding import decode_request
from device_runtime.merge import MODES as MERGE_MODES
from device_runtime.merge import merge_lists
from device_runtime.store import HistoryStore, row_bytes
from device_runtime.validation import CheckedEvent
from shared_schema import SCHEMA_VERSION, BehaviorEvent, BundleManifest, CandidateSlate, RerankResult
from shared_schema.layout import InputBuffers
from shared_schema.manifest import MANIFEST_NAME, decoder_settings
from shared_schema.messages import RankedItem


def open_bundle(bundle_or_root: str | os.PathLike[str]) -> InstalledBundle:
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


def check_event(manifest: BundleManifest, event: BehaviorEvent) -> CheckedEvent:
    """Reject an event the bundle cannot use (unknown source, wrong vector width, other schema)."""
    return validation.check_event(
        event, "event", manifest.source_names, dict(zip(manifest.source_names, manifest.vector_dims))
    )


def default_merge(manifest: BundleManifest) -> str:
    """The merge mode a Reranker uses unless told: `controller` for a bundle whose decoder is the merge (its
    pages get the most true clicks and hold the target shares: docs/results.md, "Why DIR's pages trail"),
    `score` for a bundle whose decoder builds the list itself."""
    return "controller" if manifest.decoder == "merge" else "score"


def list_decoder(manifest: BundleManifest, merge: str) -> tuple[str, dict[str, float | int]]:
    """(the bundle's list decoder, its options); ValueError for an unknown merge mode, or a merge mode
    other than `score` for a bundle whose decoder builds the list itself."""
    if merge not in MERGE_MODES:
        raise ValueError(f"merge {merge!r}: use one of {list(MERGE_MODES)}")
    if manifest.decoder != "merge" and merge != "score":
        raise ValueError(
            f"merge {merge!r}: bundle {manifest.model_version} ({manifest.model_name}) builds its list "
            f"with decoder {manifest.decoder!r}, the decoder decides the list; use merge='score' "
            "(--merge score)"
        )
    return manifest.decoder, decoder_settings(manifest.decoder, manifest.decoder_options)


class Reranker:
    """Reranks slates with one bundle, one backend and one history store.

    `merge` is the merge mode (score, quota, controller) of a bundle whose list decoder is `merge` (None:
    `default_merge`); `list_decoder` is (decoder, options) as `list_decoder(manifest, merge)` gives it
    (computed when None)."""

    def __init__(
        self,
        bundle: InstalledBundle,
        store: HistoryStore,
        backend: Backend,
        merge: str | None = None,
        decoder: tuple[str, dict[str, float | int]] | None = None,
    ):
        self.manifest = m = bundle.manifest
        merge = default_merge(m) if merge is None else merge
        self.bundle, self.store, self.backend, self.merge = bundle, store, backend, merge
        self._decoder, self._decoder_options = decoder if decoder is not None else list_decoder(m, merge)
        self._layout = m.layout()
        self._sources = tuple(m.source_names)
        self._rules = validation.SlateRules.of(m)
        self._fields = [f"slate.sources[{name!r}].items" for name in self._sources]  # named in store errors
        self._shares = [float(w) for w in m.target_shares]
        total = sum(self._shares)
        self._shares = [w / total for w in self._shares]
        specs = [(spec.name, spec.dtype, tuple(spec.shape)) for spec in backend.inputs]
        # the layout's arrays go to the backend as they are when they are its inputs, in its order
        self._layout_inputs = specs == [
            (spec.name, spec.dtype, tuple(spec.shape)) for spec in self._layout.input_specs()
        ]
        self._buffers = InputBuffers(self._layout)
        self._buffer_list = list(self._buffers.arrays.values())

    @classmethod
    def open(
        cls,
        bundle_or_root: str | os.PathLike[str],
        db_path: str | os.PathLike[str],
        backend: str = "auto",
        delegate: str = "auto",
        merge: str | None = None,
        threads: int = 1,
        order: Sequence[str] = DEFAULT_ORDER,
        quantization: str | None = None,
        retention_per_source: int = 1000,
        prune_every: int = 32,
    ) -> Reranker:
        """Open the bundle (or a registry's active one), its backend and the history store at `db_path`.

        `merge`: None for `default_merge` (controller, or score for a bundle with a list decoder);
        `order`: what backend/delegate `auto` tries; `quantization`: pick only files of that kind
        (e.g. "int8"); `retention_per_source`: behaviours the store keeps per source and action;
        `prune_every`: the store deletes past the retention in batches of this many rows (fewer than
        R + prune_every are kept), so most writes, such as a page's exposures, delete nothing."""
        bundle = open_bundle(bundle_or_root)
        merge = default_merge(bundle.manifest) if merge is None else merge
        decoder = list_decoder(bundle.manifest, merge)
        loaded = load_backend(
            bundle.path, bundle.manifest, backend, delegate, threads, order, quantization=quantization
        )
        m = bundle.manifest
        store = HistoryStore(
            db_path,
            retention_per_source,
            prune_every=prune_every,
            sources=m.source_names,
            dims=dict(zip(m.source_names, m.vector_dims)),
        )
        if store.embedding_version != m.embedding_version:
            store.set_embedding_version(m.embedding_version)  # history of older vectors stops counting
        return cls(bundle, store, loaded, merge, decoder)

    def rerank(self, slate: CandidateSlate) -> RerankResult:
        """Merged list of every candidate (top-K decided by the merge mode) with per-stage timings.

        The page's store writes (new item vectors, the top-K exposures) are one transaction, committed
        before this returns."""
        clock = [time.perf_counter()]
        m = self.manifest
        candidates = validation.check_slate(slate, self._rules)
        with self.store.page(writes=True) as page:  # a page always records its exposures
            page.cache(
                [
                    (
                        self._sources[s],
                        list(zip([item.item_id for item in items], row_bytes(vectors), [self._fields[s]] * len(items))),
                    )
                    for s, (items, vectors) in enumerate(candidates)
                    if items
                ],
                m.embedding_version,
            )
            clock.append(time.perf_counter())
            histories = page.click_vectors(self._sources, m.t, m.vector_dims)
            shown = page.exposure_counts(self._sources) if self.merge == "controller" else None
            clock.append(time.perf_counter())
            inputs = self._buffers.fill([v for _, v in candidates], histories)
            clock.append(time.perf_counter())
            outputs = (
                self.backend.invoke_in_order(self._buffer_list) if self._layout_inputs else self.backend.run_all(inputs)
            )
            clock.append(time.perf_counter())
            values = outputs[0][0].tolist()
            per_source = [values[s][: len(items)] for s, (items, _) in enumerate(candidates)]
            if self._decoder == "merge":
                order = merge_lists(per_source, self._shares, m.K, self.merge, shown)
            else:  # the bundle's list decoder; its time counts as the merge stage
                order = decode_request(
                    self._decoder, self._decoder_options, outputs, inputs, m.K, m.target_shares, self.backend.run
                )
            picked = [(candidates[s][0][i], s, per_source[s][i]) for s, i in order]
            clock.append(time.perf_counter())
            page.expose(
                [(item.item_id, self._sources[s]) for item, s, _ in picked[: m.K]], time.time(), slate.request_id
            )
        clock.append(time.perf_counter())
        stages = ("validate_cache", "history_read", "assembly", "inference", "merge", "record_exposures")
        timings = {name: (b - a) * 1e3 for name, a, b in zip(stages, clock, clock[1:])}
        timings["total"] = (clock[-1] - clock[0]) * 1e3
        built_by = self.merge if self._decoder == "merge" else self._decoder
        checked, sources = RankedItem.checked, self._sources
        items = [checked(item.item_id, sources[s], score, item.title) for item, s, score in picked]
        return RerankResult.model_construct(
            schema_version=SCHEMA_VERSION,
            request_id=slate.request_id,
            items=items,
            backend=self.backend.name,
            delegate=self.backend.delegate,
            merge=built_by,
            bundle_version=self.bundle.version,
            timings_ms=timings,
        )

    def record(self, event: BehaviorEvent) -> int:
        """Store a behaviour (its vector too, when the event carries one); returns its row id."""
        return self.store._record([check_event(self.manifest, event)])[0]

    def info(self) -> dict[str, Any]:
        """Active bundle, its list decoder, backend, delegate, every backend attempt and the store's statistics."""
        m = self.manifest
        return {
            "bundle": {
                "version": self.bundle.version,
                "path": str(self.bundle.path),
                "model_name": m.model_name,
                "model_version": m.model_version,
                "embedding_version": m.embedding_version,
                "created_at": m.created_at,
                "sources": self._sources,
                "n": m.n,
                "t": m.t,
                "K": m.K,
            },
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

    def __exit__(self, *exc: object) -> None:
        self.close()
