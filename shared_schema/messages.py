"""Versioned wire messages: slates (cloud -> device), behaviour events (device-local), results.

Vector values are JSON numbers (strings and booleans are refused, not coerced). On the wire an item
vector may also travel in the compact form, a base64 string of its little-endian float32 bytes
(`encode_vector`), which the service sends when the client asks for `COMPACT_MEDIA_TYPE`; both forms
parse to the same floats. Ids and titles are capped in length (`MAX_ID_CHARS`, `MAX_TITLE_CHARS`).

    body = slate.model_dump_json(context=COMPACT)        # vectors as base64 float32
    CandidateSlate.model_validate_json(body)              # either form
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Literal

import numpy as np
from pydantic import (BaseModel, ConfigDict, Field, FieldSerializationInfo, StrictFloat, field_serializer,
                      field_validator)

from shared_schema.specs import SCHEMA_VERSION

Action = Literal["impression", "click"]
MAX_ID_CHARS = 256
"""Longest item id, user id, request id or source name accepted (characters)."""
MAX_TITLE_CHARS = 1024
"""Longest item title accepted (characters)."""
COMPACT_MEDIA_TYPE = "application/vnd.dir-rerank.compact+json"
"""Content type of a JSON body whose item vectors are base64 little-endian float32 strings."""
COMPACT = {"vectors": "base64"}
"""Serialization context for the compact form: `message.model_dump_json(context=COMPACT)`."""

Id = Field(min_length=1, max_length=MAX_ID_CHARS)


def encode_vector(values: object) -> str:
    """Base64 of the values as little-endian float32 (the compact wire form of a vector)."""
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: str) -> list[float]:
    """The floats of a compact vector; ValueError for text that is not base64 of whole float32 values."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("vector: a string vector must be base64 of little-endian float32 values") from None
    if len(raw) % 4:
        raise ValueError(f"vector: {len(raw)} bytes of base64 data, not whole float32 values (4 bytes each)")
    return np.frombuffer(raw, dtype="<f4").tolist()


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CandidateItem(_Message):
    """One candidate: its id, dense vector from the cloud's ItemEncoder and optional upstream score."""

    item_id: str = Id
    vector: list[StrictFloat] = Field(description="JSON numbers, or base64 of little-endian float32 values")
    upstream_score: float | None = None
    title: str | None = Field(None, max_length=MAX_TITLE_CHARS)

    @field_validator("vector", mode="before")
    @classmethod
    def _compact(cls, v: object) -> object:
        return decode_vector(v) if isinstance(v, str) else v

    @field_validator("vector")
    @classmethod
    def _finite(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("vector must not be empty")
        if not all(math.isfinite(x) for x in v):
            raise ValueError("vector holds NaN or infinite values; send finite floats")
        return v

    @field_serializer("vector")
    def _encode(self, v: list[float], info: FieldSerializationInfo) -> list[float] | str:
        return encode_vector(v) if info.context == COMPACT else v


class SourceCandidates(_Message):
    """A source's candidate list, in the upstream ranker's order."""

    source: str = Id
    items: list[CandidateItem] = Field(default_factory=list)


class CandidateSlate(_Message):
    """What the cloud sends the device for one page: per-source candidates with vectors."""

    schema_version: int = SCHEMA_VERSION
    user_id: str = Id
    request_id: str = Field("", max_length=MAX_ID_CHARS)
    embedding_version: str = Id
    sources: list[SourceCandidates]


class BehaviorEvent(_Message):
    """A behaviour recorded on the device; never uploaded for reranking."""

    schema_version: int = SCHEMA_VERSION
    item_id: str = Id
    source: str = Id
    action: Action
    ts: StrictFloat = Field(description="unix time in seconds")
    vector: list[StrictFloat] | None = Field(None, description="item vector, if the store has not cached it")


class RankedItem(_Message):
    item_id: str
    source: str
    score: float
    title: str | None = None


class RerankResult(_Message):
    """The merged list with provenance and per-stage timings in milliseconds."""

    schema_version: int = SCHEMA_VERSION
    request_id: str = ""
    items: list[RankedItem]
    backend: str
    delegate: str
    merge: str
    bundle_version: str
    timings_ms: dict[str, float] = Field(default_factory=dict)
