"""What the endpoints serve from: a trained run's ItemEncoder, its prepared data and the upstream ranker.

    service = CloudService.load("out/run", data_dir="out/data")
    slate, timings = service.user_slate("u00042", n=10)     # CandidateSlate, {"upstream": ms, "encode": ms, ...}
    body, timings = service.user_slate_json("u00042", form="float32")  # its JSON bytes, vectors base64
    answer = service.vectors({"video": ["v1", "nope"]})     # ItemVectors, "nope" listed as unknown
    chosen = service.items_slate("u00042", {"video": ["v1", "v2"]})   # CandidateSlate of those items
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
from cloud.service.slates import SlateBodies, encode_items, slate_for_list
from cloud.service.upstream import UpstreamRanker
from cloud.training.runs import LoadedRun, load_run
from shared_schema import SCHEMA_VERSION, CandidateItem, CandidateSlate, SourceCandidates
from shared_schema.messages import WireForm
from shared_schema.service import MIN_BUCKET_ITEMS, ItemVectors, ListSlate, ServiceInfo, item_bucket

MAX_VECTOR_IDS = 1000
"""Default cap on the item ids of one POST /v1/vectors request."""
MAX_BUCKETS = 8
"""Cap on the buckets of one POST /v1/vectors/buckets request."""


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

    def __init__(
        self,
        run: LoadedRun,
        data: PreparedData,
        affinity_weight: float = 0.5,
        max_vector_ids: int = MAX_VECTOR_IDS,
        min_bucket_items: int = MIN_BUCKET_ITEMS,
    ):
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
        if min_bucket_items < 1:
            raise ValueError(f"min_bucket_items must be >= 1, got {min_bucket_items}")
        self.min_bucket_items = min_bucket_items
        self._buckets = [_anonymity_buckets([str(i) for i in ids], min_bucket_items) for ids in self._ids]
        self._vectors = [
            _all_vectors(self.model, data, name, len(ids)) for name, ids in zip(self.spec.source_names, self._ids)
        ]  # the ItemEncoder is fixed: encode once
        self._bodies = SlateBodies(
            self.spec.source_names, [[str(i) for i in ids] for ids in self._ids], self._vectors, self.embedding_version
        )
        self.wire_forms = self._bodies.forms
        """How item vectors can travel: JSON numbers, base64 float32, and float16 unless a vector exceeds it."""

    @classmethod
    def load(cls, run_dir: str | Path, data_dir: str | Path | None = None, **options) -> CloudService:
        """The run at `run_dir` over `data_dir` (default: the data it was trained on)."""
        run = load_run(run_dir)
        return cls(run, ServedData(data_dir or run.config["data"]), **options)

    def info(self) -> ServiceInfo:
        return ServiceInfo(
            package_version=_package_version(),
            schema_version=SCHEMA_VERSION,
            embedding_version=self.embedding_version,
            model_name=self.run.config.get("model", "unknown"),
            sources=self.spec.source_names,
            vector_dims=list(self.model.item_encoder.vector_dims()),
            n=self.spec.n,
            max_vector_ids=self.max_vector_ids,
            vector_buckets={name: len(b) for name, b in zip(self.spec.source_names, self._buckets)},
            min_bucket_items=self.min_bucket_items,
            max_buckets=MAX_BUCKETS,
        )

    def user_slate(self, user_id: str, n: int | None = None) -> tuple[CandidateSlate, dict[str, float]]:
        """Top `n` (default the dataset's n) upstream candidates per source with vectors, and the timings (ms)
        of `user_slate_json`."""
        body, timings = self.user_slate_json(user_id, n)
        return CandidateSlate.model_validate_json(body), timings

    def user_slate_json(
        self, user_id: str, n: int | None = None, form: WireForm = "json"
    ) -> tuple[bytes, dict[str, float]]:
        """The CandidateSlate of `user_slate` as JSON bytes (its vectors in `form`, one of `wire_forms`) and the
        timings (ms) of the upstream ranking (`upstream`), of writing the slate's JSON (`encode`) and of
        the whole call (`handler`)."""
        if user_id not in self._user_index:
            raise UnknownUser(user_id)
        start = time.perf_counter()
        picked = self.ranker.candidates(self._user_index[user_id], n or self.spec.n)
        ranked = time.perf_counter()
        body = self._bodies.slate(user_id, uuid.uuid4().hex, picked, form)
        done = time.perf_counter()
        return body, {
            "upstream": (ranked - start) * 1e3,
            "encode": (done - ranked) * 1e3,
            "handler": (done - start) * 1e3,
        }

    def list_slate(self, split: str, row: int) -> ListSlate:
        """The slate of prepared list `row` of `split` and its device-view history (ValueError if out of range)."""
        slate, history = slate_for_list(self.model, self.data, split, row, self.embedding_version)
        return ListSlate(slate=slate, history=history)

    def vectors(self, ids: dict[str, list[str]]) -> ItemVectors:
        """Vectors of the known ids per source; unknown ids are listed, unknown sources raise ValueError."""
        unknown_sources = sorted(set(ids) - set(self.spec.source_names))
        if unknown_sources:
            raise ValueError(
                f"ids: unknown source(s) {unknown_sources}; this service's sources are {self.spec.source_names}"
            )
        sources, unknown = [], {}
        for name, wanted in ids.items():
            s = self.spec.source_names.index(name)
            known = [i for i in dict.fromkeys(wanted) if i in self._rows[s]]
            missing = [i for i in dict.fromkeys(wanted) if i not in self._rows[s]]
            if missing:
                unknown[name] = missing
            rows = np.array([self._rows[s][i] for i in known], dtype=np.int64)
            vectors = self._vectors[s][rows].tolist()
            sources.append(
                SourceCandidates(
                    source=name, items=[CandidateItem(item_id=i, vector=v) for i, v in zip(known, vectors)]
                )
            )
        return ItemVectors(embedding_version=self.embedding_version, sources=sources, unknown=unknown)

    def items_slate(self, user_id: str, ids: dict[str, list[str]]) -> CandidateSlate:
        """A slate of the given item ids per source, in the given order (ValueError naming unknown ids)."""
        answer = self.vectors(ids)
        if answer.unknown:
            raise ValueError(f"item ids unknown to the run's data, per source: {answer.unknown}")
        return CandidateSlate(
            user_id=user_id,
            request_id=uuid.uuid4().hex,
            embedding_version=self.embedding_version,
            sources=answer.sources,
        )

    def bucket_items(self, source: str, bucket: int) -> list[str]:
        """Every item id of anonymity bucket `bucket` of `source` (ValueError naming what is wrong)."""
        if source not in self.spec.source_names:
            raise ValueError(f"buckets: unknown source {source!r}; this service's sources are {self.spec.source_names}")
        buckets = self._buckets[self.spec.source_names.index(source)]
        if not 0 <= bucket < len(buckets):
            raise ValueError(f"buckets.{source}: bucket {bucket} is not in 0..{len(buckets) - 1}")
        return buckets[bucket]

    def bucket_vectors(self, buckets: dict[str, list[int]]) -> ItemVectors:
        """Vectors of every item of the requested anonymity buckets (see docs/service.md, private refresh)."""
        ids = {
            source: [i for b in dict.fromkeys(numbers) for i in self.bucket_items(source, b)]
            for source, numbers in buckets.items()
        }
        return self.vectors(ids)


def _anonymity_buckets(ids: list[str], least: int) -> list[list[str]]:
    """Item ids grouped by `item_bucket` into the most buckets that each hold at least `least` ids (one bucket,
    the whole table, when it is smaller)."""
    if not ids:
        return [[]]
    hashes = np.array([item_bucket(i, 1 << 64) for i in ids], dtype=np.uint64)
    count = max(1, len(ids) // least)
    while count > 1 and np.bincount((hashes % np.uint64(count)).astype(np.int64), minlength=count).min() < least:
        count = min(count - 1, int(count * 0.98))
    groups: list[list[str]] = [[] for _ in range(count)]
    for item in ids:
        groups[item_bucket(item, count)].append(item)
    return groups


def _all_vectors(model, data: PreparedData, source: str, count: int, chunk: int = 4096) -> np.ndarray:
    """float32 [count, d]: the ItemEncoder's vector of every item of `source`, in item-table order."""
    parts = [
        encode_items(model, data, source, np.arange(start, min(start + chunk, count)))
        for start in range(0, count, chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def _check_same_spec(run: LoadedRun, data: PreparedData) -> None:
    ours = [(s.name, s.categorical, s.dense) for s in data.spec.sources]
    theirs = [(s.name, s.categorical, s.dense) for s in run.spec.sources]
    if ours != theirs:
        raise ValueError(
            f"{data.path}: its sources/features differ from those run {run.run_dir} was trained on; "
            "pass --data with the run's prepared data (or omit it)"
        )


def _package_version() -> str:
    try:
        return metadata.version("dir-rerank")
    except metadata.PackageNotFoundError:
        return "unknown"
