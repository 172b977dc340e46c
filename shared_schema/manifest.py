"""The model bundle's manifest (`manifest.json`), written by the cloud and checked by the device."""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field

from shared_schema.layout import TensorLayout, TensorSpec
from shared_schema.specs import SCHEMA_VERSION, SourceSpec

MANIFEST_NAME = "manifest.json"


class BundleFile(BaseModel):
    """One model file of the bundle: which runtime runs it, for which delegate, and its checksum."""

    model_config = ConfigDict(extra="forbid")

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    runtime: str = Field(description="'executorch' or 'tflite'")
    delegate: str = Field("cpu", description="what the file is lowered for: cpu, xnnpack, portable...")
    quantization: str = "fp32"
    parity_max_abs_diff: float | None = None


class BundleManifest(BaseModel):
    """Everything the device needs to run a bundle without the cloud's code."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    model_name: str
    model_version: str
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    sources: list[SourceSpec]
    vector_dims: list[int]
    n: int
    t: int
    K: int
    target_shares: list[float]
    embedding_version: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    files: list[BundleFile]
    metrics: dict[str, float] = Field(default_factory=dict)
    notes: dict[str, str] = Field(default_factory=dict)

    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self.sources]

    def layout(self) -> TensorLayout:
        return TensorLayout(vector_dims=tuple(self.vector_dims), n=self.n, t=self.t)
