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

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"item_id": "v17", "vector": [0.12, -0.5, 0.03, 1.4], "upstream_score": 0.83, "title": "Cats at sea"}]})

    item_id: str = Field(min_length=1, description="the item's id, unique within its source",
                         examples=["v17"])
    vector: list[float] = Field(description="the item's dense vector from the cloud's ItemEncoder: exactly the "
                                            "source's vector_dims width in the bundle manifest, finite floats",
                                examples=[[0.12, -0.5, 0.03, 1.4]])
    upstream_score: float | None = Field(None, description="the source ranker's score, for display and "
                                                           "logging; the model does not read it",
                                         examples=[0.83])
    title: str | None = Field(None, description="text to show for the item; passed through to the result",
                              examples=["Cats at sea"])

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

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"source": "video", "items": [{"item_id": "v17", "vector": [0.12, -0.5, 0.03, 1.4]},
                                      {"item_id": "v3", "vector": [0.4, 0.1, -0.2, 0.0]}]}]})

    source: str = Field(description="a source name of the bundle (manifest sources), at most once per slate",
                        examples=["video"])
    items: list[CandidateItem] = Field(default_factory=list,
                                       description="at most the bundle's n candidates, best first by the "
                                                   "source's own ranker; ids unique within the source")


class CandidateSlate(_Message):
    """What the cloud sends the device for one page: per-source candidates with vectors."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "schema_version": SCHEMA_VERSION, "user_id": "u000042", "request_id": "3f9c0d2a",
        "embedding_version": "5d41402abc4b2a76", "sources": [
            {"source": "video", "items": [{"item_id": "v17", "vector": [0.12, -0.5, 0.03, 1.4]},
                                          {"item_id": "v3", "vector": [0.4, 0.1, -0.2, 0.0]}]},
            {"source": "article", "items": [{"item_id": "a8", "vector": [1.0, 0.25]}]}]}]})

    schema_version: int = Field(SCHEMA_VERSION, description="wire format version; the runtime refuses any "
                                                            "other than its own", examples=[SCHEMA_VERSION])
    user_id: str = Field(description="the user the slate is for (the device does not check it)",
                         examples=["u000042"])
    request_id: str = Field("", description="an id the caller picks; echoed in the RerankResult",
                            examples=["3f9c0d2a"])
    embedding_version: str = Field(description="version of the ItemEncoder that made the vectors; must equal "
                                               "the installed bundle's embedding_version",
                                   examples=["5d41402abc4b2a76"])
    sources: list[SourceCandidates] = Field(description="one candidate list per source (a source may be left "
                                                        "out); at least one item in all")


class BehaviorEvent(_Message):
    """A behaviour recorded on the device; never uploaded for reranking."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"schema_version": SCHEMA_VERSION, "item_id": "v17", "source": "video", "action": "click",
         "ts": 1733300000.5, "vector": [0.12, -0.5, 0.03, 1.4]}]})

    schema_version: int = Field(SCHEMA_VERSION, description="wire format version; the runtime refuses any "
                                                            "other than its own", examples=[SCHEMA_VERSION])
    item_id: str = Field(min_length=1, description="the item's id within its source", examples=["v17"])
    source: str = Field(description="a source name of the installed bundle", examples=["video"])
    action: Action = Field(description="click (the model reads the last t clicks per source) or impression "
                                       "(kept for the exposure shares)", examples=["click"])
    ts: float = Field(description="unix time in seconds", examples=[1733300000.5])
    vector: list[float] | None = Field(None, description="item vector, if the store has not cached it "
                                                         "(the source's vector_dims width)",
                                       examples=[[0.12, -0.5, 0.03, 1.4]])


class RankedItem(_Message):
    """One candidate of the reranked list."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"item_id": "v17", "source": "video", "score": 1.37, "title": "Cats at sea"}]})

    item_id: str = Field(description="the candidate's id", examples=["v17"])
    source: str = Field(description="the candidate's source", examples=["video"])
    score: float = Field(description="the model's score (a logit: higher is better; sigmoid gives the click "
                                     "probability); list decoders may place a lower score first",
                         examples=[1.37])
    title: str | None = Field(None, description="the candidate's title from the slate", examples=["Cats at sea"])


class RerankResult(_Message):
    """The merged list with provenance and per-stage timings in milliseconds."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "schema_version": SCHEMA_VERSION, "request_id": "3f9c0d2a",
        "items": [{"item_id": "v17", "source": "video", "score": 1.37},
                  {"item_id": "a8", "source": "article", "score": 0.52},
                  {"item_id": "v3", "source": "video", "score": -0.4}],
        "backend": "tflite", "delegate": "xnnpack", "merge": "quota", "bundle_version": "3b9e61f0c2d4-8a1f03c2b7e5",
        "timings_ms": {"validate_cache": 0.21, "history_read": 0.08, "assembly": 0.03, "inference": 0.35,
                       "merge": 0.04, "record_exposures": 0.12, "total": 0.83}}]})

    schema_version: int = Field(SCHEMA_VERSION, description="wire format version", examples=[SCHEMA_VERSION])
    request_id: str = Field("", description="the slate's request_id", examples=["3f9c0d2a"])
    items: list[RankedItem] = Field(description="every candidate of the slate, in the order to show; the first "
                                                "K (bundle manifest) are the page, and their exposures are "
                                                "recorded")
    backend: str = Field(description="the runtime that ran the model: tflite or executorch", examples=["tflite"])
    delegate: str = Field(description="the delegate that ran it: cpu, xnnpack, portable, gpu, edgetpu, ...",
                          examples=["xnnpack"])
    merge: str = Field(description="what built the list: score, quota or controller (merge modes), or the "
                                   "bundle's list decoder (beam_search, slot_policy, contrastive)",
                       examples=["quota"])
    bundle_version: str = Field(description="the installed bundle's version: <model_version>-<manifest hash>",
                                examples=["3b9e61f0c2d4-8a1f03c2b7e5"])
    timings_ms: dict[str, float] = Field(default_factory=dict,
                                         description="milliseconds per stage: validate_cache, history_read, "
                                                     "assembly, inference, merge, record_exposures, and total")
