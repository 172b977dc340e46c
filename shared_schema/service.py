"""Wire messages of the cloud service besides the slate (both sides validate them; no torch here).

    request = VectorRequest(ids={"video": ["v1", "v2"]})          # POST /v1/vectors
    answer = ItemVectors.model_validate_json(body)                 # vectors + embedding version + unknown ids
    listing = BundleList.model_validate_json(body)                 # GET /v1/bundles, newest first

Behaviour never travels to the cloud: no message here carries a click or an impression.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from shared_schema.messages import BehaviorEvent, CandidateSlate, SourceCandidates


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _example(model: type[BaseModel]) -> JsonDict:
    """The first example in a message's JSON schema, to build the examples of messages that contain it."""
    extra = model.model_config.get("json_schema_extra")
    examples = extra.get("examples") if isinstance(extra, dict) else None
    if not isinstance(examples, list) or not examples or not isinstance(examples[0], dict):
        raise TypeError(f"{model.__name__}: its JSON schema has no example object")
    return examples[0]


class VectorRequest(_Message):
    """Item ids per source whose vectors the device wants (e.g. after an embedding-version change)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"ids": {"video": ["v17", "v3"], "article": ["a8"]}}]})

    ids: dict[str, list[str]] = Field(
        description="source name -> item ids; at most max_vector_ids ids in all (GET /version)",
        examples=[{"video": ["v17", "v3"], "article": ["a8"]}],
    )


MIN_BUCKET_ITEMS = 256
"""Default least number of items in one anonymity bucket of a vector refresh (POST /v1/vectors/buckets)."""


def item_bucket(item_id: str, count: int) -> int:
    """The anonymity bucket of `item_id` among `count` buckets: the first 8 bytes of its sha256, mod count."""
    return int.from_bytes(hashlib.sha256(item_id.encode("utf-8")).digest()[:8], "big") % count


class BucketRequest(_Message):
    """Whole anonymity buckets of item ids per source (their numbers, `item_bucket`), never single ids."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"buckets": {"video": [0, 3], "article": [1]}}]})

    buckets: dict[str, list[int]] = Field(
        description="source name -> bucket numbers", examples=[{"video": [0, 3], "article": [1]}]
    )


class ItemVectors(_Message):
    """Vectors of the known ids (per source, in request order) and the ids the cloud does not know."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "embedding_version": "5d41402abc4b2a76",
                    "sources": [
                        {"source": "video", "items": [{"item_id": "v17", "vector": [0.12, -0.5, 0.03, 1.4]}]},
                        {"source": "article", "items": [{"item_id": "a8", "vector": [1.0, 0.25]}]},
                    ],
                    "unknown": {"video": ["v3"]},
                }
            ]
        }
    )

    embedding_version: str = Field(
        description="version of the ItemEncoder that made the vectors", examples=["5d41402abc4b2a76"]
    )
    sources: list[SourceCandidates] = Field(
        description="per requested source, the known ids in request order with their vectors"
    )
    unknown: dict[str, list[str]] = Field(
        default_factory=dict,
        description="source -> requested ids the cloud does not know",
        examples=[{"video": ["v3"]}],
    )


class ListSlate(_Message):
    """A prepared list replayed as a slate, with the device-view history the model saw offline."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"slate": _example(CandidateSlate), "history": [_example(BehaviorEvent)]}]}
    )

    slate: CandidateSlate = Field(description="the list's candidates per source, with vectors")
    history: list[BehaviorEvent] = Field(
        description="the user's device-view clicks before the list, oldest "
        "first, with vectors (for `dir-device record --events`)"
    )


class BundleFileEntry(_Message):
    """One downloadable file of a bundle (manifest.json included) and where to get it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "path": "model.tflite",
                    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "size": 183204,
                    "url": "/v1/bundles/dir-1/files/model.tflite",
                }
            ]
        }
    )

    path: str = Field(description="the file's path inside the bundle", examples=["model.tflite"])
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="hex sha256 of the file",
        examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
    )
    size: int = Field(ge=0, description="size in bytes", examples=[183204])
    url: str = Field(
        description="where to GET it, relative to the service", examples=["/v1/bundles/dir-1/files/model.tflite"]
    )


class BundleEntry(_Message):
    """A bundle offered for download; `version` is its folder name on the server."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "version": "dir-1",
                    "model_name": "dir",
                    "model_version": "3b9e61f0c2d4",
                    "created_at": "2026-12-04T20:31:07.412096+00:00",
                    "embedding_version": "5d41402abc4b2a76",
                    "manifest_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "files": [
                        {
                            "path": "manifest.json",
                            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                            "size": 2210,
                            "url": "/v1/bundles/dir-1/files/manifest.json",
                        }
                    ],
                }
            ]
        }
    )

    version: str = Field(description="the bundle's folder name on the server", examples=["dir-1"])
    model_name: str = Field(description="model registry name", examples=["dir"])
    model_version: str = Field(description="version of the exported weights", examples=["3b9e61f0c2d4"])
    created_at: str = Field(
        description="export time, ISO 8601 with its UTC offset", examples=["2026-12-04T20:31:07.412096+00:00"]
    )
    embedding_version: str = Field(
        description="ItemEncoder version the bundle's slates must carry", examples=["5d41402abc4b2a76"]
    )
    manifest_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="hex sha256 of manifest.json",
        examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
    )
    files: list[BundleFileEntry] = Field(description="every file of the bundle, manifest.json included")


class BundleList(_Message):
    """Every intact bundle, newest `created_at` first; `latest` names the newest (None when empty)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"latest": "dir-1", "bundles": [_example(BundleEntry)]}]})

    latest: str | None = Field(description="version of the newest bundle; null when there is none", examples=["dir-1"])
    bundles: list[BundleEntry] = Field(description="every intact bundle, newest created_at first")


class ServiceInfo(_Message):
    """GET /version: what the service runs."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "package_version": "0.1.0",
                    "schema_version": 1,
                    "embedding_version": "5d41402abc4b2a76",
                    "model_name": "dir",
                    "sources": ["video", "article", "ad"],
                    "vector_dims": [16, 16, 16],
                    "n": 10,
                    "max_vector_ids": 1000,
                    "vector_buckets": {"video": 4, "article": 2, "ad": 1},
                    "min_bucket_items": 256,
                    "max_buckets": 8,
                }
            ]
        }
    )

    package_version: str = Field(description="version of the dir-rerank package", examples=["0.1.0"])
    schema_version: int = Field(description="wire format version of the messages", examples=[1])
    embedding_version: str = Field(
        description="ItemEncoder version of the vectors served", examples=["5d41402abc4b2a76"]
    )
    model_name: str = Field(description="model registry name of the run", examples=["dir"])
    sources: list[str] = Field(description="source names, in the model's order", examples=[["video", "article", "ad"]])
    vector_dims: list[int] = Field(description="vector width per source, same order", examples=[[16, 16, 16]])
    n: int = Field(description="most candidates per source in a slate", examples=[10])
    max_vector_ids: int = Field(description="most item ids in one POST /v1/vectors", examples=[1000])
    vector_buckets: dict[str, int] = Field(
        default_factory=dict,
        description="source -> anonymity bucket count",
        examples=[{"video": 4, "article": 2, "ad": 1}],
    )
    min_bucket_items: int = Field(
        0, description="every bucket holds at least this many items (or the whole table)", examples=[256]
    )
    max_buckets: int = Field(0, description="most buckets per POST /v1/vectors/buckets", examples=[8])
