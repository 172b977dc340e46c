"""Versioned wire messages: slates (cloud -> device), behaviour events (device-local), results."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared_schema.specs import SCHEMA_VERSION

Action = Literal["impression", "click"]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CandidateItem(_Message):
    """One candidate: its id, dense vector from the cloud's ItemEncoder and optional upstream score."""

    item_id: str = Field(min_length=1)
    vector: list[float]
    upstream_score: float | None = None
    title: str | None = None

    @field_validator("vector")
    @classmethod
    def _finite(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("vector must not be empty")
        if not all(math.isfinite(x) for x in v):
            raise ValueError("vector holds NaN or infinite values; send finite floats")
        return v


class SourceCandidates(_Message):
    """A source's candidate list, in the upstream ranker's order."""

    source: str
    items: list[CandidateItem] = Field(default_factory=list)


class CandidateSlate(_Message):
    """What the cloud sends the device for one page: per-source candidates with vectors."""

    schema_version: int = SCHEMA_VERSION
    user_id: str
    request_id: str = ""
    embedding_version: str
    sources: list[SourceCandidates]


class BehaviorEvent(_Message):
    """A behaviour recorded on the device; never uploaded for reranking."""

    schema_version: int = SCHEMA_VERSION
    item_id: str = Field(min_length=1)
    source: str
    action: Action
    ts: float = Field(description="unix time in seconds")
    vector: list[float] | None = Field(None, description="item vector, if the store has not cached it")


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
