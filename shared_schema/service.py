"""Wire messages of the cloud service besides the slate (both sides validate them; no torch here).

    request = VectorRequest(ids={"video": ["v1", "v2"]})          # POST /v1/vectors
    answer = ItemVectors.model_validate_json(body)                 # vectors + embedding version + unknown ids
    listing = BundleList.model_validate_json(body)                 # GET /v1/bundles, newest first

Behaviour never travels to the cloud: no message here carries a click or an impression.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shared_schema.messages import BehaviorEvent, CandidateSlate, SourceCandidates


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VectorRequest(_Message):
    """Item ids per source whose vectors the device wants (e.g. after an embedding-version change)."""

    ids: dict[str, list[str]] = Field(description="source name -> item ids")


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
