"""What the endpoints serve from: a trained run's ItemEncoder, its prepared data and the upstream ranker.

    service = CloudService.load("out/run", data_dir="out/data")
    slate, timings = service.user_slate("u00042", n=10)     # CandidateSlate, {"upstream": ms, "encode": ms, ...}
    answer = service.vectors({"video": ["v1", "nope"]})     # ItemVectors, "nope" listed as unknown
    replay = service.list_slate("test", 0)                  # ListSlate: a prepared list and its history

Thread-safe for reads: the model is in eval mode under no_grad, the data's arrays are memory-mapped once.
"""

from __future__ import annotations

import time
import uuid
from importlib import metadata
from pathlib import Path

import numpy as np

from cloud.data.prepared import SPLITS, PreparedData
from cloud.runs import LoadedRun, load_run
from cloud.service.upstream import UpstreamRanker
from cloud.slates import encode_items, slate_for_list
from shared_schema import SCHEMA_VERSION, CandidateItem, CandidateSlate, SourceCandidates
from shared_schema.service import ItemVectors, ListSlate, ServiceInfo

MAX_VECTOR_IDS = 1000
"""Default cap on the item ids of one POST /v1/vectors request."""


class UnknownUser(KeyError):
    """A user id that the prepared data does not hold."""


class ServedData(PreparedData):
    """PreparedData whose item tables and split arrays are opened once, at start-up.

    Each `np.load` parses the .npy header with `ast.literal_eval`; per request that costs time and,
    from many threads at once, trips a CPython 3.11.7 bug ("AST constructor recursion depth mismatch").
    """

    def __init__(self, path: str | Path):
        super().__init__(path)
        self._items = {name: super(ServedData, self).items(name) for name in self.spec.source_names}
        self._splits = {name: super(ServedData, self).split(name) for name in SPLITS}

    def items(self, source: str):
        self.spec.source(source)  # KeyError naming the known sources
        return self._items[source]

    def split(self, name: str) -> dict[str, np.ndarray]:
        if name not in self._splits:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return self._splits[name]


class CloudService:
    """A run's item encoder over its prepared data, with the demo upstream ranker."""

    def __init__(self, run: LoadedRun, data: PreparedData, affinity_weight: float = 0.5,
                 max_vector_ids: int = MAX_VECTOR_IDS):
        data = data if isinstance(data, ServedData) else ServedData(data.path)
        _check_same_spec(run, data)
        self.run, self.data, self.spec = run, data, data.spec
        self.model = run.model.eval()
        self.embedding_version = run.embedding_version
        self.max_vector_ids = max_vector_ids
        self.ranker = UpstreamRanker(data, affinity_weight)
        self.users = [str(u) for u in data.users()]
        self._user_index = {u: i for i, u in enumerate(self.users)}
        self._ids = [data.items(name).ids for name in self.spec.source_names]
        self._rows = [{str(item): row for row, item in enumerate(ids)} for ids in self._ids]
        self._vectors = [_all_vectors(self.model, data, name, len(ids)) for name, ids in
                         zip(self.spec.source_names, self._ids)]  # the ItemEncoder is fixed: encode once

    @classmethod
    def load(cls, run_dir: str | Path, data_dir: str | Path | None = None, **options) -> CloudService:
        """The run at `run_dir` over `data_dir` (default: the data it was trained on)."""
        run = load_run(run_dir)
        return cls(run, ServedData(data_dir or run.config["data"]), **options)

    def info(self) -> ServiceInfo:
        return ServiceInfo(
            package_version=_package_version(), schema_version=SCHEMA_VERSION,
            embedding_version=self.embedding_version, model_name=self.run.config.get("model", "unknown"),
            sources=self.spec.source_names, vector_dims=list(self.model.item_encoder.vector_dims()),
            n=self.spec.n, max_vector_ids=self.max_vector_ids,
        )

    def user_slate(self, user_id: str, n: int | None = None) -> tuple[CandidateSlate, dict[str, float]]:
        """Top `n` (default the dataset's n) upstream candidates per source with vectors, and the timings (ms)
        of the upstream ranking, the ItemEncoder and the whole call (`handler`: both + building the slate)."""
        if user_id not in self._user_index:
            raise UnknownUser(user_id)
        start = time.perf_counter()
        picked = self.ranker.candidates(self._user_index[user_id], n or self.spec.n)
        ranked = time.perf_counter()
        sources = []
        for s, (rows, scores) in enumerate(picked):
            name = self.spec.source_names[s]
            vectors = self._vectors[s][rows].tolist()
            sources.append(SourceCandidates(source=name, items=[
                CandidateItem(item_id=str(self._ids[s][row]), vector=vector, upstream_score=float(score))
                for row, score, vector in zip(rows, scores, vectors)]))
        encoded = time.perf_counter()
        slate = CandidateSlate(user_id=user_id, request_id=uuid.uuid4().hex, embedding_version=self.embedding_version,
                               sources=sources)
        return slate, {"upstream": (ranked - start) * 1e3, "encode": (encoded - ranked) * 1e3,
                       "handler": (time.perf_counter() - start) * 1e3}

    def list_slate(self, split: str, row: int) -> ListSlate:
        """The slate of prepared list `row` of `split` and its device-view history (ValueError if out of range)."""
        slate, history = slate_for_list(self.model, self.data, split, row, self.embedding_version)
        return ListSlate(slate=slate, history=history)

    def vectors(self, ids: dict[str, list[str]]) -> ItemVectors:
        """Vectors of the known ids per source; unknown ids are listed, unknown sources raise ValueError."""
        unknown_sources = sorted(set(ids) - set(self.spec.source_names))
        if unknown_sources:
            raise ValueError(f"ids: unknown source(s) {unknown_sources}; this service's sources are "
                             f"{self.spec.source_names}")
        sources, unknown = [], {}
        for name, wanted in ids.items():
            s = self.spec.source_names.index(name)
            known = [i for i in dict.fromkeys(wanted) if i in self._rows[s]]
            missing = [i for i in dict.fromkeys(wanted) if i not in self._rows[s]]
            if missing:
                unknown[name] = missing
            rows = np.array([self._rows[s][i] for i in known], dtype=np.int64)
            vectors = self._vectors[s][rows].tolist()
            sources.append(SourceCandidates(source=name, items=[
                CandidateItem(item_id=i, vector=v) for i, v in zip(known, vectors)]))
        return ItemVectors(embedding_version=self.embedding_version, sources=sources, unknown=unknown)


def _all_vectors(model, data: PreparedData, source: str, count: int, chunk: int = 4096) -> np.ndarray:
    """float32 [count, d]: the ItemEncoder's vector of every item of `source`, in item-table order."""
    parts = [encode_items(model, data, source, np.arange(start, min(start + chunk, count)))
             for start in range(0, count, chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def _check_same_spec(run: LoadedRun, data: PreparedData) -> None:
    ours = [(s.name, s.categorical, s.dense) for s in data.spec.sources]
    theirs = [(s.name, s.categorical, s.dense) for s in run.spec.sources]
    if ours != theirs:
        raise ValueError(f"{data.path}: its sources/features differ from those run {run.run_dir} was trained on; "
                         "pass --data with the run's prepared data (or omit it)")


def _package_version() -> str:
    try:
        return metadata.version("dir-rerank")
    except metadata.PackageNotFoundError:
        return "unknown"
