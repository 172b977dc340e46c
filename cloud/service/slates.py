"""Candidate slates (cloud -> device) built from prepared lists with the cloud's ItemEncoder.

    vectors = encode_items(model, data, "video", np.array([3, 7]))      # float32 [2, d_video]
    slate, history = slate_for_list(model, data, "test", row=0, embedding_version="ab12...")
    bodies = SlateBodies(["video"], [["v1", "v2"]], [vectors], embedding_version="ab12...")
    body = bodies.slate("u1", "req-1", [(np.array([1, 0]), np.array([0.9, 0.4]))], form="json")

`history` holds the list's device-view behaviours as BehaviorEvents with vectors, so a device store
can be seeded with exactly the history the model saw offline. `SlateBodies` writes a CandidateSlate's
JSON (the bytes `model_dump_json` gives, in any wire form of its vectors) from per-item pieces made once.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import ValidationError
from pydantic_core import to_json

from cloud.data.prepared import PreparedData
from cloud.models.base import RerankModel
from shared_schema import BehaviorEvent, CandidateItem, CandidateSlate, SourceCandidates
from shared_schema.messages import MAX_ID_CHARS, WireForm, wire_context
from shared_schema.specs import SCHEMA_VERSION

_ITEM_TAIL = ("upstream_score", "title")
"""CandidateItem fields written per request (after the item's id and vector)."""


@torch.no_grad()
def encode_items(model: RerankModel, data: PreparedData, source: str, rows: np.ndarray) -> np.ndarray:
    """Dense vectors of items (row indices of that source's item table) from the model's ItemEncoder."""
    s = data.spec.source_names.index(source)
    table = data.items(source)
    rows = np.asarray(rows, dtype=np.int64)
    cat = torch.as_tensor(np.asarray(table.categorical[rows], dtype=np.int64))
    dense = torch.as_tensor(np.asarray(table.dense[rows], dtype=np.float32))
    return model.item_encoder(s, cat, dense).numpy().astype(np.float32)


def slate_for_list(
    model: RerankModel, data: PreparedData, split: str, row: int, embedding_version: str
) -> tuple[CandidateSlate, list[BehaviorEvent]]:
    """The slate of one prepared list and its device-view history as events."""
    arrays = data.split(split)
    if not 0 <= row < len(arrays["user"]):
        raise ValueError(f"row {row} is outside split {split!r} (0..{len(arrays['user']) - 1})")
    user = str(data.users()[int(arrays["user"][row])])
    list_ts = float(arrays["ts"][row])
    sources, history = [], []
    for s, name in enumerate(data.spec.source_names):
        ids = data.items(name).ids
        cand = np.asarray(arrays["cand_item"][row, s])
        cand = cand[cand >= 0]
        vectors = encode_items(model, data, name, cand) if len(cand) else np.zeros((0, 0), np.float32)
        sources.append(
            SourceCandidates(
                source=name,
                items=[CandidateItem(item_id=str(ids[i]), vector=v.tolist()) for i, v in zip(cand, vectors)],
            )
        )
        hist = np.asarray(arrays["hist_device"][row, s])
        ages = np.asarray(arrays["hist_device_age"][row, s])
        real = hist >= 0
        if real.any():
            vectors = encode_items(model, data, name, hist[real])
            for i, age, v in zip(hist[real], ages[real], vectors):
                history.append(
                    BehaviorEvent(
                        item_id=str(ids[i]), source=name, action="click", ts=list_ts - float(age), vector=v.tolist()
                    )
                )
    history.sort(key=lambda e: e.ts)
    slate = CandidateSlate(
        user_id=user, request_id=f"{split}-{row}", embedding_version=embedding_version, sources=sources
    )
    return slate, history


class SlateBodies:
    """CandidateSlate JSON bodies joined from pieces serialised once: what a slate request costs is the
    upstream ranking and a join of bytes, not building and validating 30 models and their 1,000 floats.

    Each item is validated once, at start-up, as a CandidateItem (id length, finite non-empty vector) and
    kept as the bytes `{"item_id":...,"vector":...` in each wire form: JSON numbers, base64 float32, and
    base64 float16 unless a vector exceeds float16's range (then `forms` leaves it out), per worker. A
    request adds each item's upstream score and the slate's envelope; the result equals
    `CandidateSlate.model_dump_json()`
    with the form's context (`shared_schema.messages.wire_context`) byte for byte
    (tests/cloud/service/test_slate_bodies.py)."""

    def __init__(
        self, sources: list[str], ids: list[list[str]], vectors: list[np.ndarray], embedding_version: str
    ) -> None:
        self._pieces: dict[str, list[list[bytes]]] = {"json": [], "float32": [], "float16": []}
        for name, source_ids, source_vectors in zip(sources, ids, vectors):
            items = [_checked_item(name, i, v) for i, v in zip(source_ids, source_vectors.tolist())]
            for form, pieces in list(self._pieces.items()):
                try:
                    pieces.append([_item_head(_item_json(item, form)) for item in items])  # type: ignore[arg-type]
                except ValueError:  # float16 only: a value beyond its range
                    del self._pieces[form]
        self.forms: tuple[WireForm, ...] = tuple(self._pieces)  # type: ignore[arg-type]
        """The wire forms these bodies are written in."""
        self._source_heads = [b'{"source":' + to_json(name) + b',"items":[' for name in sources]
        self._envelope_tail = b',"embedding_version":' + to_json(embedding_version) + b',"sources":['

    def slate(
        self, user_id: str, request_id: str, picked: list[tuple[np.ndarray, np.ndarray]], form: WireForm
    ) -> bytes:
        """The slate of `picked` (per source: item rows and upstream scores, best first) as JSON bytes, its
        vectors in `form` (one of `forms`)."""
        if not 0 < len(user_id) <= MAX_ID_CHARS:
            raise ValueError(f"user id of {len(user_id)} characters: a slate's user_id holds 1..{MAX_ID_CHARS}")
        pieces = self._pieces[form]
        sources = []
        for s, (rows, scores) in enumerate(picked):
            texts = to_json(scores.tolist())[1:-1].split(b",") if len(rows) else []  # floats hold no comma
            items = [
                pieces[s][row] + b',"upstream_score":' + text + b',"title":null}'
                for row, text in zip(rows.tolist(), texts)
            ]
            sources.append(self._source_heads[s] + b",".join(items) + b"]}")
        return b"".join(
            [
                b'{"schema_version":%d,"user_id":' % SCHEMA_VERSION,
                to_json(user_id),
                b',"request_id":',
                to_json(request_id),
                self._envelope_tail,
                b",".join(sources),
                b"]}",
            ]
        )


def _item_json(item: CandidateItem, form: WireForm) -> str:
    return item.model_dump_json(exclude=set(_ITEM_TAIL), context=wire_context(form))


def _checked_item(source: str, item_id: str, vector: list[float]) -> CandidateItem:
    try:
        return CandidateItem(item_id=item_id, vector=vector)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(
            f"item {item_id[:80]!r} of source {source!r} cannot go in a slate ({problems}); check the run's "
            "item table and ItemEncoder"
        ) from None


def _item_head(item_json: str) -> bytes:
    """`{"item_id":...,"vector":...}` less its closing brace, so that per-request fields can follow."""
    return item_json.encode()[:-1]
