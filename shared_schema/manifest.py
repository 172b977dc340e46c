"""The model bundle's manifest (`manifest.json`), written by the cloud and checked by the device.

    manifest = BundleManifest.model_validate_json(text)
    manifest.decoder, decoder_settings(manifest.decoder, manifest.decoder_options)   # "beam_search", {...}

`decoder` says how the device turns the network's outputs into the list (DECODERS): `merge` (merge.py,
the default; a manifest without the field means it), `beam_search` (SVR), `slot_policy` (HRL: the
network once per slot) or `contrastive` (NAR4Rec). A decoder may need outputs after `scores`, listed in
`outputs` in that order, each [1, m*n, k]: one row per flat candidate s*n + j.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared_schema.layout import TensorLayout, TensorSpec
from shared_schema.specs import SCHEMA_VERSION, SourceSpec

MANIFEST_NAME = "manifest.json"
MAX_N = 1000
MAX_T = 10000
MAX_VECTOR_DIM = 65536
SHARE_TOLERANCE = 1e-4
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""What a bundle version, or one '/'-separated part of a bundle file name, may look like wherever it comes
from the network or a bundle: no separators, no `..`, no percent escapes, no leading dot."""
MAX_FILE_PARTS = 4
"""Most '/'-separated parts in a bundle file path."""


def plain_path(name: object, max_parts: int = MAX_FILE_PARTS) -> bool:
    """True for a relative path of 1..`max_parts` plain names (SAFE_NAME) joined by '/': no '..', no
    absolute path, no backslash, nothing hidden."""
    if not isinstance(name, str):
        return False
    parts = name.split("/")
    return 0 < len(parts) <= max_parts and all(SAFE_NAME.fullmatch(part) for part in parts)


@dataclass(frozen=True)
class Decoder:
    """A list decoder: the outputs it reads after `scores` and its options {name: (default, min, max)}."""

    outputs: tuple[str, ...] = ()
    options: Mapping[str, tuple[float | int, float, float]] = field(default_factory=dict)


DECODERS = {
    "merge": Decoder(),
    "beam_search": Decoder(options={"beam_width": (4, 1, math.inf), "diversity": (1.0, 0.0, math.inf)}),
    "slot_policy": Decoder(),
    "contrastive": Decoder(outputs=("matching", "encodings"), options={"alpha": (0.2, 0.0, 1.0)}),
}
"""Decoders this schema knows; `matching` is NAR4Rec's [1, m*n, S] matrix, `encodings` its unit-norm
candidate encodings [1, m*n, w] (cosine similarity = encodings @ encodings.T)."""


def decoder_settings(decoder: str, options: Mapping[str, float | int]) -> dict[str, float | int]:
    """`options` with the decoder's defaults filled in; ValueError naming `decoder` or `decoder_options.KEY`."""
    if decoder not in DECODERS:
        raise ValueError(
            f"decoder {decoder!r} is not known to this runtime; known decoders: {list(DECODERS)} "
            "(export the bundle with one of them or upgrade dir-rerank)"
        )
    known = DECODERS[decoder].options
    defaults = {name: default for name, (default, _, _) in known.items()}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"decoder_options {unknown} do not apply to decoder {decoder!r}; its options: {defaults}")
    for name, value in options.items():
        default, low, high = known[name]
        integral = isinstance(default, int)
        if (
            isinstance(value, bool)
            or (integral and not isinstance(value, int))
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            kind = "an integer" if integral else "a number"
            raise ValueError(f"decoder_options.{name}: expected {kind} in [{low}, {high}], got {value!r}")
    return {**defaults, **options}


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

    @field_validator("path")
    @classmethod
    def _plain_path(cls, path: str) -> str:
        if not plain_path(path) or path == MANIFEST_NAME:
            raise ValueError(
                f"{path!r} is not a plain relative file name (at most {MAX_FILE_PARTS} '/'-separated parts of "
                "letters, digits, '.', '_', '-', none starting with '.' and not manifest.json)"
            )
        return path


class BundleManifest(BaseModel):
    """Everything the device needs to run a bundle without the cloud's code."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    model_name: str
    model_version: str
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    sources: list[SourceSpec]
    vector_dims: list[int] = Field(min_length=1)
    n: int = Field(ge=1, le=MAX_N)
    t: int = Field(ge=1, le=MAX_T)
    K: int = Field(ge=1)
    target_shares: list[float]
    embedding_version: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    files: list[BundleFile]
    decoder: str = Field("merge", description="how the device builds the list: a key of DECODERS")
    decoder_options: dict[str, float | int] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    notes: dict[str, str] = Field(default_factory=dict)

    @field_validator("created_at")
    @classmethod
    def _iso_date(cls, stamp: str) -> str:
        try:
            datetime.fromisoformat(stamp)
        except ValueError:
            raise ValueError(f"{stamp!r} is not an ISO 8601 date such as 2030-01-31T12:00:00+00:00") from None
        return stamp

    @field_validator("vector_dims")
    @classmethod
    def _dims(cls, dims: list[int]) -> list[int]:
        if not all(1 <= d <= MAX_VECTOR_DIM for d in dims):
            raise ValueError(f"{dims}: every vector width must be in 1..{MAX_VECTOR_DIM}")
        return dims

    @model_validator(mode="after")
    def _coherent(self) -> BundleManifest:
        m = len(self.sources)
        if len(self.vector_dims) != m or len(self.target_shares) != m:
            raise ValueError(
                f"sources: {m}, but vector_dims has {len(self.vector_dims)} and target_shares "
                f"{len(self.target_shares)} entries (one per source)"
            )
        if not self.K <= m * self.n:
            raise ValueError(f"K: {self.K} exposed slots, but m*n = {m}*{self.n} = {m * self.n} candidates")
        shares = self.target_shares
        if not all(math.isfinite(x) and x >= 0 for x in shares) or abs(sum(shares) - 1) > SHARE_TOLERANCE:
            raise ValueError(f"target_shares: {shares} must be finite, >= 0 and sum to 1")
        names = [f.path for f in self.files]
        if len(set(names)) != len(names):
            raise ValueError(f"files: {names} lists a path twice")
        return self

    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self.sources]

    def layout(self) -> TensorLayout:
        return TensorLayout(vector_dims=tuple(self.vector_dims), n=self.n, t=self.t)


FLOAT16_METRIC = "float16_vectors_max_abs_diff"
"""Manifest metric: the largest change of the model's outputs when its item vectors are rounded to float16
(the float16 wire form), measured at export on the parity cases like `parity_max_abs_diff`."""


def float16_allowed(manifest: BundleManifest, tolerance: float) -> bool:
    """Whether the bundle's measured float16 effect is within `tolerance` (False for a bundle without it)."""
    effect = manifest.metrics.get(FLOAT16_METRIC)
    return effect is not None and math.isfinite(effect) and effect <= tolerance
