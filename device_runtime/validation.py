"""The device's one validation layer: every value entering the runtime is checked here, once per call.

    rules = SlateRules.of(manifest)
    page = check_slate(slate, rules)             # per bundle source: (items, float32 [k, d] matrix)
    event = check_event(event, "event", rules.sources, rules.dims)   # a CheckedEvent
    vec = vector([0.1, 0.2], "items[0].vector")  # finite little-endian float32, no strings or booleans

The Reranker and the `HistoryStore` both call these and pass the checked values on, so the store's
trusted methods (`HistoryStore.write_page`, `_record`) do not look at them again. Errors are ValueErrors
naming the field and what to send instead. Text is capped (`MAX_ID_CHARS`, `MAX_TITLE_CHARS`) so one
request cannot grow the store without bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared_schema import SCHEMA_VERSION, BehaviorEvent, BundleManifest, CandidateSlate
from shared_schema.messages import MAX_ID_CHARS, MAX_TITLE_CHARS, CandidateItem

__all__ = [
    "ACTIONS",
    "MAX_ID_CHARS",
    "MAX_TITLE_CHARS",
    "VECTOR_DTYPE",
    "CheckedEvent",
    "SlateRules",
    "check_event",
    "check_slate",
    "finite_seconds",
    "matrix",
    "source",
    "text",
    "vector",
]

ACTIONS = ("impression", "click")
VECTOR_DTYPE = np.dtype("<f4")
"""Vectors are little-endian float32, in memory, in the store and (compact form) on the wire."""


def text(value: object, field: str, max_chars: int = MAX_ID_CHARS) -> str:
    """A non-empty string of at most `max_chars` characters, else ValueError naming `field`."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field}: expected a non-empty string, got {_short(value)}")
    if len(value) > max_chars:
        raise ValueError(f"{field}: {len(value)} characters, at most {max_chars} are accepted; send a shorter id")
    return value


def finite_seconds(value: object, field: str) -> float:
    """A finite number of seconds (not a boolean), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{field}: expected a finite number of seconds, got {_short(value)}")
    return float(value)


def source(value: object, field: str, sources: Sequence[str] | None) -> str:
    """A source name, one of `sources` when given."""
    name = text(value, field)
    if sources is not None and name not in sources:
        raise ValueError(f"{field}: unknown source {name!r}; the sources are {list(sources)}")
    return name


def vector(value: object, field: str) -> np.ndarray:
    """`value` as a finite, non-empty 1-D float32 array; strings and booleans are refused, not coerced."""
    return _floats(value, field, ndim=1)


def matrix(value: object, field: str) -> np.ndarray:
    """`value` as a finite [items, width >= 1] float32 array, else ValueError naming the bad row."""
    return _floats(value, field, ndim=2)


@dataclass(frozen=True)
class CheckedEvent:
    """A behaviour whose every field was checked; `vector` is float32 or None."""

    item_id: str
    source: str
    action: str
    ts: float
    vector: np.ndarray | None
    field: str


def check_event(
    event: object, field: str, sources: Sequence[str] | None, dims: dict[str, int] | None = None
) -> CheckedEvent:
    """A BehaviorEvent of this runtime's schema, a known source, a known action, a finite time and, when
    it carries one, a finite vector of the source's width (`dims`)."""
    if not isinstance(event, BehaviorEvent):
        raise ValueError(f"{field}: expected a BehaviorEvent, got {type(event).__name__}")
    if event.schema_version != SCHEMA_VERSION:
        raise ValueError(f"{field}.schema_version {event.schema_version} is not {SCHEMA_VERSION}")
    name = source(event.source, f"{field}.source", sources)
    if event.action not in ACTIONS:
        raise ValueError(f"{field}.action: unknown action {event.action!r}; use one of {list(ACTIONS)}")
    vec = None if event.vector is None else vector(event.vector, f"{field}.vector")
    width = (dims or {}).get(name)
    if vec is not None and width is not None and vec.size != width:
        raise ValueError(f"{field}.vector: {vec.size} values, source {name!r} takes {width}")
    return CheckedEvent(
        text(event.item_id, f"{field}.item_id"), name, event.action, finite_seconds(event.ts, f"{field}.ts"), vec, field
    )


@dataclass(frozen=True)
class SlateRules:
    """What a slate must match: the bundle's sources, their vector widths, n and embedding version."""

    sources: tuple[str, ...]
    dims: tuple[int, ...]
    n: int
    embedding_version: str

    @classmethod
    def of(cls, manifest: BundleManifest) -> SlateRules:
        return cls(tuple(manifest.source_names), tuple(manifest.vector_dims), manifest.n, manifest.embedding_version)


def check_slate(slate: object, rules: SlateRules) -> list[tuple[list[CandidateItem], np.ndarray]]:
    """Per bundle source (in bundle order): (items, float32 [k, d] vectors); ValueError naming the field.

    The items' own fields (finite floats, no strings or booleans, capped text) were checked when the
    CandidateSlate was built; here the slate is matched against the bundle and each vector is cast once."""
    if not isinstance(slate, CandidateSlate):
        raise ValueError(f"slate: expected a CandidateSlate, got {type(slate).__name__}")
    if slate.schema_version != SCHEMA_VERSION:
        raise ValueError(
            f"slate.schema_version {slate.schema_version} is not supported (this runtime reads {SCHEMA_VERSION})"
        )
    if slate.embedding_version != rules.embedding_version:
        raise ValueError(
            f"slate.embedding_version {slate.embedding_version!r} differs from the bundle's "
            f"{rules.embedding_version!r}; fetch slates for the installed bundle or install the "
            "matching bundle"
        )
    out: list[tuple[list[CandidateItem], np.ndarray]] = [([], np.zeros((0, d), VECTOR_DTYPE)) for d in rules.dims]
    seen: set[str] = set()
    owner: dict[str, str] = {}  # item id -> the source that sent it first
    for j, entry in enumerate(slate.sources):
        where = f"slate.sources[{j}]"
        if entry.source not in rules.sources:
            raise ValueError(
                f"{where}.source {entry.source!r} is not a source of the bundle; known sources: {list(rules.sources)}"
            )
        if entry.source in seen:
            raise ValueError(f"{where}.source {entry.source!r} appears twice; send one list per source")
        seen.add(entry.source)
        s = rules.sources.index(entry.source)
        items = entry.items
        if len(items) > rules.n:
            raise ValueError(
                f"{where}.items: {len(items)} items, the bundle takes at most n={rules.n} "
                f"per source; send the upstream top {rules.n}"
            )
        ids = {item.item_id for item in items}
        if len(ids) != len(items):
            names = [item.item_id for item in items]
            raise ValueError(f"{where}.items: item ids repeat ({sorted({i for i in names if names.count(i) > 1})})")
        if not items:
            continue
        dim = rules.dims[s]
        try:
            with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused below
                vectors = np.array([item.vector for item in items], dtype=VECTOR_DTYPE)
        except ValueError:  # vectors of different lengths
            vectors = np.zeros((0, 0), VECTOR_DTYPE)
        if vectors.shape[1] != dim:
            i, item = next((i, item) for i, item in enumerate(items) if len(item.vector) != dim)
            raise ValueError(
                f"{where}.items[{i}].vector: {len(item.vector)} values, source {entry.source!r} takes {dim}"
            )
        twice = ids & owner.keys()
        if twice:
            first = min(twice)
            raise ValueError(
                f"{where}.items: item id {first!r} is also a candidate of source {owner[first]!r}; "
                "an item belongs to one source"
            )
        owner.update(dict.fromkeys(ids, entry.source))
        if not np.isfinite(vectors).all():  # finite as float64 but beyond float32
            bad = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
            raise ValueError(
                f"{where}.items[{bad}].vector holds NaN or infinite values (or values beyond float32); "
                "send finite floats"
            )
        out[s] = (items, vectors)
    if not owner:
        raise ValueError("slate.sources: no candidate items; send at least one item")
    return out


def _floats(value: object, field: str, ndim: int) -> np.ndarray:
    shape = "a non-empty 1-D vector" if ndim == 1 else "an [items, width] matrix"
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{field}: not {shape} of floats ({exc})") from None
        if array.dtype == object or _has_bool(value, ndim):
            raise ValueError(f"{field}: expected {shape} of numbers; strings and booleans are not numbers")
    if array.dtype.kind not in "fiu":
        raise ValueError(
            f"{field}: expected {shape} of numbers, got {array.dtype.name} values; strings and booleans are not numbers"
        )
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused below
        array = array.astype(VECTOR_DTYPE, copy=False)
    if array.ndim != ndim or array.shape[-1] == 0:
        raise ValueError(f"{field}: expected {shape}, got shape {array.shape}")
    finite = np.isfinite(array).all(axis=-1)
    if not finite.all():
        where = field if ndim == 1 else f"{field}[{np.flatnonzero(~finite)[0]}]"
        raise ValueError(f"{where}: holds NaN or infinite values (or values beyond float32); send finite floats")
    return array


def _has_bool(value: object, ndim: int) -> bool:
    """Whether a (nested) list holds a boolean, which numpy would silently turn into 0.0 or 1.0."""
    rows = value if ndim == 2 and isinstance(value, (list, tuple)) else [value]
    return any(isinstance(x, (bool, np.bool_)) for row in rows if isinstance(row, (list, tuple)) for x in row)


def _short(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else f"{shown[:60]}... ({len(shown)} characters)"
