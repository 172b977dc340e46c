"""Versioned wire messages: slates (cloud -> device), behaviour events (device-local), results.

Vector values are JSON numbers (strings and booleans are refused, not coerced). On the wire an item
vector may also travel in a compact form, a base64 string of its little-endian float32 bytes, or of its
float16 bytes where the bundle allows it (`encode_vector`). The service sends one when the client asks for
its media type (`media_type`): the body's Content-Type says which (`wire_form`), and a body is parsed with
that form's context. float32 parses to the same floats as JSON numbers; float16 to the nearest float16.
Ids and titles are capped in length (`MAX_ID_CHARS`, `MAX_TITLE_CHARS`).

    body = slate.model_dump_json(context=COMPACT)                     # vectors as base64 float32
    CandidateSlate.model_validate_json(body)                           # JSON numbers or base64 float32
    body = slate.model_dump_json(context=COMPACT_FLOAT16)             # base64 float16, half the bytes
    CandidateSlate.model_validate_json(body, context=COMPACT_FLOAT16)
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FieldSerializationInfo,
    StrictFloat,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from shared_schema.specs import SCHEMA_VERSION

Action = Literal["impression", "click"]
MAX_ID_CHARS = 256
"""Longest item id, user id, request id or source name accepted (characters)."""
MAX_TITLE_CHARS = 1024
"""Longest item title accepted (characters)."""
COMPACT_MEDIA_TYPE = "application/vnd.dir-rerank.compact+json"
"""Content type of a JSON body whose item vectors are base64 little-endian float32 strings; with the
parameter `vectors=float16` (`media_type("float16")`), float16 strings."""
WireForm = Literal["json", "float32", "float16"]
"""How a body's item vectors travel: JSON numbers, or base64 of little-endian float32 / float16 values."""
COMPACT_DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
COMPACT = {"vectors": "float32"}
"""Serialization context for the float32 compact form: `message.model_dump_json(context=COMPACT)`."""
COMPACT_FLOAT16 = {"vectors": "float16"}
"""Context of the float16 compact form, to write a body and to parse one (a string is float32 without it)."""


def wire_context(form: WireForm) -> dict[str, str] | None:
    """The (de)serialization context of a wire form: None for JSON numbers."""
    return None if form == "json" else {"vectors": form}


def media_type(form: WireForm) -> str:
    """The Content-Type of a body in `form`."""
    if form == "json":
        return "application/json"
    return COMPACT_MEDIA_TYPE if form == "float32" else f"{COMPACT_MEDIA_TYPE}; vectors={form}"


def wire_form(content_type: str | None) -> WireForm:
    """The wire form a Content-Type names; ValueError for a compact type with an unknown vectors parameter."""
    kind, *params = [part.strip() for part in (content_type or "").split(";")]
    if kind.lower() != COMPACT_MEDIA_TYPE:
        return "json"
    named = dict(p.split("=", 1) for p in params if "=" in p)
    form = named.get("vectors", "float32").strip().lower()
    if form not in COMPACT_DTYPES:
        raise ValueError(f"Content-Type {content_type!r}: vectors={form} is not one of {list(COMPACT_DTYPES)}")
    return form  # type: ignore[return-value]


def _dtype_of(context: object) -> str | None:
    """The compact dtype a (de)serialization context asks for, None for JSON numbers."""
    form = context.get("vectors") if isinstance(context, dict) else None
    return form if form in COMPACT_DTYPES else None


def encode_vector(values: object, dtype: str = "float32") -> str:
    """Base64 of the values as little-endian `dtype` (float32 or float16: the compact wire forms of a vector);
    ValueError for a value float16 cannot hold (beyond +-65504)."""
    with np.errstate(over="ignore"):  # a float16 overflow becomes inf, refused below
        array = np.asarray(values, dtype=COMPACT_DTYPES[dtype])
    if dtype == "float16" and not np.isfinite(array).all():
        raise ValueError("vector: a value beyond float16's range (+-65504); send this vector as float32")
    return base64.b64encode(array.tobytes()).decode("ascii")


def decode_vector(text: str, dtype: str = "float32") -> list[float]:
    """The floats of a compact vector; ValueError for text that is not base64 of whole `dtype` values."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"vector: a string vector must be base64 of little-endian {dtype} values") from None
    width = COMPACT_DTYPES[dtype].itemsize
    if len(raw) % width:
        raise ValueError(f"vector: {len(raw)} bytes of base64 data, not whole {dtype} values ({width} bytes each)")
    floats: list[float] = np.frombuffer(raw, dtype=COMPACT_DTYPES[dtype]).tolist()
    return floats


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CandidateItem(_Message):
    """One candidate: its id, dense vector from the cloud's ItemEncoder and optional upstream score."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"item_id": "v17", "vector": [0.12, -0.5, 0.03, 1.4], "upstream_score": 0.83, "title": "Cats at sea"}
            ]
        }
    )

    item_id: str = Field(
        min_length=1, max_length=MAX_ID_CHARS, description="the item's id, unique within its source", examples=["v17"]
    )
    vector: list[StrictFloat] = Field(
        description="the item's dense vector from the cloud's ItemEncoder: exactly the "
        "source's vector_dims width in the bundle manifest, finite floats; "
        "JSON numbers, or base64 of little-endian float32 values (float16 in a body "
        "whose Content-Type says vectors=float16)",
        examples=[[0.12, -0.5, 0.03, 1.4]],
    )
    upstream_score: float | None = Field(
        None,
        description="the source ranker's score, for display and logging; the model does not read it",
        examples=[0.83],
    )
    title: str | None = Field(
        None,
        max_length=MAX_TITLE_CHARS,
        description="text to show for the item; passed through to the result",
        examples=["Cats at sea"],
    )

    @field_validator("vector", mode="before")
    @classmethod
    def _compact(cls, v: object, info: ValidationInfo) -> object:
        return decode_vector(v, _dtype_of(info.context) or "float32") if isinstance(v, str) else v

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
        dtype = _dtype_of(info.context)
        return v if dtype is None else encode_vector(v, dtype)


class SourceCandidates(_Message):
    """A source's candidate list, in the upstream ranker's order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "source": "video",
                    "items": [
                        {"item_id": "v17", "vector": [0.12, -0.5, 0.03, 1.4]},
                        {"item_id": "v3", "vector": [0.4, 0.1, -0.2, 0.0]},
                    ],
                }
            ]
        }
    )

    source: str = Field(
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="a source name of the bundle (manifest sources), at most once per slate",
        examples=["video"],
    )
    items: list[CandidateItem] = Field(
        default_factory=list,
        description="at most the bundle's n candidates, best first by the "
        "source's own ranker; ids unique within the source",
    )


class CandidateSlate(_Message):
    """What the cloud sends the device for one page: per-source candidates with vectors."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "schema_version": SCHEMA_VERSION,
                    "user_id": "u000042",
                    "request_id": "3f9c0d2a",
                    "embedding_version": "5d41402abc4b2a76",
                    "sources": [
                        {
                            "source": "video",
                            "items": [
                                {"item_id": "v17", "vector": [0.12, -0.5, 0.03, 1.4]},
                                {"item_id": "v3", "vector": [0.4, 0.1, -0.2, 0.0]},
                            ],
                        },
                        {"source": "article", "items": [{"item_id": "a8", "vector": [1.0, 0.25]}]},
                    ],
                }
            ]
        }
    )

    schema_version: int = Field(
        SCHEMA_VERSION,
        description="wire format version; the runtime refuses any other than its own",
        examples=[SCHEMA_VERSION],
    )
    user_id: str = Field(
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="the user the slate is for (the device does not check it)",
        examples=["u000042"],
    )
    request_id: str = Field(
        "",
        max_length=MAX_ID_CHARS,
        description="an id the caller picks; echoed in the RerankResult",
        examples=["3f9c0d2a"],
    )
    embedding_version: str = Field(
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="version of the ItemEncoder that made the vectors; must equal "
        "the installed bundle's embedding_version",
        examples=["5d41402abc4b2a76"],
    )
    sources: list[SourceCandidates] = Field(
        description="one candidate list per source (a source may be left out); at least one item in all"
    )


class BehaviorEvent(_Message):
    """A behaviour recorded on the device; never uploaded for reranking."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "schema_version": SCHEMA_VERSION,
                    "item_id": "v17",
                    "source": "video",
                    "action": "click",
                    "ts": 1733300000.5,
                    "vector": [0.12, -0.5, 0.03, 1.4],
                }
            ]
        }
    )

    schema_version: int = Field(
        SCHEMA_VERSION,
        description="wire format version; the runtime refuses any other than its own",
        examples=[SCHEMA_VERSION],
    )
    item_id: str = Field(
        min_length=1, max_length=MAX_ID_CHARS, description="the item's id within its source", examples=["v17"]
    )
    source: str = Field(
        min_length=1, max_length=MAX_ID_CHARS, description="a source name of the installed bundle", examples=["video"]
    )
    action: Action = Field(
        description="click (the model reads the last t clicks per source) or impression (kept for the exposure shares)",
        examples=["click"],
    )
    ts: StrictFloat = Field(description="unix time in seconds", examples=[1733300000.5])
    vector: list[StrictFloat] | None = Field(
        None,
        description="item vector, if the store has not cached it (the source's vector_dims width)",
        examples=[[0.12, -0.5, 0.03, 1.4]],
    )


class RankedItem(_Message):
    """One candidate of the reranked list."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"item_id": "v17", "source": "video", "score": 1.37, "title": "Cats at sea"}]}
    )

    item_id: str = Field(description="the candidate's id", examples=["v17"])
    source: str = Field(description="the candidate's source", examples=["video"])
    score: float = Field(
        description="the model's score (a logit: higher is better; sigmoid gives the click "
        "probability); list decoders may place a lower score first",
        examples=[1.37],
    )
    title: str | None = Field(None, description="the candidate's title from the slate", examples=["Cats at sea"])

    @classmethod
    def checked(cls, item_id: str, source: str, score: float, title: str | None) -> RankedItem:
        """An item of values already checked (the rerank builds one per candidate), not validated again:
        what `model_construct` builds, at a fraction of its cost (it sets the same instance slots)."""
        item = _new(cls)
        _set(item, "__dict__", {"item_id": item_id, "source": source, "score": score, "title": title})
        _set(item, "__pydantic_fields_set__", {"item_id", "source", "score", "title"})
        _set(item, "__pydantic_extra__", None)
        _set(item, "__pydantic_private__", None)
        return item


_new, _set = object.__new__, object.__setattr__


class RerankResult(_Message):
    """The merged list with provenance and per-stage timings in milliseconds."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "schema_version": SCHEMA_VERSION,
                    "request_id": "3f9c0d2a",
                    "items": [
                        {"item_id": "v17", "source": "video", "score": 1.37},
                        {"item_id": "a8", "source": "article", "score": 0.52},
                        {"item_id": "v3", "source": "video", "score": -0.4},
                    ],
                    "backend": "tflite",
                    "delegate": "xnnpack",
                    "merge": "quota",
                    "bundle_version": "3b9e61f0c2d4-8a1f03c2b7e5",
                    "timings_ms": {
                        "validate_cache": 0.21,
                        "history_read": 0.08,
                        "assembly": 0.03,
                        "inference": 0.35,
                        "merge": 0.04,
                        "record_exposures": 0.12,
                        "total": 0.83,
                    },
                }
            ]
        }
    )

    schema_version: int = Field(SCHEMA_VERSION, description="wire format version", examples=[SCHEMA_VERSION])
    request_id: str = Field("", description="the slate's request_id", examples=["3f9c0d2a"])
    items: list[RankedItem] = Field(
        description="every candidate of the slate, in the order to show; the first "
        "K (bundle manifest) are the page, and their exposures are "
        "recorded"
    )
    backend: str = Field(description="the runtime that ran the model: tflite or executorch", examples=["tflite"])
    delegate: str = Field(
        description="the delegate that ran it: cpu, xnnpack, portable, gpu, edgetpu, ...", examples=["xnnpack"]
    )
    merge: str = Field(
        description="what built the list: score, quota or controller (merge modes), or the "
        "bundle's list decoder (beam_search, slot_policy, contrastive)",
        examples=["quota"],
    )
    bundle_version: str = Field(
        description="the installed bundle's version: <model_version>-<manifest hash>",
        examples=["3b9e61f0c2d4-8a1f03c2b7e5"],
    )
    timings_ms: dict[str, float] = Field(
        default_factory=dict,
        description="milliseconds per stage: validate_cache, history_read, "
        "assembly, inference, merge, record_exposures, and total",
    )
