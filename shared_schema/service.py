"""Wire messages of the cloud service besides the slate (both sides validate them; no torch here).

    request = VectorRequest(ids={"video": ["v1", "v2"]})          # POST /v1/vectors
    answer = ItemVectors.model_validate_json(body)                 # vectors + embedding version + unknown ids
    listing = BundleList.model_validate_json(body)                 # GET /v1/bundles, newest first

Behaviour never travels to the cloud: no message here carries a click or an impression.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field

from shared_schema.messages import BehaviorEvent, CandidateSlate, SourceCandidates


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VectorRequest(_Message):
    """Item ids per source whose vectors the device wants (e.g. after an embedding-version change)."""

    ids: dict[str, list[str]] = Field(description="source name -> item ids")


MIN_BUCKET_ITEMS = 256
"""Default least number of items in one anonymity bucket of a vector refresh (POST /v1/vectors/buckets)."""


def item_bucket(item_id: str, count: int) -> int:
    """The anonymity bucket of `item_id` among `count` buckets: the first 8 bytes of its sha256, mod count."""
    return int.from_bytes(hashlib.sha256(item_id.encode("utf-8")).digest()[:8], "big") % count


class BucketRequest(_Message):
    """Whole anonymity buckets of item ids per source (their numbers, `item_bucket`), never single ids."""

    buckets: dict[str, list[int]] = Field(description="source name -> bucket numbers")


class ItemVectors(_Message):
    """Vectors of the known ids (per source, in request order) and the ids the cloud does not know."""

    embedding_version: str
    sources: list[SourceCandidates]
    unknown: dict[str, list[str]] = Field(default_factory=dict)


class ListSlate(_Message):
    """A prepared list replayed as a slate, with the device-view history the model saw offline."""

    slate: CandidateSlate
    history: list[BehaviorEvent]


class BundleFileEntry(_Message):
    """One downloadable file of a bundle (manifest.json included) and where to get it."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    url: str


class BundleEntry(_Message):
    """A bundle offered for download; `version` is its folder name on the server."""

    version: str
    model_name: str
    model_version: str
    created_at: str
    embedding_version: str
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    files: list[BundleFileEntry]


class BundleList(_Message):
    """Every intact bundle, newest `created_at` first; `latest` names the newest (None when empty)."""

    latest: str | None
    bundles: list[BundleEntry]


class ServiceInfo(_Message):
    """GET /version: what the service runs."""

    package_version: str
    schema_version: int
    embedding_version: str
    model_name: str
    sources: list[str]
    vector_dims: list[int]
    n: int
    max_vector_ids: int
    vector_buckets: dict[str, int] = Field(default_factory=dict, description="source -> anonymity bucket count")
    min_bucket_items: int = Field(0, description="every bucket holds at least this many items (or the whole table)")
    max_buckets: int = Field(0, description="most buckets per POST /v1/vectors/buckets")
